"""Perception in a live conversation (the real pipeline, the scripted fake LLM, the real local
detectors on a real photograph): the perception system message reaches the LLM, utterances
carry the analyses, a perception tool fires once with frames and runs its local handler, the
end-of-call analysis arrives once as a callback and in the record, ``off`` builds and loads
nothing, a visual objective completes from what is seen, and a vision model faked on loopback
receives the images and answers instead of the detectors."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fake_openai import FakeOpenAI
from tests.fake_rest import WebhookReceiver
from tests.harness import Harness
from tools import ToolRegistry, build_registry


def photo() -> np.ndarray:
    """A real photograph that ships with matplotlib (Grace Hopper), as RGB."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def frame(rgb: np.ndarray, source: str = "camera"):
    from pipecat.frames.frames import UserImageRawFrame

    f = UserImageRawFrame(user_id="u1", image=rgb.tobytes(), size=(rgb.shape[1], rgb.shape[0]),
                          format="RGB")
    f.transport_source = source
    return f


def two_people() -> np.ndarray:
    p = photo()
    return np.concatenate([p, p], axis=1)


PERSONA = {
    "persona_name": "Ava", "system_prompt": "You are Ava.",
    "layers": {"llm": {"model": "fake-model", "api_key": "test-key"},
               "perception": {
                   "perception_model": "raven-0",
                   "ambient_awareness_queries": ["Is there more than one person present?",
                                                 "Is the user wearing a bright outfit?"],
                   "perception_analysis_queries": [
                       "On a scale of 1-100, how often was the user looking at the screen?"],
                   "perception_tools": [{"type": "function", "function": {
                       "name": "notify_second_person",
                       "description": "Use this when more than one person is in view.",
                       "parameters": {"type": "object", "properties": {
                           "people": {"type": "integer"}}, "required": ["people"]}}}]}}}


def system_of(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"]
                     if m["role"] == "system" and isinstance(m["content"], str))


async def show(h: Harness, rgb: np.ndarray, count: int = 3, source: str = "camera") -> None:
    """Frames at the sampling rate (PERCEPTION_FPS=4 in these tests), each processed."""
    runner = h.built.perception
    for _ in range(count):
        before = runner.stats[source].processed
        await h.worker.queue_frames([frame(rgb, source)])
        for _ in range(200):
            await asyncio.sleep(0.05)
            if runner.stats[source].processed > before and not runner._busy:
                break
        await asyncio.sleep(0.3)
        runner._cooldown_until = 0.0  # the test paces frames itself


async def say(h: Harness, text: str) -> None:
    before = len(h.of("conversation.replica.stopped_speaking"))
    await h.send({"event_type": "conversation.respond", "properties": {"text": text}})
    await h.wait_for("conversation.replica.stopped_speaking", count=before + 1, timeout=30)
    await asyncio.sleep(0.3)


ENV = {"PERCEPTION_FPS": "4"}


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_what_the_camera_shows_reaches_the_llm_and_a_tool_fires_once(harness):
    seen: list[dict] = []
    registry: ToolRegistry = build_registry()

    @registry.tool("notify_second_person")
    async def notify_second_person(people: int) -> dict:
        seen.append({"people": people})
        return {"ok": True}

    h = await harness.start(persona=PERSONA, env=ENV, registry=registry,
                            answers=["I can see you.", "Hello to both of you."])
    await show(h, photo())
    await say(h, "Can you see me?")
    system = system_of(h.fake.requests[-1])
    assert "<user_appearance>One person is in view" in system
    assert "<user_emotions>Facial expression:" in system
    assert "Is there more than one person present? One person is in view." in system
    assert "bright outfit? Cannot tell" in system
    utterance = [e for e in h.of("conversation.utterance") if e["properties"]["role"] == "user"][-1]
    assert utterance["properties"]["user_visual_analysis"].startswith("One person is in view")
    assert utterance["properties"]["visual_context"] == utterance["properties"]["user_visual_analysis"]
    assert not h.of("conversation.perception_tool_call")

    await show(h, two_people(), count=4)
    await say(h, "My colleague joined.")
    assert "2 people are in view" in system_of(h.fake.requests[-1])
    calls = h.of("conversation.perception_tool_call")
    assert len(calls) == 1  # once per episode, though it held on several frames
    props = calls[0]["properties"]
    assert props["name"] == "notify_second_person" and props["arguments"] == {"people": 2}
    assert props["frames"] and base64.b64decode(props["frames"][-1])[:2] == b"\xff\xd8"  # JPEG
    await h.built.perception.settle()
    assert seen == [{"people": 2}]  # the local handler ran


async def end_and_collect(tmp_path, reason: str, frames: int):
    """A conversation shown ``frames`` photos and ended for ``reason``, torn down; the
    harness, the callback receiver's payloads (after the analysis arrived) and the id."""
    receiver = WebhookReceiver().start_thread()
    h = Harness(tmp_path)
    try:
        await h.start(persona=PERSONA, env=ENV, conversation={"callback_url": receiver.url},
                      answers=["Hi."])
        await show(h, photo(), count=frames)
        conversation_id = h.session.conversation_id
        await h.session.lifecycle.end(reason)
        await asyncio.wait_for(asyncio.shield(h.session.task), 30)
        await h.session.__aexit__(None, None, None)  # the teardown: record closed, callbacks
        for _ in range(100):
            if "application.perception_analysis" in receiver.events():
                break
            await asyncio.sleep(0.1)
    finally:
        await h.stop()
        receiver.stop_thread()
    return h, receiver, conversation_id


async def test_the_end_of_call_analysis_is_sent_once_and_recorded(tmp_path):
    from conversation.records import ConversationStore

    h, receiver, conversation_id = await end_and_collect(
        tmp_path, "end_conversation_endpoint_hit", frames=3)
    analysis = h.of("conversation.perception_analysis")
    assert len(analysis) == 1
    text = analysis[0]["properties"]["analysis"]
    assert "**User Appearance:** A person was in view in 100% of the camera frames" in text
    assert "how often was the user looking at the screen?**" in text
    bodies = [b for b in receiver.payloads if b["event_type"] == "application.perception_analysis"]
    assert len(bodies) == 1
    assert bodies[0]["message_type"] == "application"
    assert bodies[0]["properties"]["analysis"] == text
    record = ConversationStore(tmp_path / "data").verbose(conversation_id)
    kinds = [e["event_type"] for e in record["events"]]
    assert kinds.count("application.perception_analysis") == 1
    assert kinds.index("system.shutdown") < kinds.index("application.perception_analysis")


async def test_off_builds_nothing_and_loads_no_detector(harness, monkeypatch):
    import perception.detectors

    def refuse(*_args, **_kwargs):
        raise AssertionError("a detector was made with perception off")

    monkeypatch.setattr(perception.detectors.LocalDetectors, "__init__", refuse)
    persona = json.loads(json.dumps(PERSONA))
    persona["layers"]["perception"]["perception_model"] = "off"
    h = await harness.start(persona=persona, env=ENV, answers=["Hello."])
    assert h.session.perception is None and h.built.perception is None
    assert h.session.perception_fps is None  # the transport captures no video
    names = [type(p).__name__ for p in h.built.pipeline.processors]
    assert "PerceptionTap" not in names and "PerceptionInjector" not in names
    await h.worker.queue_frames([frame(photo())])
    await say(h, "Hello?")
    assert "<user_appearance>" not in system_of(h.fake.requests[-1])
    assert "visual_context" in h.of("conversation.utterance")[0]["properties"]
    assert "user_visual_analysis" not in h.of("conversation.utterance")[0]["properties"]


async def test_a_visual_objective_completes_from_what_the_camera_sees(harness):
    from config.policies import Objective, Policies

    objectives = [Objective(objective_name="two_present", modality="visual",
                            objective_prompt="Make sure more than one person is in view.",
                            next_required_objectives=["ask_name"]),
                  Objective(objective_name="ask_name", objective_prompt="Ask the user's name.",
                            output_variables=["name"])]
    h = await harness.start(persona=PERSONA, env=ENV, policies=Policies(objectives=objectives),
                            answers=["Please both come in view.", "What is your name?"])
    await asyncio.sleep(0.5)
    assert h.built.objectives.state.current == "two_present"
    await show(h, photo(), count=2)
    assert h.built.objectives.state.current == "two_present"
    await show(h, two_people(), count=3)
    for _ in range(50):
        if h.built.objectives.state.current == "ask_name":
            break
        await asyncio.sleep(0.1)
    assert h.built.objectives.state.current == "ask_name"
    completed = [e for e in h.of("conversation.objective.completed")
                 if e["properties"]["objective_name"] == "two_present"]
    assert len(completed) == 1


async def test_a_vision_model_gets_the_images_and_answers_instead(tmp_path):
    vision = await FakeOpenAI(answers=[json.dumps({
        "appearance": "A woman in a naval uniform faces the camera.",
        "emotions": "She looks composed.", "screen": "",
        "answers": ["No, she is alone.", "No, a dark uniform."]})], api_key="vision-key").start()
    h = Harness(tmp_path)
    try:
        persona = json.loads(json.dumps(PERSONA))
        persona["layers"]["perception"]["vision_model"] = "fake-vision"
        persona["layers"]["perception"]["vision_base_url"] = vision.base_url
        persona["layers"]["perception"]["vision_api_key"] = "vision-key"
        await h.start(persona=persona, env=ENV, answers=["You look composed."])
        await show(h, photo(), count=1)
        for _ in range(100):
            if h.built.perception.observations.described:
                break
            await asyncio.sleep(0.1)
        await say(h, "How do I look?")
        system = system_of(h.fake.requests[-1])
        assert "<user_appearance>A woman in a naval uniform faces the camera." in system
        assert "bright outfit? No, a dark uniform." in system
        assert h.built.perception.detectors is None  # the detectors are not used at all
    finally:
        await h.stop()
        await vision.stop()
    request = vision.requests[0]
    parts = request["messages"][1]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert images and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "Is there more than one person present?" in parts[0]["text"]
    assert request["tools"][0]["function"]["name"] == "notify_second_person"


async def test_the_users_voice_is_heard_and_an_audio_tool_fires(harness, tmp_path):
    """raven-1 on a spoken turn (Piper's voice through the persona's VAD, Whisper): the
    utterance carries user_audio_analysis, the LLM's emotions tag has the voice, and the audio
    tool for an upset user fires (frames: none; what it heard is in its arguments)."""
    from tests.speech import write_question_wav

    wav = write_question_wav(tmp_path / "angry.wav",
                             "This is ridiculous. Nothing works and I am so angry.",
                             lead_secs=1.0, tail_secs=2.0)
    persona = {"persona_name": "Ava", "system_prompt": "You are Ava.", "layers": {
        "llm": {"model": "fake-model", "api_key": "test-key"},
        "perception": {"perception_model": "raven-1",
                       "audio_awareness_queries": ["Does the user sound frustrated?"],
                       "audio_tools": [{"type": "function", "function": {
                           "name": "escalate_to_human",
                           "description": "Use when the user sounds frustrated or angry.",
                           "parameters": {"type": "object", "properties": {
                               "tone": {"type": "string"}}, "required": ["tone"]}}}]}}}
    h = await harness.start(persona=persona, env=ENV, audio_in=wav,
                            answers=["I am sorry, let me help."])
    await h.wait_for("conversation.replica.stopped_speaking", timeout=60)
    user = [e for e in h.of("conversation.utterance") if e["properties"]["role"] == "user"]
    assert user and "angry" in user[0]["properties"]["speech"].lower()
    analysis = user[0]["properties"]["user_audio_analysis"]
    assert analysis and ("upset" in analysis or "frustrated" in analysis)
    system = system_of(h.fake.requests[-1])
    assert "<user_emotions>" in system and "Voice:" in system
    assert "Does the user sound frustrated?" in system
    calls = h.of("conversation.perception_tool_call")
    assert [c["properties"]["name"] for c in calls] == ["escalate_to_human"]
    assert calls[0]["properties"]["frames"] == []
    assert calls[0]["properties"]["arguments"]["tone"] in ("upset", "frustrated")


async def test_a_visual_guardrail_is_reported_once_when_it_is_seen(harness):
    from config.policies import Guardrail, Policies

    guardrail = Guardrail(guardrail_name="participant_alone", modality="visual",
                          guardrail_prompt="The participant must be alone: no other person "
                                           "may be in view.")
    h = await harness.start(persona=PERSONA, env=ENV, policies=Policies(guardrails=[guardrail]),
                            answers=["Hello."])
    await show(h, photo(), count=2)
    assert not h.of("conversation.guardrail_triggered")
    await show(h, two_people(), count=4)
    triggered = await h.wait_for("conversation.guardrail_triggered")
    await show(h, two_people(), count=2)
    assert len(h.of("conversation.guardrail_triggered")) == 1
    assert triggered[0]["properties"]["guardrail"] == "participant_alone"
    assert triggered[0]["properties"]["role"] == "user"


async def test_the_analysis_is_recorded_when_the_participant_leaves(tmp_path):
    """The most common end: nobody left to hear it, the pipeline is cancelled; the analysis
    still goes to the callback and the record (not to the empty room)."""
    from conversation.lifecycle import PARTICIPANT_LEFT
    from conversation.records import ConversationStore

    h, receiver, conversation_id = await end_and_collect(tmp_path, PARTICIPANT_LEFT, frames=2)
    assert receiver.events().count("application.perception_analysis") == 1
    assert not h.of("conversation.perception_analysis")
    record = ConversationStore(tmp_path / "data").verbose(conversation_id)
    assert [e["event_type"] for e in record["events"]].count("application.perception_analysis") == 1
