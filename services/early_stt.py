"""The early transcript: a segmented STT starts transcribing at a short pause, not at the VAD stop.

A segmented STT (local Whisper) transcribes a segment only when the VAD reports the end of
speech, which takes ``stop_secs`` of silence (0.4 s at ``medium`` patience, long enough that
a comma pause does not end the turn). The turn then waits for Whisper (~0.3-0.5 s on two
cores) after that. :class:`EarlyTranscriptMixin` starts transcribing the segment so far
when the user has been silent for :data:`EARLY_PAUSE_SECS`, while the VAD and the turn
logic keep their own timing:

- the user stays silent: the VAD stops, and the transcript that was started early (done,
  or nearly) is the segment's transcript: same audio but for a little more silence;
- the user goes on: the early transcript is dropped (its result is never pushed) and a new
  one starts at the next pause, of the whole segment.

A transcript is pushed only at the VAD stop, as before, so the turn logic, speculation
and barge-in see exactly what they saw; only the wait is shorter. The pause is read from
the user aggregator's own VAD analyzer (:class:`pipeline.turn_taking.PersonaVAD`), no
second VAD runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from services import pipecat_seam as seam

# Silence inside speech after which the segment so far is transcribed. Shorter than every
# patience level's VAD stop (0.2 / 0.4 / 0.6 s); a pause this short is common mid-sentence,
# so the work is often thrown away (a Whisper call's CPU) but never the result's meaning.
EARLY_PAUSE_SECS = 0.15


@dataclass
class _Early:
    speech: bytes  # the segment's audio when it was started (a prefix of the final segment)
    task: asyncio.Task
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class EarlyTranscriptMixin:
    """For a ``SegmentedSTTService`` subclass (before it in the bases): see the module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._early: _Early | None = None  # started at the current pause
        self._claimed: list[_Early] = []  # taken at a VAD stop, waiting for their segment
        self.early_used = 0  # segments whose transcript was started early (tests, logs)
        self.early_dropped = 0  # early transcripts thrown away because the user went on

    def follow_pauses(self, vad: Any) -> None:
        """Start early transcripts at the short pauses of ``vad`` (a ``PersonaVAD``)."""
        vad.add_pause_listener(self._on_pause)

    async def _on_pause(self, paused: bool) -> None:
        if not paused:  # the user went on: what was started is no longer the segment
            await self._drop_early()
            return
        if self._early is not None or not self.is_usable:
            return
        speech = seam.segment_so_far(self)
        if not speech:
            return
        self._early = _Early(speech, self.create_task(self._collect(speech), "early-transcript"))
        logger.debug(f"{self}: early transcript of {len(speech) / 32000:.2f}s started at a pause")

    async def _collect(self, speech: bytes) -> list:
        audio = speech + self._trailing_silence()
        return [frame async for frame in super().run_stt(audio)]  # type: ignore[misc]

    async def _drop_early(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            self.early_dropped += 1
            logger.debug(f"{self}: the user went on; early transcript dropped")
            await self.cancel_task(early.task)

    async def _handle_user_stopped_speaking(self, frame):  # Pipecat's hook (see pipecat_seam)
        if self._early is not None:
            self._claimed.append(self._early)
            self._early = None
        await super()._handle_user_stopped_speaking(frame)  # type: ignore[misc]

    async def run_stt(self, audio: bytes):
        claimed = None
        while self._claimed:
            candidate = self._claimed.pop(0)
            if audio.startswith(candidate.speech):
                claimed = candidate
                break
            await self.cancel_task(candidate.task)  # its segment was never queued
        if claimed is None:
            async for frame in super().run_stt(audio):  # type: ignore[misc]
                yield frame
            return
        self.early_used += 1
        logger.debug(f"{self}: the segment's transcript was started early "
                     f"({'done' if claimed.task.done() else 'running'})")
        try:
            frames = await claimed.task
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the early run failed: transcribe the segment as usual
            logger.warning(f"{self}: early transcript failed ({exc}); transcribing again")
            async for frame in super().run_stt(audio):  # type: ignore[misc]
                yield frame
            return
        for frame in frames:
            yield frame

    async def cancel(self, frame):
        await self._drop_early()
        for early in self._claimed:
            await self.cancel_task(early.task)
        self._claimed = []
        await super().cancel(frame)  # type: ignore[misc]

    async def cleanup(self):
        await self._drop_early()
        await super().cleanup()  # type: ignore[misc]
