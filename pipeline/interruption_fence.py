"""Spoken text from before an interruption never joins the next reply.

An ``InterruptionFrame`` is a system frame: in a processor's input queue it
overtakes the data frames queued before it. A ``TTSTextFrame`` of the reply
being interrupted that the output transport had already pushed can therefore
reach the assistant aggregator *after* the interruption; the aggregator has
just closed the interrupted turn, so it adds the stale text to the next reply
(the transcript and the context then read "Hello and welcome! Paris is the
capital of France."). This processor sits between the output transport and the
assistant aggregator and drops ``TTSTextFrame`` s that arrive after an
interruption until the next reply's audio starts (``TTSStartedFrame``).
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InterruptionFrame, TTSStartedFrame, TTSTextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class InterruptionFence(FrameProcessor):
    """Drops the interrupted reply's late text (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._fenced = False
        self.dropped = 0  # late text frames dropped so far

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            if isinstance(frame, InterruptionFrame):
                self._fenced = True
            elif isinstance(frame, TTSStartedFrame):
                self._fenced = False
            elif self._fenced and isinstance(frame, TTSTextFrame):
                self.dropped += 1
                return
        await self.push_frame(frame, direction)
