"""The interactions observer: pipeline frames -> tracker observations -> events sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from ..frames import ReplyRevisedFrame
from .tracker import Events

if TYPE_CHECKING:
    from .processor import InteractionsProcessor


class InteractionsObserver(BaseObserver):
    """Tells the processor's tracker what the pipeline did, and sends the events it answers."""

    def __init__(self, processor: InteractionsProcessor, **kwargs):
        super().__init__(**kwargs)
        self._processor = processor

    async def on_push_frame(self, data: FramePushed):
        events = self.observe(data)
        if events:
            await self._processor.send(*events)

    def observe(self, data: FramePushed) -> Events:
        """The events one pushed frame causes (it updates the tracker)."""
        if data.direction != FrameDirection.DOWNSTREAM:
            return []
        frame, tracker = data.frame, self._processor.tracker
        if isinstance(frame, TTSTextFrame):
            # What was *spoken*: the output transport releases text in step with the audio.
            if isinstance(data.source, BaseOutputTransport):
                return tracker.replica_spoke(frame.text)
            return []
        if not data.first_push:
            return []
        if isinstance(frame, UserStartedSpeakingFrame):
            return tracker.user_started()
        if isinstance(frame, UserStoppedSpeakingFrame):
            return tracker.user_stopped()
        if isinstance(frame, TranscriptionFrame):
            return tracker.user_partial(frame.text, final=True)
        if isinstance(frame, InterimTranscriptionFrame):
            return tracker.user_partial(frame.text, final=False)
        if isinstance(frame, LLMFullResponseStartFrame):
            return tracker.reply_started()
        if isinstance(frame, ReplyRevisedFrame):
            return tracker.reply_revised(frame.text)
        if isinstance(frame, LLMTextFrame):
            return tracker.reply_text(frame.text)
        if isinstance(frame, TTSSpeakFrame) and data.source is not self._processor:
            return tracker.spoken_text(frame.text)  # the custom greeting (echo: the processor's)
        if isinstance(frame, LLMFullResponseEndFrame):
            return tracker.reply_ended()
        if isinstance(frame, BotStartedSpeakingFrame):
            return tracker.replica_started()
        if isinstance(frame, InterruptionFrame):
            return tracker.interrupted()
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._processor.reply_done()
            return tracker.replica_stopped()
        return []
