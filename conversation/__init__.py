"""Conversation state: the records store, the callbacks outbox, the lifecycle and the
transcript. Depends on nothing else of ours."""
