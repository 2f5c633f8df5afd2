"""Zero-latency stand-ins for the cloud services, to isolate our own overhead.

- The LLM stand-in is ``tests.fake_openai.FakeOpenAI``: a loopback server
  speaking OpenAI's streaming chat-completions protocol, answering at once.
- :class:`StandinTTS` returns 0.3 s of a tone for every text, immediately.
- :class:`StandinSTT` (for the concurrency and memory runs, where a cloud STT
  would not use this machine's CPU) transcribes each speech segment at once
  as a fixed text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601


class StandinTTS(TTSService):
    """A TTS that answers instantly with a short tone."""

    def __init__(self, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        rate = self.sample_rate
        t = np.arange(int(rate * 0.3)) / rate
        tone = (np.sin(2 * np.pi * 220 * t) * 6000).astype(np.int16).tobytes()
        await self.start_ttfb_metrics()
        await self.stop_ttfb_metrics()
        yield TTSAudioRawFrame(audio=tone, sample_rate=rate, num_channels=1, context_id=context_id)


class StandinSTT(SegmentedSTTService):
    """An STT that 'hears' ``text`` for every speech segment, instantly."""

    def __init__(self, text: str, **kwargs):
        super().__init__(settings=STTSettings(model=None, language=None), **kwargs)
        self._text = text

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield TranscriptionFrame(self._text, "user", time_now_iso8601(), finalized=True)
