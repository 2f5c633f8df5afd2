"""Engine selection rules: explicit engine (key required), env key, embedded default."""

from __future__ import annotations

import copy

import pytest

from config import Settings, persona_from_dict
from services.selection import EngineSelectionError, select_engines

BASE = {"system_prompt": "You are T."}


def persona(**layers):
    data = copy.deepcopy(BASE)
    data["layers"] = layers
    return persona_from_dict(data).value


def plan(p, env=None, force_local=False):
    return select_engines(p, Settings.from_env(env or {}), force_local=force_local)


def engines(result):
    return (result.stt.engine, result.llm.engine, result.tts.engine)


def test_no_keys_means_embedded_everything():
    result = plan(persona())
    assert engines(result) == ("whisper", "llama-local", "piper")
    assert result.uses_local
    assert "OPENAI_API_KEY is not set" in result.llm.reason


def test_keys_in_env_select_cloud_engines():
    env = {"DEEPGRAM_API_KEY": "dg", "OPENAI_API_KEY": "sk", "CARTESIA_API_KEY": "ca"}
    result = plan(persona(), env)
    assert engines(result) == ("deepgram", "openai", "cartesia")
    assert result.llm.model == "gpt-4.1-mini" and result.llm.api_key == "sk"
    assert "DEEPGRAM_API_KEY is set" in result.stt.reason


def test_elevenlabs_key_alone_selects_elevenlabs():
    assert plan(persona(), {"ELEVENLABS_API_KEY": "el"}).tts.engine == "elevenlabs"


def test_force_local_ignores_keys_and_explicit_engines():
    env = {"DEEPGRAM_API_KEY": "dg", "OPENAI_API_KEY": "sk", "CARTESIA_API_KEY": "ca"}
    p = persona(tts={"tts_engine": "cartesia"}, llm={"model": "gpt-4.1"})
    assert engines(plan(p, env, force_local=True)) == ("whisper", "llama-local", "piper")


@pytest.mark.parametrize("layers,variable", [
    ({"tts": {"tts_engine": "cartesia"}}, "CARTESIA_API_KEY"),
    ({"tts": {"tts_engine": "elevenlabs"}}, "ELEVENLABS_API_KEY"),
    ({"tts": {"tts_engine": "openai"}}, "OPENAI_API_KEY"),
    ({"tts": {"tts_engine": "deepgram"}}, "DEEPGRAM_API_KEY"),
    ({"stt": {"stt_engine": "deepgram"}}, "DEEPGRAM_API_KEY"),
    ({"stt": {"stt_engine": "tavus-deepgram-medical"}}, "DEEPGRAM_API_KEY"),
    ({"llm": {"model": "gpt-4.1"}}, "OPENAI_API_KEY"),
])
def test_explicit_engine_without_key_is_a_clear_error(layers, variable):
    with pytest.raises(EngineSelectionError) as info:
        plan(persona(**layers))
    message = str(info.value)
    assert variable in message and "--local" in message


def test_all_missing_keys_are_reported_together():
    p = persona(tts={"tts_engine": "cartesia"}, stt={"stt_engine": "deepgram"})
    with pytest.raises(EngineSelectionError) as info:
        plan(p)
    assert "CARTESIA_API_KEY" in str(info.value) and "DEEPGRAM_API_KEY" in str(info.value)


def test_persona_key_stands_in_for_env_key():
    p = persona(tts={"tts_engine": "elevenlabs", "api_key": "persona-key"},
                llm={"model": "gpt-4.1", "api_key": "persona-llm-key"})
    result = plan(p)
    assert result.tts.api_key == "persona-key" and result.llm.api_key == "persona-llm-key"
    assert "persona-key" not in repr(result)  # keys never in reprs or descriptions
    assert all("persona" not in c.describe() or "key" not in c.describe() for c in result.choices())


def test_base_url_selects_openai_compatible_and_needs_a_model():
    p = persona(llm={"model": "llama3", "base_url": "http://127.0.0.1:11434/v1"})
    result = plan(p, {"OPENAI_API_KEY": "sk"})
    assert result.llm.engine == "openai-compatible" and result.llm.model == "llama3"
    with pytest.raises(EngineSelectionError, match="layers.llm.model"):
        plan(persona(llm={"base_url": "http://127.0.0.1:11434/v1"}))


def test_tavus_hosted_model_falls_back():
    p = persona(llm={"model": "tavus-gpt-oss"})
    assert plan(p).llm.engine == "llama-local"
    result = plan(p, {"OPENAI_API_KEY": "sk", "OPENAI_MODEL": "gpt-4o"})
    assert result.llm.engine == "openai" and result.llm.model == "gpt-4o"
    assert "tavus-gpt-oss is Tavus-hosted" in result.llm.reason


@pytest.mark.parametrize("name", ["tavus-auto", "tavus-parakeet", "tavus-soniox",
                                  "tavus-advanced", "tavus-turbo"])
def test_tavus_stt_names_map_to_deepgram_or_whisper(name):
    p = persona(stt={"stt_engine": name})
    assert plan(p).stt.engine == "whisper"
    assert plan(p, {"DEEPGRAM_API_KEY": "dg"}).stt.engine == "deepgram"


def test_tavus_whisper_maps_to_openai_transcription_when_keyed():
    p = persona(stt={"stt_engine": "tavus-whisper"})
    assert plan(p).stt.engine == "whisper"
    result = plan(p, {"OPENAI_API_KEY": "sk"})
    assert (result.stt.engine, result.stt.model) == ("openai", "gpt-4o-transcribe")


def test_medical_model():
    result = plan(persona(stt={"stt_engine": "tavus-deepgram-medical"}), {"DEEPGRAM_API_KEY": "dg"})
    assert (result.stt.engine, result.stt.model) == ("deepgram", "nova-3-medical")


def test_settings_reject_bad_numbers():
    from config import ConfigError

    with pytest.raises(ConfigError, match="LLAMA_SERVER_THREADS"):
        Settings.from_env({"LLAMA_SERVER_THREADS": "many"})


def test_local_model_overrides_are_named():
    env = {"LOCAL_LLM_GGUF": "/models/qwen2.5-1.5b.gguf", "LOCAL_WHISPER_MODEL": "/models/base/",
           "LOCAL_PIPER_VOICE": "/voices/de_DE-thorsten.onnx"}
    result = plan(persona(), env)
    assert result.llm.model == "qwen2.5-1.5b.gguf (override)"
    assert result.stt.model == "base (override)"
    assert result.tts.model == "de_DE-thorsten.onnx (override)"
