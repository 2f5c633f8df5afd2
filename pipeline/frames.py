"""Frames of our own that travel the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import ControlFrame


@dataclass
class ReplyRevisedFrame(ControlFrame):
    """The reply in progress is ``text`` after all: a guardrail replaced it with a refusal,
    or cut it there (``pipeline/guardrails.py``). The interactions observer tells
    ``conversation.utterance`` this text, not the LLM's."""

    text: str = ""
