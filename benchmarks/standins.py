"""Zero-latency stand-ins for the LLM and TTS, to isolate our own overhead.

- The LLM stand-in is ``tests.fake_openai.FakeOpenAI``: a loopback server
  speaking OpenAI's streaming chat-completions protocol, answering at once.
- :class:`StandinTTS` returns 0.3 s of a tone for every text, immediately.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np

from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService


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
