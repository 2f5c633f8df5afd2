"""The knowledge base (documents, their index, retrieval) and memories (see README)."""
