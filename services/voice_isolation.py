"""``conversational_flow.voice_isolation`` -> a noise-suppression filter on participant audio.

``near`` (Tavus's default) runs RNNoise (``pipecat-ai[rnnoise]``: the pyrnnoise
wheel ships librnnoise and its model, so it works offline) on the transport
input, before VAD and STT, *gated by its own speech probability*: where RNNoise
hears speech the participant's audio passes unchanged, in the pauses (noise
only) its denoised output goes on. ``off`` sends raw audio down the pipeline.
Tavus's own model is tuned for a speaker within a metre of the microphone;
RNNoise is a general speech denoiser, the closest local equivalent.

Why gated: measured with benchmarks/page_wer.py (README, "Hearing you
well"), Pipecat's ``RNNoiseFilter`` denoising the speech itself made Whisper
tiny.en hear far worse: on the file path 16 % -> 28-39 % word error rate on
varied synthetic voices, 6 % -> 20 % on real (LibriVox) recordings under noise,
telephone band and low level (quiet and telephone lines lost whole). Whisper
copes with noisy speech better than with RNNoise's artifacts. Gating keeps what
RNNoise does well (silencing noise between words and turns) without touching
the words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from config.options import FlowOptions

SPEECH_PROB = 0.5  # RNNoise's speech probability of a 10 ms frame that counts as speech
ONSET_FRAMES = 3  # speech starts with this many such frames in a row (steady noise rarely has 2)
HANGOVER_FRAMES = 40  # 400 ms of raw audio kept after the last speech frame (tails, short pauses)
WARMUP_FRAMES = 10  # RNNoise's first 100 ms read high on anything: no onset there
# Frames held back before release. 0: each frame goes on at once, raw when it may be speech
# (RNNoise's probability above SPEECH_PROB, or the gate open), denoised otherwise. A hold of
# 5 frames (50 ms, so that an onset was raw before it was recognized) delayed every VAD stop,
# hence every turn, by those 50 ms (issue 18); a lone noise frame passing raw costs nothing.
LOOKAHEAD_FRAMES = 0


def input_filter(flow: FlowOptions) -> Any | None:
    """A fresh audio filter for one transport input, or None (``voice_isolation: off``)."""
    if flow.voice_isolation != "near":
        return None
    return speech_gated_rnnoise()


def speech_gated_rnnoise(**kwargs: Any) -> Any:
    """A fresh :class:`SpeechGatedRNNoiseFilter` (one per transport input)."""
    return _filter_class()(**kwargs)


_CLASS: type | None = None


def _filter_class() -> type:
    """The filter class, defined once (Pipecat is imported on first use, not at import)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
    from pipecat.frames.frames import FilterEnableFrame
    from pyrnnoise.rnnoise import FRAME_SIZE, SAMPLE_RATE, create, destroy, process_mono_frame

    class SpeechGatedRNNoiseFilter(BaseAudioFilter):
        """RNNoise where it helps: noise-only stretches denoised, speech left as it came.

        Frames are 10 ms at 48 kHz, as RNNoise works; the raw frame is the very input
        frame RNNoise denoised, so both paths have the same latency. The gate opens once
        ONSET_FRAMES in a row pass SPEECH_PROB (RNNoise's speech probability) and stays open
        HANGOVER_FRAMES after the last frame that passes; a frame goes on raw while the gate
        is open and while a run that may open it is under way (the onset itself), denoised
        otherwise, with no hold (``LOOKAHEAD_FRAMES``). On steady noise RNNoise's
        probability is mostly 0.1-0.4 with single frames above 0.5, so the gate stays shut.

        librnnoise is called directly (pyrnnoise's ``create`` / ``process_mono_frame`` /
        ``destroy``) rather than through ``pyrnnoise.RNNoise``: that class re-frames audio
        through an FFmpeg filter graph (audiolab) whose native graph and worker thread
        outlived every conversation (benchmarks/soak.py: one thread and megabytes per
        session). Here the framing is a numpy buffer and the state is destroyed at stop.
        """

        def __init__(self, resampler_quality: str = "QQ") -> None:
            self._quality = resampler_quality
            self._filtering = True
            self._sample_rate = 0
            self._state = None
            self._resampler_in = None
            self._resampler_out = None
            self._reset()

        def _reset(self) -> None:
            self._buffer = np.zeros(0, dtype=np.int16)
            self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []
            self._since_speech = HANGOVER_FRAMES + 1
            self._run = 0
            self._frames = 0

        async def start(self, sample_rate: int):
            from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler

            self._sample_rate = sample_rate
            self._reset()
            self._state = create()
            if sample_rate != SAMPLE_RATE:
                self._resampler_in = SOXRStreamAudioResampler(quality=self._quality)
                self._resampler_out = SOXRStreamAudioResampler(quality=self._quality)

        async def stop(self):
            state, self._state = self._state, None
            if state is not None:
                destroy(state)
            self._resampler_in = self._resampler_out = None
            self._reset()

        async def process_frame(self, frame):
            if isinstance(frame, FilterEnableFrame):
                self._filtering = frame.enable

        async def filter(self, audio: bytes) -> bytes:
            if not self._filtering or self._state is None:
                return audio
            in_audio = audio
            if self._resampler_in is not None:
                in_audio = await self._resampler_in.resample(audio, self._sample_rate, SAMPLE_RATE)
            if not in_audio:
                return b""
            self._buffer = np.concatenate([self._buffer, np.frombuffer(in_audio, dtype=np.int16)])
            whole = len(self._buffer) // FRAME_SIZE * FRAME_SIZE
            frames, self._buffer = self._buffer[:whole], self._buffer[whole:]
            out: list[np.ndarray] = []
            for start in range(0, whole, FRAME_SIZE):
                raw = frames[start:start + FRAME_SIZE]
                denoised, prob = process_mono_frame(self._state, raw)
                out += self._push(float(prob), raw, denoised)
            if not out:
                return b""
            pcm = np.concatenate(out).tobytes()
            if self._resampler_out is not None:
                return await self._resampler_out.resample(pcm, SAMPLE_RATE, self._sample_rate)
            return pcm

        def _push(self, prob: float, raw: np.ndarray, denoised: np.ndarray) -> list[np.ndarray]:
            """Queue one frame; release the frame LOOKAHEAD_FRAMES back, raw or denoised."""
            self._frames += 1
            self._run = self._run + 1 if prob >= SPEECH_PROB and self._frames > WARMUP_FRAMES else 0
            open_ = self._since_speech <= HANGOVER_FRAMES
            speech = self._run >= ONSET_FRAMES or (open_ and self._run > 0)
            if speech:  # frames still queued before this one are the onset: raw
                self._pending = [(1.0, r, d) for _, r, d in self._pending]
                self._since_speech = 0
            else:
                self._since_speech += 1
            keep_raw = self._since_speech <= HANGOVER_FRAMES or self._run > 0
            self._pending.append((1.0 if keep_raw else 0.0, raw, denoised))
            released = []
            while len(self._pending) > LOOKAHEAD_FRAMES:
                use_raw, r, d = self._pending.pop(0)
                released.append(r if use_raw else d)
            return released

    _CLASS = SpeechGatedRNNoiseFilter
    return _CLASS
