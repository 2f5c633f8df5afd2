"""A Pipecat transport that plays a WAV file in as the user's microphone and records the bot.

It also carries app messages both ways (``receive_message`` in, with the sender's
participant id as Daily gives it; ``sent_messages`` out, and to ``message_listeners``),
like a Daily room's data channel, and can report a participant joining and leaving
(``client_connected`` / ``client_disconnected``: the ``on_client_connected`` /
``on_client_disconnected`` events of Pipecat's Daily and WebRTC transports).

Used by the one-shot ``--audio-in/--audio-out`` mode and by the end-to-end
tests. The input is streamed in real time (20 ms frames on a monotonic
schedule), followed by silence until :meth:`FileTransport.finish` is called;
the output is paced in real time too, as a sound card or WebRTC track would
consume it, so turn-taking and interruptions behave as in a live call.
"""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from config.errors import AgentError
from config.files import input_problem, read_problem

FRAME_SECS = 0.02


@dataclass
class FileInputTransportMessageFrame(InputTransportMessageFrame):
    """An app message from a participant; ``participant_id`` is who sent it (as Daily's is)."""

    participant_id: str | None = None


class AudioFileError(AgentError):
    """The input audio file cannot be used."""


def read_wav_mono16(path: str | Path, target_rate: int) -> bytes:
    """Read a PCM WAV, mix to mono and resample to ``target_rate`` 16-bit PCM."""
    path = Path(path)
    problem = input_problem(path)  # a FIFO would block wave.open, a device never end
    if problem:
        raise AudioFileError(f"{path}: {problem}")
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioFileError(f"{path}: file not found") from None
    except (wave.Error, EOFError) as exc:
        raise AudioFileError(f"{path}: not a PCM WAV file ({exc})") from None
    except OSError as exc:
        raise AudioFileError(f"{path}: {read_problem(exc)}") from None
    if width == 2:
        samples = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype=np.int32).astype(np.float32) / 2147483648.0
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise AudioFileError(f"{path}: unsupported sample width {width * 8} bits")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        raise AudioFileError(f"{path}: contains no audio")
    if rate != target_rate:
        import soxr

        samples = soxr.resample(samples, rate, target_rate)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def write_wav_mono16(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write 16-bit mono PCM to a WAV file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def last_speech_secs(pcm: bytes, sample_rate: int, threshold: float = 0.02) -> float | None:
    """Time (s) of the end of the last 20 ms window louder than ``threshold`` RMS."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    window = int(sample_rate * FRAME_SECS)
    if samples.size < window:
        return None
    frames = samples[: samples.size // window * window].reshape(-1, window)
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > threshold)[0]
    if loud.size == 0:
        return None
    return float((loud[-1] + 1) * FRAME_SECS)


@dataclass
class FileTransportStats:
    """Wall-clock marks of one run (``time.monotonic`` seconds)."""

    input_started: float | None = None
    input_finished: float | None = None  # the file, not the trailing silence
    first_output_audio: float | None = None
    output_audio_after: dict[float, float] = field(default_factory=dict)


class FileInputTransport(BaseInputTransport):
    """Streams the file, then silence, as ``InputAudioRawFrame`` in real time."""

    def __init__(self, transport: FileTransport, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._owner = transport
        self._feed_task: asyncio.Task | None = None

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._feed_task is None:
            self._feed_task = self.create_task(self._feed(), "file-input-feed")

    async def stop(self, frame):
        await self._stop_feed()
        await super().stop(frame)

    async def cancel(self, frame):
        await self._stop_feed()
        await super().cancel(frame)

    async def _stop_feed(self):
        if self._feed_task:
            await self.cancel_task(self._feed_task)
            self._feed_task = None

    async def _feed(self):
        owner = self._owner
        rate = self.sample_rate
        pcm = owner.load(rate)
        step = int(rate * FRAME_SECS) * 2
        silence = b"\x00" * step
        start = time.monotonic()
        owner.stats.input_started = start
        index = 0
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset : offset + step].ljust(step, b"\x00")
            await self._send(chunk, rate, start + index * FRAME_SECS)
            index += 1
        owner.stats.input_finished = time.monotonic()
        owner.question_sent.set()
        while not owner.finished.is_set():
            await self._send(silence, rate, start + index * FRAME_SECS)
            index += 1

    async def _send(self, chunk: bytes, rate: int, due: float):
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.push_audio_frame(InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1))


class FileOutputTransport(BaseOutputTransport):
    """Collects the bot's audio, consuming it in real time."""

    def __init__(self, transport: FileTransport, params: TransportParams, **kwargs):
        super().__init__(params, **kwargs)
        self._owner = transport
        self._clock: float | None = None

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def send_message(self, frame) -> None:
        """App messages (protocol events) the bot broadcasts, kept in order."""
        self._owner.sent_messages.append(frame.message)
        for listener in list(self._owner.message_listeners):
            listener(frame.message)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        owner = self._owner
        owner.output_rate = frame.sample_rate
        now = time.monotonic()
        if frame.audio.strip(b"\x00") and owner.stats.first_output_audio is None:
            owner.stats.first_output_audio = now
        owner.recorded.extend(frame.audio)
        duration = len(frame.audio) / 2 / frame.sample_rate
        if self._clock is None or self._clock < now:
            self._clock = now
        self._clock += duration
        delay = self._clock - time.monotonic() - duration  # keep one frame of lead
        if delay > 0:
            await asyncio.sleep(delay)
        return True


class FileTransport(BaseTransport):
    """WAV file in, recorded audio out."""

    def __init__(
        self, audio_in: str | Path, params: TransportParams | None = None, *, audio_in_filter=None
    ):
        super().__init__()
        self._path = Path(audio_in)
        self._params = params or TransportParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_in_filter=audio_in_filter
        )
        self._input: FileInputTransport | None = None
        self._output: FileOutputTransport | None = None
        self._pcm: bytes | None = None
        self.stats = FileTransportStats()
        self.recorded = bytearray()
        self.output_rate = 24000
        self.input_rate = 16000
        self.question_sent = asyncio.Event()
        self.finished = asyncio.Event()
        self.sent_messages: list[dict] = []
        self.received_messages: list[tuple[object, str | None]] = []  # (message, sender)
        self.message_listeners: list = []  # called with each sent message, in order
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def load(self, sample_rate: int) -> bytes:
        """The input file as mono 16-bit PCM at ``sample_rate`` (validated once)."""
        if self._pcm is None:
            self._pcm = read_wav_mono16(self._path, sample_rate)
            self.input_rate = sample_rate
        return self._pcm

    def input(self) -> FileInputTransport:
        if self._input is None:
            self._input = FileInputTransport(self, self._params, name="file-input")
        return self._input

    def output(self) -> FileOutputTransport:  # type: ignore[override]
        if self._output is None:
            self._output = FileOutputTransport(self, self._params, name="file-output")
        return self._output

    async def receive_message(self, message, sender: str | None = None) -> None:
        """An app message from a participant (as a Daily or data-channel message arrives)."""
        self.received_messages.append((message, sender))
        await self.input().broadcast_frame(FileInputTransportMessageFrame, message=message,
                                           participant_id=sender)

    async def client_connected(self, client: object = None) -> None:
        """A participant joined (``on_client_connected``, as a Daily room reports it)."""
        await self._call_event_handler("on_client_connected", client)

    async def client_disconnected(self, client: object = None) -> None:
        """A participant left (``on_client_disconnected``)."""
        await self._call_event_handler("on_client_disconnected", client)

    def finish(self) -> None:
        """Stop feeding silence."""
        self.finished.set()
