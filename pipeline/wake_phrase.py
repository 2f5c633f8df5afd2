"""``conversational_flow.wake_phrase``: silent until the phrase is heard, yet hearing everything.

Sits between the user aggregator and the LLM. Every user turn is still written
to the context and the transcript (so the persona has the whole conversation
when it does answer); only the request for a reply is held back while asleep.
A turn containing the phrase wakes the persona (``system.wake_phrase_detected``
is broadcast) and it answers; it stays awake for follow-ups until
``awake_secs`` pass without a user turn, then sleeps again. A
``conversation.respond`` from the app is always answered.
"""

from __future__ import annotations

import re
import time

from loguru import logger

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

AWAKE_SECS = 30.0


def phrase_pattern(phrase: str) -> re.Pattern:
    """Case- and punctuation-insensitive match of the phrase's words ("Hey, Ava!" ~ "hey ava")."""
    words = [re.escape(w) for w in re.findall(r"[\w']+", phrase)]
    return re.compile(r"\b" + r"[\W_]*".join(words) + r"\b", re.IGNORECASE)


def _last_user_text(context) -> str:
    for message in reversed(context.get_messages()):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class WakePhraseGate(FrameProcessor):
    """Passes a reply request to the LLM only when the persona is awake.

    Event handlers available:

    - on_wake(gate, text): the wake phrase was heard in a user turn.
    """

    def __init__(self, phrase: str, *, awake_secs: float = AWAKE_SECS, **kwargs):
        super().__init__(name="wake-phrase-gate", **kwargs)
        self.phrase = phrase
        self._pattern = phrase_pattern(phrase)
        self._awake_secs = awake_secs
        self._awake_until = 0.0
        self._allow_next = False
        self._register_event_handler("on_wake")

    @property
    def awake(self) -> bool:
        """True while follow-ups are answered without the phrase."""
        return time.monotonic() < self._awake_until

    def allow_next(self) -> None:
        """Answer the next reply request regardless (an app's conversation.respond)."""
        self._allow_next = True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            if not await self._admit(frame):
                return
        await self.push_frame(frame, direction)

    async def _admit(self, frame: LLMContextFrame) -> bool:
        if self._allow_next:
            self._allow_next = False
            return True
        text = _last_user_text(frame.context)
        now = time.monotonic()
        if self._pattern.search(text):
            self._awake_until = now + self._awake_secs
            logger.info(f"Wake phrase {self.phrase!r} heard")
            await self._call_event_handler("on_wake", text)
            return True
        if now < self._awake_until:
            self._awake_until = now + self._awake_secs
            return True
        logger.debug(f"Asleep (waiting for {self.phrase!r}): not replying to {text!r}")
        return False
