"""The persona's resolved options: every default applied once, in one frozen object."""

from __future__ import annotations

import dataclasses
import json

import pytest

from config import conversation_from_dict, persona_from_dict
from config.app import AppConfig
from config.options import ConversationOptions, FlowOptions
from tests.conftest import PERSONAS


def _options(persona: dict, conversation: dict | None = None, **kw) -> ConversationOptions:
    return ConversationOptions.resolve(persona_from_dict({"system_prompt": "x", **persona}).value,
                                       conversation_from_dict(conversation or {}).value, **kw)


def test_absent_flow_layer_gets_tavus_defaults():
    options = _options({})
    assert options.flow == FlowOptions(
        turn_detection_model="sparrow-1", turn_taking_patience="medium", turn_commitment="medium",
        replica_interruptibility="medium", wake_phrase=None, idle_engagement="off",
        voice_isolation="near")
    assert options.pipeline_mode == "full" and not options.echo
    assert options.speculative_inference is True and options.tools == ()  # Tavus: on by default
    assert options.language == "english"
    assert options.greet and options.custom_greeting is None and not options.closed_captions


def test_given_fields_win_and_the_rest_default():
    options = _options(
        {"pipeline_mode": "echo", "layers": {
            "llm": {"speculative_inference": True, "tools": [{"type": "function", "function": {
                "name": "get_current_time", "parameters": {"type": "object", "properties": {}}}}]},
            "conversational_flow": {"replica_interruptibility": "verylow", "wake_phrase": " Hey Ava ",
                                    "voice_isolation": "off"}}},
        {"custom_greeting": "Hello!", "audio_only": True, "callback_url": "https://example.com/hook",
         "properties": {"language": "spanish", "enable_closed_captions": True,
                        "max_call_duration": 60, "participant_left_timeout": 5}},
        greet=False,
    )
    assert options.echo
    assert options.flow.replica_interruptibility == "verylow"
    assert options.flow.wake_phrase == "Hey Ava" and options.flow.voice_isolation == "off"
    assert options.flow.turn_taking_patience == "medium" and options.flow.idle_engagement == "off"
    assert options.speculative_inference is True
    assert [t.function.name for t in options.tools] == ["get_current_time"]
    assert options.custom_greeting == "Hello!" and options.greet is False
    assert options.closed_captions and options.language == "spanish"


def test_options_are_frozen_and_resolved_at_load(tmp_path):
    conversation = tmp_path / "c.json"
    conversation.write_text(json.dumps({"custom_greeting": "Hi there."}))
    app = AppConfig.load(PERSONAS / "default.json", conversation, environ={}, greet=False)
    assert app.options.custom_greeting == "Hi there." and app.options.greet is False
    assert app.options.persona_name == "Ava"
    with pytest.raises(dataclasses.FrozenInstanceError):
        app.options.greet = True  # type: ignore[misc]


def test_every_stock_persona_resolves():
    for path in sorted(PERSONAS.glob("*.json")):
        app = AppConfig.load(path, environ={})
        flow = app.options.flow
        assert flow.turn_detection_model in ("sparrow-1", "sparrow-0", "time-based"), path
        assert flow.replica_interruptibility in ("verylow", "low", "medium", "high"), path
        assert flow.voice_isolation in ("near", "off"), path
