"""Errors of a conversation that cannot run as asked (part of the :class:`AgentError` tree)."""

from __future__ import annotations

from config.errors import AgentError


class SessionError(AgentError):
    """The conversation could not run (e.g. the bot could not join its room)."""


class ModeError(SessionError):
    """The persona cannot run in the requested mode (e.g. echo mode in ``--text``)."""


class OneShotError(SessionError):
    """The one-shot run did not produce a reply."""
