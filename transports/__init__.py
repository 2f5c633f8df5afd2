"""Transports: the file transport (one-shot, tests, benchmarks), Daily rooms, and the
development runner's transports (local page, Daily)."""
