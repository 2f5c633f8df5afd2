"""pipeline_mode echo: no STT and no LLM; the replica says exactly what the app sends."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.harness import Harness

ECHO = {"persona_name": "Echo", "pipeline_mode": "echo"}


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_echo_pipeline_has_no_stt_or_llm(harness):
    await harness.start(persona=ECHO)
    names = [type(p).__name__ for p in harness.built.pipeline.processors]
    assert not any("STT" in n or "LLM" in n for n in names), names
    assert harness.built.services.llm is None and harness.built.tools is None


async def test_echo_text_is_spoken_verbatim(harness):
    await harness.start(persona=ECHO)
    await harness.send({"event_type": "conversation.echo",
                        "properties": {"modality": "text", "text": "Exactly these words."}})
    utterance = await harness.wait_for("conversation.utterance")
    assert utterance[0]["properties"] == {"role": "replica", "speech": "Exactly these words.",
                                          "visual_context": ""}
    await harness.wait_for("conversation.replica.stopped_speaking")
    audio = np.frombuffer(bytes(harness.transport.recorded), np.int16).astype(np.float32)
    assert np.sqrt((audio ** 2).mean()) > 300
    assert harness.fake.requests == []  # no LLM was asked anything


async def test_echo_audio_chunks_with_one_inference_id(harness):
    await harness.start(persona=ECHO)
    tone = (np.sin(np.arange(2400) * 2 * np.pi * 300 / 24000) * 9000).astype(np.int16).tobytes()
    for i in range(5):  # five 100 ms chunks of one utterance, as Pipecat's Tavus service sends
        await harness.send({"event_type": "conversation.echo", "properties": {
            "modality": "audio", "audio": base64.b64encode(tone).decode(), "sample_rate": 24000,
            "inference_id": "inf-7", "done": i == 4}})
    await harness.wait_for("conversation.replica.stopped_speaking")
    assert len(harness.of("conversation.replica.started_speaking")) == 1
    assert harness.of("conversation.replica.started_speaking")[0]["inference_id"] == "inf-7"
    assert not harness.of("system.error")


async def test_respond_is_rejected_and_interrupt_stops_speech(harness):
    await harness.start(persona=ECHO)
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Hi"}})
    error = (await harness.wait_for("system.error"))[0]["properties"]["error"]
    assert "echo mode" in error
    await harness.send({"event_type": "conversation.echo", "properties": {
        "text": " ".join(["A long sentence that goes on and on for a while."] * 6)}})
    await harness.wait_for("conversation.replica.started_speaking")
    await harness.send({"event_type": "conversation.interrupt"})
    stopped = (await harness.wait_for("conversation.replica.stopped_speaking"))[0]
    assert stopped["properties"]["interrupted"] is True
