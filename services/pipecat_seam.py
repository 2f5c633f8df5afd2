"""The one seam to Pipecat's internals.

Every place where we touch a Pipecat private attribute or method is a function
here, with why we need it. ``tests/test_pipecat_seam.py`` checks each one on a
real Pipecat object, so an upgrade that removes one fails loudly there, not
silently in a conversation.
"""

from __future__ import annotations

from typing import Any


def has_event_handler(obj: Any, name: str) -> bool:
    """Whether a Pipecat object (a transport, a service) declares the event ``name``.

    Why: ``event_handler(name)`` on an undeclared event raises, and transports declare
    different events (only Daily's has ``on_error``); Pipecat has no public way to ask.
    """
    return name in getattr(obj, "_event_handlers", {})
