"""The early transcript (services/early_stt.py): a segmented STT starts at a short pause and
pushes only at the VAD stop; a resumed utterance throws the early run away."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from pipecat.frames.frames import (
    SystemFrame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.tests.utils import SleepFrame, run_test

from services.early_stt import EarlyTranscriptMixin
from tests.harness import Harness
from tests.speech import write_speech_wav


class CountingSTT(SegmentedSTTService):
    """A segmented STT whose transcript is the number of 10 ms chunks of speech it heard."""

    def __init__(self, **kwargs):
        super().__init__(trailing_silence_secs=0, **kwargs)
        self.runs: list[int] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes):
        self.runs.append(len(audio))
        await asyncio.sleep(0.05)
        yield TranscriptionFrame(f"chunks {len(audio) // 320}", "", "now")


class EarlySTT(EarlyTranscriptMixin, CountingSTT):
    pass


@dataclass
class Pause(SystemFrame):
    paused: bool = True


class PauseTeller(FrameProcessor):
    """Stands in for the VAD downstream of the STT (in the user aggregator), as in the pipeline."""

    def __init__(self, stt):
        super().__init__()
        self.stt = stt

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, Pause):
            await self.stt._on_pause(frame.paused)
            return
        await self.push_frame(frame, direction)


def speech(chunks: int) -> list:
    return [InputAudioRawFrame(b"\x01\x00" * 160, 16000, 1) for _ in range(chunks)]


async def run(stt, frames):
    from pipecat.pipeline.pipeline import Pipeline

    down, _ = await run_test(Pipeline([stt, PauseTeller(stt)]), frames_to_send=frames)
    return down


async def test_the_transcript_is_started_at_the_pause_and_pushed_at_the_vad_stop():
    stt = EarlySTT()
    frames = [VADUserStartedSpeakingFrame(), *speech(20), SleepFrame(0.01), Pause(True),
              SleepFrame(0.2),
              *speech(3), VADUserStoppedSpeakingFrame(), SleepFrame(0.1)]
    down = await run(stt, frames)
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert stt.runs == [20 * 320]  # one run, at the pause: the stop reused it
    assert texts == ["chunks 20"] and stt.early_used == 1
    # Pushed after the VAD stop, not when it was ready.
    kinds = [type(f).__name__ for f in down
             if isinstance(f, (TranscriptionFrame, VADUserStoppedSpeakingFrame))]
    assert kinds == ["VADUserStoppedSpeakingFrame", "TranscriptionFrame"]


async def test_speech_after_the_pause_throws_the_early_run_away():
    stt = EarlySTT()
    frames = [VADUserStartedSpeakingFrame(), *speech(10), Pause(True), SleepFrame(0.01),
              Pause(False), *speech(10), SleepFrame(0.01), Pause(True), SleepFrame(0.01),
              *speech(2), VADUserStoppedSpeakingFrame(), SleepFrame(0.2)]
    down = await run(stt, frames)
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert texts == ["chunks 20"]  # the whole utterance, once; never the first half alone
    assert stt.early_dropped == 1 and stt.early_used == 1


async def test_without_a_pause_the_segment_is_transcribed_at_the_stop():
    stt = EarlySTT()
    frames = [VADUserStartedSpeakingFrame(), *speech(8), VADUserStoppedSpeakingFrame(),
              SleepFrame(0.2)]
    down = await run(stt, frames)
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == ["chunks 8"]
    assert stt.early_used == 0 and stt.runs == [8 * 320]


async def test_a_pause_before_any_speech_starts_nothing():
    stt = EarlySTT()
    down = await run(stt, [Pause(True), *speech(3), SleepFrame(0.1)])
    assert stt.runs == [] and not [f for f in down if isinstance(f, TranscriptionFrame)]


# --------------------------------------------------------------------------- the real thing


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_real_whisper_a_comma_pause_is_one_utterance_and_the_stop_reuses_the_pause(
        harness, tmp_path):
    """Local Whisper behind the persona's VAD: a 0.25 s pause (longer than the early pause,
    shorter than the VAD stop at medium) starts an early run that is thrown away; the turn's
    transcript is the whole sentence, from the run started at the final pause."""
    wav = write_speech_wav(tmp_path / "pause.wav", [
        0.5, "I would like to order", 0.25, "a large pizza with mushrooms please.", 1.5])
    await harness.start(answers=["Okay."], audio_in=wav, persona={"system_prompt": "x"})
    await harness.wait_for("conversation.utterance", timeout=40,
                           where=lambda e: e["properties"]["role"] == "replica")
    said = [e["properties"]["speech"] for e in harness.of("conversation.utterance")
            if e["properties"]["role"] == "user"]
    assert len(said) == 1 and "order" in said[0].lower() and "pizza" in said[0].lower(), said
    stt = harness.session.services.stt
    assert stt.early_used == 1, (stt.early_used, stt.early_dropped)
