"""Persona and conversation configuration: loading, defaults, legacy migration, errors, redaction."""

from __future__ import annotations

import copy
import json

import pytest

from config import (
    ConfigError,
    conversation_from_dict,
    load_conversation,
    load_persona,
    persona_from_dict,
)
from config.app import AppConfig
from config.loader import MAX_DEPTH, MAX_FILE_BYTES
from config.redact import REDACTED, redact
from tests.conftest import PERSONAS

STOCK = sorted(PERSONAS.glob("*.json"))

BASE = {"persona_name": "T", "system_prompt": "You are T.", "pipeline_mode": "full"}


def with_layers(**layers) -> dict:
    data = copy.deepcopy(BASE)
    data["layers"] = layers
    return data


# --------------------------------------------------------------------------- loading


def test_stock_personas_are_all_there():
    names = {p.stem for p in STOCK}
    assert {
        "default",
        "ai_interviewer",
        "customer_service_agent",
        "health_care_general_doctor",
        "health_care_dermatologist",
        "history_teacher",
        "sales_coach",
        "tavus_researcher",
    } <= names


@pytest.mark.parametrize("path", STOCK, ids=lambda p: p.stem)
def test_every_stock_persona_loads_without_warnings(path):
    loaded = load_persona(path)
    assert loaded.value.system_prompt
    assert loaded.warnings == []  # every field is known (legacy ones are migrated, not unknown)
    flow = loaded.value.layers.conversational_flow
    assert flow is not None and flow.turn_detection_model and flow.turn_taking_patience


def test_spec_002_full_customizations_example_loads():
    # Create Persona OpenAPI (spec 002) "Full Customizations" example, as printed
    # (document_ids/tags are indented under layers there).
    data = {
        "persona_name": "Life Coach",
        "system_prompt": "As a Life Coach, you are a dedicated professional who specializes in...",
        "pipeline_mode": "full",
        "default_replica_id": "r90bbd427f71",
        "layers": {
            "llm": {
                "model": "tavus-gpt-oss",
                "speculative_inference": True,
                "tools": [{"type": "function", "function": {
                    "name": "life_coach_insight",
                    "description": "Offer advice.",
                    "parameters": {"type": "object", "properties": {
                        "topic": {"type": "string"},
                        "urgency_level": {"type": "string", "enum": ["low", "medium", "high"]}},
                        "required": ["topic"]}}}],
            },
            "tts": {"tts_engine": "cartesia", "voice_settings": {"speed": "normal", "emotion": [
                "positivity:high", "curiosity"]}, "tts_emotion_control": True,
                "tts_model_name": "sonic-3"},
            "perception": {
                "perception_model": "raven-1",
                "visual_awareness_queries": ["Is the user showing an ID card?"],
                "visual_tool_prompt": "Use notify_if_id_shown.",
                "visual_tools": [{"type": "function", "function": {"name": "notify_if_id_shown",
                    "description": "ID seen", "parameters": {"type": "object", "properties": {
                        "id_type": {"type": "string"}}, "required": ["id_type"]}}}],
                "audio_awareness_queries": ["Does the user sound frustrated or confused?"],
            },
            "stt": {"stt_engine": "tavus-auto"},
            "conversational_flow": {
                "turn_detection_model": "sparrow-1",
                "turn_taking_patience": "medium",
                "turn_commitment": "medium",
                "replica_interruptibility": "high",
                "voice_isolation": "near",
                "idle_engagement": "off",
            },
            "document_ids": ["d1234567890", "d2468101214"],
            "document_tags": ["product_info", "company_policies"],
        },
    }
    loaded = persona_from_dict(data)
    persona = loaded.value
    assert loaded.warnings == []
    assert persona.document_ids == ["d1234567890", "d2468101214"]
    assert persona.document_tags == ["product_info", "company_policies"]
    assert persona.layers.conversational_flow.turn_commitment == "medium"
    assert persona.layers.tts.voice_settings.speed == "normal"
    assert persona.layers.perception.visual_tools[0].function.name == "notify_if_id_shown"


def test_spec_001_legacy_example_loads_and_migrates():
    # Create Persona (spec 001, older schema) request example; its base_url placeholder
    # ("your-base-url") is replaced by a real URL, the only change.
    data = {
        "persona_name": "Life Coach", "system_prompt": "As a Life Coach...", "pipeline_mode": "full",
        "context": "Here are a few times...", "default_replica_id": "r79e1c033f",
        "layers": {
            "llm": {"model": "<string>", "base_url": "https://llm.example.com/v1",
                    "api_key": "your-api-key", "headers": {"Authorization": "Bearer your-api-key"},
                    "extra_body": {"temperature": 0.5}},
            "tts": {"api_key": "your-api-key", "tts_engine": "cartesia",
                    "external_voice_id": "external-voice-id",
                    "voice_settings": {"speed": "normal", "emotion": ["positivity:high", "curiosity"]},
                    "playht_user_id": "your-playht-user-id", "tts_emotion_control": "false",
                    "tts_model_name": "sonic"},
            "perception": {"perception_model": "raven-0",
                           "ambient_awareness_queries": ["Is the user showing an ID card?"],
                           "perception_tool_prompt": "You have a tool...",
                           "perception_tools": [{"type": "function", "function": {
                               "name": "notify_if_id_shown", "description": "d",
                               "parameters": {"type": "object", "properties": {
                                   "id_type": {"type": "string"}}, "required": ["id_type"]}}}]},
            "stt": {"stt_engine": "tavus-turbo", "participant_pause_sensitivity": "high",
                    "participant_interrupt_sensitivity": "high",
                    "hotwords": "Roey is the name of the person you're speaking with.",
                    "smart_turn_detection": True},
        },
    }
    loaded = persona_from_dict(data)
    p = loaded.value
    assert loaded.warnings == []
    assert p.layers.tts.tts_emotion_control is False
    assert p.layers.perception.visual_awareness_queries == ["Is the user showing an ID card?"]
    assert p.layers.perception.visual_tool_prompt == "You have a tool..."
    assert p.layers.perception.visual_tools[0].function.name == "notify_if_id_shown"
    flow = p.layers.conversational_flow
    # smart_turn_detection -> sparrow-0; sensitivities inverted per the migration guide.
    assert flow.turn_detection_model == "sparrow-0"
    assert flow.turn_taking_patience == "low"
    assert flow.replica_interruptibility == "low"
    assert any("playht_user_id" in n for n in loaded.notes)


def test_spec_000_condensed_examples_load():
    data = with_layers(
        tts={"tts_engine": "playht", "voice_id": "your-playht-voice-id", "api_key": "k"},
        perception={"perception_model": "raven-0", "ambient_awareness": True},
        stt={"smart_turn_detection": True, "participant_pause_sensitivity": "medium",
             "participant_interrupt_sensitivity": "medium"},
    )
    loaded = persona_from_dict(data)
    tts = loaded.value.layers.tts
    assert tts.tts_engine is None  # PlayHT is gone: chosen automatically
    assert tts.external_voice_id == "your-playht-voice-id"
    assert loaded.value.layers.conversational_flow.turn_taking_patience == "medium"
    assert any("playht" in n for n in loaded.notes)


def test_legacy_stt_settings_lose_to_sparrow_1_flow():
    data = with_layers(
        stt={"participant_pause_sensitivity": "high"},
        conversational_flow={"turn_detection_model": "sparrow-1", "turn_taking_patience": "high"},
    )
    loaded = persona_from_dict(data)
    assert loaded.value.layers.conversational_flow.turn_taking_patience == "high"
    assert any("ignored" in n for n in loaded.notes)


def test_conversational_flow_defaults_apply_when_any_field_is_set():
    flow = persona_from_dict(with_layers(conversational_flow={"turn_taking_patience": "low"}))
    f = flow.value.layers.conversational_flow
    assert (f.turn_detection_model, f.turn_taking_patience, f.replica_interruptibility) == (
        "sparrow-1", "low", "medium")
    assert (f.turn_commitment, f.voice_isolation, f.idle_engagement, f.wake_phrase) == (
        "medium", "near", "off", None)


def test_conversational_flow_absent_stays_absent():
    assert persona_from_dict(BASE).value.layers.conversational_flow is None


def test_verylow_interruptibility_and_tool_prompt_from_examples_load():
    data = with_layers(
        conversational_flow={"replica_interruptibility": "verylow"},
        perception={"perception_model": "raven-0", "tool_prompt": "Use the tools.",
                    "perception_tool_prompt": ""},
    )
    p = persona_from_dict(data).value
    assert p.layers.conversational_flow.replica_interruptibility == "verylow"
    assert p.layers.perception.visual_tool_prompt == "Use the tools."


def test_echo_mode_needs_no_system_prompt():
    assert persona_from_dict({"pipeline_mode": "echo"}).value.pipeline_mode == "echo"


def test_unknown_fields_are_warned_by_path_and_dropped():
    data = with_layers(llm={"model": "gpt-4.1", "temprature": 0.3}, brand_new_layer={"x": 1})
    data["mood"] = "happy"
    data["audio_only"] = True
    loaded = persona_from_dict(data)
    text = "\n".join(loaded.warnings)
    assert "'mood'" in text
    assert "'layers.llm.temprature'" in text
    assert "'layers.brand_new_layer'" in text
    assert "audio_only is a conversation field" in text
    dumped = loaded.value.model_dump()
    assert "mood" not in dumped and "temprature" not in dumped["layers"]["llm"]


# --------------------------------------------------------------------------- errors

MALFORMED = [
    # (name, mutate(data), expected path, expected words in the message)
    ("missing system_prompt", lambda d: d.pop("system_prompt"), "system_prompt", "required"),
    ("empty system_prompt", lambda d: d.update(system_prompt="   "), "system_prompt", "required"),
    ("bad pipeline_mode", lambda d: d.update(pipeline_mode="fast"), "pipeline_mode", "'full'"),
    ("persona_name not a string", lambda d: d.update(persona_name=42), "persona_name", "string"),
    ("layers not an object", lambda d: d.update(layers=[]), "layers", "dictionary"),
    ("bad patience", lambda d: d.update(layers={"conversational_flow": {
        "turn_taking_patience": "fast"}}), "layers.conversational_flow.turn_taking_patience", "'low'"),
    ("bad turn model", lambda d: d.update(layers={"conversational_flow": {
        "turn_detection_model": "sparrow-9"}}), "layers.conversational_flow.turn_detection_model",
     "'sparrow-1'"),
    ("bad interruptibility", lambda d: d.update(layers={"conversational_flow": {
        "replica_interruptibility": "never"}}), "layers.conversational_flow.replica_interruptibility",
     "'verylow'"),
    ("empty wake phrase", lambda d: d.update(layers={"conversational_flow": {"wake_phrase": " "}}),
     "layers.conversational_flow.wake_phrase", "empty"),
    ("bad stt engine", lambda d: d.update(layers={"stt": {"stt_engine": "siri"}}),
     "layers.stt.stt_engine", "'tavus-auto'"),
    ("bad tts engine", lambda d: d.update(layers={"tts": {"tts_engine": "polly"}}),
     "layers.tts.tts_engine", "'cartesia'"),
    ("elevenlabs speed out of range", lambda d: d.update(layers={"tts": {
        "tts_engine": "elevenlabs", "voice_settings": {"speed": 2.0}}}),
     "layers.tts.voice_settings.speed", "0.7-1.2"),
    ("cartesia speed out of range", lambda d: d.update(layers={"tts": {
        "tts_engine": "cartesia", "voice_settings": {"speed": 5}}}),
     "layers.tts.voice_settings.speed", "-1.0 to 1.0"),
    ("stability out of range", lambda d: d.update(layers={"tts": {
        "voice_settings": {"stability": 1.5}}}), "layers.tts.voice_settings.stability", "1"),
    ("bad emotion tag", lambda d: d.update(layers={"tts": {
        "voice_settings": {"emotion": ["very happy!"]}}}), "layers.tts.voice_settings.emotion",
     "positivity:high"),
    ("base_url not a URL", lambda d: d.update(layers={"llm": {"model": "m", "base_url": "your-base-url"}}),
     "layers.llm.base_url", "http"),
    ("tool without name", lambda d: d.update(layers={"llm": {"tools": [{"type": "function",
        "function": {"description": "x"}}]}}), "layers.llm.tools[0].function.name", "required"),
    ("tool with bad name", lambda d: d.update(layers={"llm": {"tools": [{"type": "function",
        "function": {"name": "get weather"}}]}}), "layers.llm.tools[0].function.name", "letters"),
    ("tool type not function", lambda d: d.update(layers={"llm": {"tools": [{"type": "retrieval",
        "function": {"name": "x"}}]}}), "layers.llm.tools[0].type", "'function'"),
    ("tool schema not object", lambda d: d.update(layers={"llm": {"tools": [{"type": "function",
        "function": {"name": "x", "parameters": {"type": "string"}}}]}}),
     "layers.llm.tools[0].function.parameters", "object"),
    ("required names undefined property", lambda d: d.update(layers={"llm": {"tools": [{
        "type": "function", "function": {"name": "x", "parameters": {"type": "object",
        "properties": {}, "required": ["city"]}}}]}}), "layers.llm.tools[0].function.parameters",
     "city"),
    ("duplicate tool names", lambda d: d.update(layers={"llm": {"tools": [
        {"type": "function", "function": {"name": "x"}},
        {"type": "function", "function": {"name": "x"}}]}}), "layers.llm.tools", "unique"),
    ("headers not strings", lambda d: d.update(layers={"llm": {"headers": {"X-Retries": [1]}}}),
     "layers.llm.headers.X-Retries", "string"),
    ("speculative_inference not bool", lambda d: d.update(layers={"llm": {
        "speculative_inference": "sometimes"}}), "layers.llm.speculative_inference", "bool"),
    ("bad perception model", lambda d: d.update(layers={"perception": {"perception_model": "raven-9"}}),
     "layers.perception.perception_model", "'raven-1'"),
    ("too many guardrails", lambda d: d.update(guardrail_ids=[f"g{i}" for i in range(51)]),
     "guardrail_ids", "50"),
    ("document_ids not a list", lambda d: d.update(document_ids="d1"), "document_ids", "list"),
]


@pytest.mark.parametrize("name,mutate,path,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_persona_gives_one_clear_line(name, mutate, path, words):
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        persona_from_dict(data, "p.json")
    problems = info.value.problems
    assert len(problems) == 1, info.value.render()
    line = problems[0].render()
    assert line.startswith(f"{path}: "), line
    assert words.lower() in line.lower(), line
    assert "\n" not in line


def test_several_problems_are_all_listed():
    data = with_layers(
        conversational_flow={"turn_taking_patience": "fast", "idle_engagement": "sometimes"},
        tts={"tts_engine": "polly"},
    )
    data.pop("system_prompt")
    with pytest.raises(ConfigError) as info:
        persona_from_dict(data, "p.json")
    paths = {p.path for p in info.value.problems}
    assert {
        "layers.conversational_flow.turn_taking_patience",
        "layers.conversational_flow.idle_engagement",
        "layers.tts.tts_engine",
    } <= paths
    rendered = info.value.render()
    assert rendered.startswith("p.json: ")
    assert "got \"fast\"" in rendered  # the bad value is shown


def test_bad_value_of_a_secret_field_is_redacted_in_errors():
    data = with_layers(llm={"api_key": 12345678})
    with pytest.raises(ConfigError) as info:
        persona_from_dict(data)
    assert "12345678" not in info.value.render()
    assert REDACTED in info.value.render()


def test_invalid_json_file_points_at_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "persona_name": "x",\n}\n')
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    text = info.value.render()
    assert "invalid JSON at line 3" in text and "trailing comma" in text


def test_missing_file_and_non_object(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_persona(tmp_path / "nope.json")
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_persona(path)


# --------------------------------------------------------------------------- conversation


def test_conversation_request_fields_and_defaults():
    conv = conversation_from_dict({
        "persona_id": "p1", "replica_id": "r1", "conversation_name": "Demo",
        "conversational_context": "ctx", "custom_greeting": "Hi!",
        "callback_url": "https://x.example/wh", "audio_only": False,
        "document_ids": ["d1"], "document_tags": ["lesson-1"],
        "document_retrieval_strategy": "balanced", "memory_stores": ["anna_p123"],
        "require_auth": True, "max_participants": 2, "test_mode": False,
        "properties": {"max_call_duration": 1800, "participant_left_timeout": 60,
                       "participant_absent_timeout": 120, "enable_recording": True,
                       "enable_closed_captions": True, "apply_greenscreen": False,
                       "language": "Spanish"},
    }).value
    assert conv.properties.language == "spanish"
    assert conv.properties.language_code == "es"
    default = conversation_from_dict({}).value.properties
    assert (default.max_call_duration, default.participant_left_timeout,
            default.participant_absent_timeout, default.language) == (3600, 0, 300, "english")


@pytest.mark.parametrize("data,path", [
    ({"properties": {"language": "klingon"}}, "properties.language"),
    ({"properties": {"language": "es"}}, "properties.language"),
    ({"properties": {"max_call_duration": 0}}, "properties.max_call_duration"),
    ({"callback_url": "ftp://x"}, "callback_url"),
    ({"max_participants": 1}, "max_participants"),
    ({"document_retrieval_strategy": "fastest"}, "document_retrieval_strategy"),
])
def test_bad_conversation_fields(data, path):
    with pytest.raises(ConfigError) as info:
        conversation_from_dict(data)
    assert [p.path for p in info.value.problems] == [path]


def test_multilingual_language():
    conv = conversation_from_dict({"properties": {"language": "multilingual"}}).value
    assert conv.properties.language_code is None


# --------------------------------------------------------------------------- redaction


def test_redact_hides_keys_headers_and_query_secrets():
    data = {"layers": {"llm": {"api_key": "sk-live-123", "headers": {"Authorization": "Bearer x",
            "X-Org": "acme"}, "default_query": {"api-version": "2024-06-01", "api-key": "azure-1"},
            "model": "gpt"}, "tts": {"api_key": None}}}
    out = redact(data)
    llm = out["layers"]["llm"]
    assert llm["api_key"] == REDACTED
    assert llm["headers"] == {"Authorization": REDACTED, "X-Org": REDACTED}
    assert llm["default_query"] == {"api-version": "2024-06-01", "api-key": REDACTED}
    assert llm["model"] == "gpt"
    assert out["layers"]["tts"]["api_key"] is None
    assert data["layers"]["llm"]["api_key"] == "sk-live-123"  # input untouched


def test_effective_config_is_redacted(tmp_path):
    persona = with_layers(llm={"model": "m", "base_url": "http://127.0.0.1:1/v1",
                               "api_key": "sk-secret-abc", "headers": {"X-Key": "hdr-secret"}})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(persona))
    app = AppConfig.load(path, environ={"OPENAI_API_KEY": "sk-env-secret"})
    text = json.dumps(app.effective())
    assert "sk-secret-abc" not in text and "hdr-secret" not in text
    assert set(app.secrets()) >= {"sk-secret-abc", "hdr-secret", "sk-env-secret"}


# --------------------------------------------------------------------------- files (read_text)


def test_a_document_level_problem_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_persona(tmp_path / "nope.json")
    assert info.value.render() == f"error: {tmp_path / 'nope.json'}: file not found"


def test_size_limit_fits_a_long_prompt_and_refuses_more(tmp_path):
    path = tmp_path / "big.json"
    body = json.dumps({**BASE, "system_prompt": ""})
    room = MAX_FILE_BYTES - len(body.encode())
    path.write_text(json.dumps({**BASE, "system_prompt": "x" * room}))
    assert path.stat().st_size == MAX_FILE_BYTES
    assert len(load_persona(path).value.system_prompt) == room  # the limit itself is accepted
    path.write_text(json.dumps({**BASE, "system_prompt": "x" * (room + 1)}))
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    assert info.value.render() == f"error: {path}: is larger than 1 MiB, the limit for this file"


@pytest.mark.parametrize("data,message", [
    (b'{"persona_name": "caf\xe9", "system_prompt": "x"}', "is not valid UTF-8 (byte 0xe9 at line 1)"),
    (b'{\n"system_prompt": "x",\n"context": "\xff"}', "is not valid UTF-8 (byte 0xff at line 3)"),
    ('{"system_prompt": "x"}'.encode("utf-16"), "is UTF-16 encoded; save it as UTF-8"),
    ('{"system_prompt": "x"}'.encode("utf-16-be"), "is not UTF-8 text (it has NUL bytes"),
    ('{"system_prompt": "x"}'.encode("utf-32"), "is UTF-32 encoded; save it as UTF-8"),
], ids=["latin-1", "line-3", "utf-16-bom", "utf-16-no-bom", "utf-32-bom"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    text = info.value.render()
    assert text.startswith(f"error: {path}: {message}") and "\n" not in text, text


def test_a_utf8_bom_is_skipped(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(BASE).encode())
    assert load_persona(path).value.persona_name == "T"


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(BASE))
    import os

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)  # chmod 000 does not stop root
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    assert info.value.render() == f"error: {path}: cannot read it: permission denied"


def test_a_directory_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_conversation(tmp_path)
    assert info.value.render() == f"error: {tmp_path}: is a directory, not a file"


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # json.loads itself gives up (RecursionError)
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    assert info.value.render() == (f"error: {path}: is nested too deeply "
                                   f"(more than {MAX_DEPTH} levels of arrays and objects)")
    nested: list = []  # one level
    for _ in range(MAX_DEPTH - 5):  # persona, layers, llm, extra_body: four more
        nested = [nested]
    data = with_layers(llm={"extra_body": {"x": nested}})
    assert persona_from_dict(data).value.layers.llm.extra_body  # MAX_DEPTH levels load
    data = with_layers(llm={"extra_body": {"x": [nested]}})
    with pytest.raises(ConfigError) as info:
        persona_from_dict(data)
    [problem] = info.value.problems
    assert problem.path.startswith("layers.llm.extra_body.x[0][0]") and "nested too deeply" in \
        problem.message


def test_a_deep_tool_schema_up_to_the_limit_still_loads():
    """A tool schema is the deepest legitimate part of a persona; its own limit
    (config.tool_schema.MAX_SCHEMA_DEPTH) is tighter than the document's (MAX_DEPTH)."""
    from config.tool_schema import MAX_SCHEMA_DEPTH

    def tool(levels: int) -> dict:
        schema: dict = {"type": "string", "enum": ["x"]}
        for _ in range(levels):  # two JSON levels each (the object, its properties)
            schema = {"type": "object", "properties": {"a": schema}}
        return {"type": "function", "function": {"name": "f", "description": "d",
                                                 "parameters": schema}}

    deepest = MAX_SCHEMA_DEPTH // 2 - 1
    persona = persona_from_dict(with_layers(llm={"tools": [tool(deepest)]})).value
    assert json.dumps(persona.model_dump(mode="json"))  # printed by --check
    with pytest.raises(ConfigError) as info:
        persona_from_dict(with_layers(llm={"tools": [tool(deepest + 2)]}))
    assert "nested more than" in info.value.render()


def test_huge_integer_is_one_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"system_prompt": "x", "n": ' + "1" * 5000 + "}")
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    assert info.value.render().startswith(f"error: {path}: invalid JSON: Exceeds the limit")


def test_lone_surrogates_are_refused_naming_the_path(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"persona_name": "\\ud800", "system_prompt": "x", '
                    '"context": "fine \\ud83d\\ude00", "layers": {"llm": {"headers": {"\\udc00k": "v"}}}}')
    with pytest.raises(ConfigError) as info:
        load_persona(path)
    problems = {p.path: p.message for p in info.value.problems}
    assert problems == {
        "layers.llm.headers.\\udc00k": "this key has a lone surrogate escape (\\udc00 without its "
                                       "pair), which is not text",
        "persona_name": "has a lone surrogate escape (\\ud800 without its pair), which is not text",
    }
    info.value.render().encode("utf-8")  # printable
    conv = {"conversational_context": "x\udfff"}
    with pytest.raises(ConfigError, match="conversational_context: has a lone surrogate"):
        conversation_from_dict(conv)
    # a pair is one character (the emoji): accepted
    assert persona_from_dict({**BASE, "persona_name": "Ava \ud83d\ude00".encode(
        "utf-16", "surrogatepass").decode("utf-16")}).value.persona_name == "Ava 😀"


def test_input_and_output_problems(tmp_path):
    import os

    from config.files import input_problem, output_problem
    from tests.conftest import unwritable_dir

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert input_problem(fifo) == "is a named pipe (FIFO), not a regular file"
    assert input_problem("/dev/null") == "is a device, not a regular file"
    assert input_problem(tmp_path / "nope") == "file not found"
    assert output_problem("/dev/null") is None and output_problem(fifo) is None  # fine outputs
    assert output_problem(tmp_path / "new" / "dirs" / "out.wav") is None  # created when written
    assert output_problem(tmp_path) == "is a directory, not a file"
    ro = unwritable_dir(tmp_path)
    assert output_problem(ro / "out.wav") == f"cannot be created: {ro} is not writable"
