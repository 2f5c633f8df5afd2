"""Ready personas (JSON in the Tavus schema): default.json and the stock use cases."""
