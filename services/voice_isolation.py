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
LOOKAHEAD_FRAMES = 5  # 50 ms kept before it (onsets): the filter's only added delay


def input_filter(flow: FlowOptions) -> Any | None:
    """A fresh audio filter for one transport input, or None (``voice_isolation: off``)."""
    if flow.voice_isolation != "near":
        return None
    return speech_gated_rnnoise()


def speech_gated_rnnoise(**kwargs: Any) -> Any:
    """Pipecat's ``RNNoiseFilter`` that passes speech unchanged and denoises only the rest."""
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

    class SpeechGatedRNNoiseFilter(RNNoiseFilter):
        """RNNoise where it helps: noise-only stretches denoised, speech left as it came.

        Frames are 10 ms at 48 kHz, as RNNoise works; the raw frame is taken from the
        same resampled input, so both paths have the same latency. A frame is "speech"
        once ONSET_FRAMES in a row pass SPEECH_PROB (RNNoise's speech probability), from
        LOOKAHEAD_FRAMES before them (the output is held back by that many) until
        HANGOVER_FRAMES after the last frame that passes. On steady noise RNNoise's
        probability is mostly 0.1-0.4 with single frames above 0.5, so the gate stays shut.
        """

        async def start(self, sample_rate: int):
            await super().start(sample_rate)
            self._pending: list[tuple[float, np.ndarray, np.ndarray]] = []
            self._since_speech = HANGOVER_FRAMES + 1
            self._run = 0
            self._frames = 0
            self._raw_buffer = np.zeros(0, dtype=np.int16)

        async def filter(self, audio: bytes) -> bytes:
            if not self._rnnoise_ready or not self._filtering or self._rnnoise is None:
                return audio
            in_audio = audio
            if self._sample_rate != 48000 and self._resampler_in:
                in_audio = await self._resampler_in.resample(audio, self._sample_rate, 48000)
            if not in_audio:
                return b""
            samples = np.frombuffer(in_audio, dtype=np.int16)
            self._raw_buffer = np.concatenate([self._raw_buffer, samples])
            out: list[np.ndarray] = []
            for prob, denoised in self._rnnoise.denoise_chunk(samples):
                frame = np.asarray(denoised).squeeze()
                if np.issubdtype(frame.dtype, np.floating):
                    frame = (frame * 32767).astype(np.int16)
                raw, self._raw_buffer = self._raw_buffer[:frame.size], self._raw_buffer[frame.size:]
                out += self._push(float(np.max(prob)), raw.astype(np.int16), frame.astype(np.int16))
            if not out:
                return b""
            pcm = np.concatenate(out).tobytes()
            if self._sample_rate != 48000 and self._resampler_out:
                return await self._resampler_out.resample(pcm, 48000, self._sample_rate)
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
            keep_raw = self._since_speech <= HANGOVER_FRAMES
            self._pending.append((1.0 if keep_raw else 0.0, raw, denoised))
            released = []
            while len(self._pending) > LOOKAHEAD_FRAMES:
                use_raw, r, d = self._pending.pop(0)
                released.append(r if use_raw and r.size == d.size else d)
            return released

    return SpeechGatedRNNoiseFilter(**kwargs)
