"""One conversation from start to end: :class:`session.owner.ConversationSession` and the
run modes that adapt it (local page, Daily, Tavus transport, text, one-shot)."""
