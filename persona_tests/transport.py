"""The scripted user's side of the call: clips spoken at chosen moments, both sides recorded.

A :class:`~transports.file.FileTransport` whose microphone is a queue: it sends
silence in real time (20 ms frames) until a clip is queued with :meth:`ScriptedTransport.say`,
then the clip, then silence again, so the pipeline hears a live caller. Everything it
sends is kept (``user_audio``, from t=0); the bot's audio is placed where it was played
(``bot_audio``), so both sides line up on one timeline. ``t0`` is the monotonic time the
microphone opened; :meth:`now` is seconds since then.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pipecat.frames.frames import OutputAudioRawFrame

from persona_tests.voices import resample
from transports.file import FRAME_SECS, FileInputTransport, FileOutputTransport, FileTransport

SPEECH_GAP_SECS = 0.35  # bot audio quieter than this long joins one speech segment
CLIP_RATE = 16000  # what ScriptedTransport.say takes (persona_tests.voices.RATE)


@dataclass
class Clip:
    """A queued utterance; ``started``/``ended`` are timeline seconds once played."""

    pcm: bytes
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float | None = None
    ended: float | None = None


class _ScriptedInput(FileInputTransport):
    async def _feed(self):
        owner: ScriptedTransport = self._owner  # type: ignore[assignment]
        rate = self.sample_rate
        owner.input_rate = rate
        step = int(rate * FRAME_SECS) * 2
        silence = b"\x00" * step
        start = time.monotonic()
        owner.t0 = start
        owner.stats.input_started = start
        index = 0
        clip: Clip | None = None
        offset = 0
        while not owner.finished.is_set():
            if clip is None and owner.queue:
                clip, offset = owner.queue.pop(0), 0
                clip.started = index * FRAME_SECS
                if rate != CLIP_RATE:  # the pipeline's input rate is not the voices' own
                    clip.pcm = resample(clip.pcm, CLIP_RATE, rate)
            if clip is not None:
                chunk = clip.pcm[offset:offset + step].ljust(step, b"\x00")
                offset += step
            else:
                chunk = silence
            owner.user_audio.extend(chunk)
            await self._send(chunk, rate, start + index * FRAME_SECS)
            index += 1
            if clip is not None and offset >= len(clip.pcm):
                clip.ended = index * FRAME_SECS
                clip.done.set()
                clip = None


class _ScriptedOutput(FileOutputTransport):
    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        owner: ScriptedTransport = self._owner  # type: ignore[assignment]
        written = await super().write_audio_frame(frame)
        duration = len(frame.audio) / 2 / frame.sample_rate
        played = (self._clock or time.monotonic()) - duration  # where this frame is heard
        owner.place_bot_audio(frame.audio, frame.sample_rate, played - owner.t0)
        return written


class ScriptedTransport(FileTransport):
    """A caller who speaks queued clips, with both sides recorded on one clock."""

    def __init__(self, *, audio_in_filter=None):
        super().__init__("<scripted>", audio_in_filter=audio_in_filter)
        self.t0 = time.monotonic()
        self.queue: list[Clip] = []
        self.user_audio = bytearray()
        self.bot_audio = bytearray()
        self.bot_rate = 24000
        self.bot_segments: list[list[float]] = []  # [start, end] of the bot's audible audio

    def input(self) -> FileInputTransport:
        if self._input is None:
            self._input = _ScriptedInput(self, self._params, name="scripted-input")
        return self._input

    def output(self) -> FileOutputTransport:  # type: ignore[override]
        if self._output is None:
            self._output = _ScriptedOutput(self, self._params, name="scripted-output")
        return self._output

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, pcm: bytes) -> Clip:
        """Queue ``pcm`` (16-bit mono at 16 kHz) to be spoken after what is queued."""
        clip = Clip(pcm)
        self.queue.append(clip)
        return clip

    def place_bot_audio(self, pcm: bytes, rate: int, at: float) -> None:
        """Put the bot's audio at ``at`` seconds on the timeline (silence before it)."""
        self.bot_rate = rate
        start = max(0, int(at * rate)) * 2
        if len(self.bot_audio) < start:
            self.bot_audio.extend(b"\x00" * (start - len(self.bot_audio)))
        self.bot_audio[start:start + len(pcm)] = pcm
        if pcm.strip(b"\x00"):
            end = at + len(pcm) / 2 / rate
            if self.bot_segments and at - self.bot_segments[-1][1] <= SPEECH_GAP_SECS:
                self.bot_segments[-1][1] = max(self.bot_segments[-1][1], end)
            else:
                self.bot_segments.append([at, end])

    def first_bot_audio_after(self, t: float) -> float | None:
        """When the bot was first heard at or after ``t`` (timeline seconds)."""
        for start, end in self.bot_segments:
            if start >= t:
                return start
            if end > t:  # already speaking at t: not an answer to what came at t
                continue
        return None

    def bot_speaking_at(self, t: float) -> bool:
        return any(start <= t <= end for start, end in self.bot_segments)

    def load(self, sample_rate: int) -> bytes:  # no file behind it
        self.input_rate = sample_rate
        return b""
