"""No turn goes unanswered in silence: an LLM reply that failed or came back empty is reported.

:class:`ReplyGuard` sits right after the LLM. At each ``LLMFullResponseEndFrame`` it looks at
what the response carried: its text, and what our LLM services put in the end frame's
metadata (``services/llm.py``): the error of a completion that failed (``llm_error``: a
connection refused by a dead llama.cpp server, an HTTP error, a timeout), whether an
interruption cancelled it (``llm_cancelled``), and whether it called a tool (``tool_calls``,
or ``finish_reason == "tool_calls"``; the answer comes after the tool's result).

A response that failed, or that ended with no text and no tool call, and was not
interrupted:

- is logged at WARNING, with the reason (the error text was scrubbed of secrets);
- is reported to the room through ``on_failure(reason)``: the session sends a
  ``system.error`` event carrying the turn's ``inference_id``;
- in a voice conversation, gets ``apology`` as its text, pushed before the end frame like
  any reply text: the sentence cut, the TTS, the output, the context and the transcript
  take it as they take the LLM's own words, so the user hears it and the next turn starts
  from a conversation that said something.

(An interrupted response is the user's doing, not a failure: nothing is said or reported.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

# Keys services/llm.py sets in LLMFullResponseEndFrame.metadata.
FINISH_REASON = "finish_reason"
LLM_ERROR = "llm_error"
LLM_CANCELLED = "llm_cancelled"
TOOL_CALLS = "tool_calls"

APOLOGY = "Sorry, I lost my train of thought. Could you say that again?"


class ReplyGuard(FrameProcessor):
    """Reports a failed or empty LLM response and, given an ``apology``, says it instead."""

    def __init__(self, *, apology: str | None = APOLOGY,
                 on_failure: Callable[[str], Awaitable[None]] | None = None, **kwargs):
        super().__init__(name="reply-guard", **kwargs)
        self._apology = apology
        self._on_failure = on_failure
        self._text = ""
        self._interrupted = False
        self.failures: list[str] = []  # the reasons so far, for tests and logs

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._text, self._interrupted = "", False
            elif isinstance(frame, LLMTextFrame):
                self._text += frame.text
            elif isinstance(frame, InterruptionFrame):
                self._interrupted = True
            elif isinstance(frame, LLMFullResponseEndFrame):
                await self._response_ended(frame.metadata or {})
        await self.push_frame(frame, direction)

    @staticmethod
    def failure(text: str, metadata: dict, interrupted: bool = False) -> str | None:
        """Why a response with this text and end-frame metadata is no answer (None: it is one)."""
        if interrupted or metadata.get(LLM_CANCELLED):
            return None
        error = metadata.get(LLM_ERROR)
        if error:
            return f"the LLM request failed ({error})"
        if text.strip() or metadata.get(TOOL_CALLS) or metadata.get(FINISH_REASON) == "tool_calls":
            return None
        return f"the LLM gave an empty answer (finish_reason {metadata.get(FINISH_REASON)})"

    async def _response_ended(self, metadata: dict) -> None:
        reason = self.failure(self._text, metadata, self._interrupted)
        text, self._text = self._text, ""
        if reason is None:
            return
        self.failures.append(reason)
        said = f"; said instead: {self._apology!r}" if self._apology else ""
        logger.warning(f"No reply to this turn: {reason}{said}")
        if self._on_failure is not None:
            try:
                await self._on_failure(reason)
            except Exception as exc:  # noqa: BLE001 - reporting must not cost the apology
                logger.exception(f"Reporting a failed reply failed: {exc}")
        if self._apology:
            space = " " if text and not text[-1].isspace() else ""  # after words cut short
            await self.push_frame(LLMTextFrame(space + self._apology))
