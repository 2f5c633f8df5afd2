"""``conversational_flow.idle_engagement``: the replica breaks a long silence, in persona.

Pipecat's user-idle timer (in the user aggregator) starts when the replica
stops speaking and is cancelled when anyone speaks; it never fires during a
user turn. When it fires, the LLM is asked to re-engage in one short, in-
character line. After ``MAX_ATTEMPTS`` unanswered attempts the replica stays
quiet until the user speaks again.

| idle_engagement | silence before re-engaging |
| --- | --- |
| off (default) | never |
| patient | 15 s |
| eager | 7 s |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger

IDLE_SECS = {"patient": 15.0, "eager": 7.0}
MAX_ATTEMPTS = 3
INSTRUCTION = (
    "The user has been silent for a while. Re-engage them in character with one short, "
    "natural line: check in, ask a brief question, or offer to continue. Do not repeat "
    "yourself word for word."
)


def idle_timeout(level: str) -> float:
    """Seconds of silence before re-engaging (0 = off)."""
    return IDLE_SECS.get(level, 0.0)


class IdleEngagement:
    """Counts unanswered re-engagements and asks the LLM for the next one."""

    def __init__(self, level: str, *, allowed: Callable[[], bool] | None = None):
        self.level = level
        self.attempts = 0
        self._allowed = allowed or (lambda: True)

    def attach(self, user_aggregator: Any) -> None:
        """Listen to the aggregator's idle and turn events."""

        @user_aggregator.event_handler("on_user_turn_idle")
        async def _on_idle(aggregator):
            await self._on_idle(aggregator)

        @user_aggregator.event_handler("on_user_turn_started")
        async def _on_user(_aggregator, *args):
            self.attempts = 0

    async def _on_idle(self, aggregator: Any) -> None:
        if self.attempts >= MAX_ATTEMPTS:
            logger.debug("Idle engagement: no answer after the last attempts; staying quiet")
            return
        if not self._allowed():
            return
        self.attempts += 1
        logger.info(f"Idle engagement ({self.level}): attempt {self.attempts}/{MAX_ATTEMPTS}")
        aggregator.add_messages([{"role": "developer", "content": INSTRUCTION}])
        await aggregator.push_context_frame()
