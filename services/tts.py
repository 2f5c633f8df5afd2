"""TTS factories: Piper (embedded), Cartesia, ElevenLabs, OpenAI, Deepgram."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from loguru import logger

from config.persona import Persona
from config.settings import Settings
from services import voice_settings as vsmap
from services.language import LanguageChoice
from services.local.models import piper_voice
from pipeline.sentence_cut import clause_text_aggregator
from services.pipecat_seam import set_tts_text_aggregator, shared_piper_tts
from services.selection import EngineChoice, EngineSelectionError

DEFAULT_VOICES = {
    "cartesia": "71a7ad14-091c-4e8e-a314-022ece01c121",
    "elevenlabs": "21m00Tcm4TlvDq8ikWAM",
    "openai": "alloy",
    "deepgram": "aura-2-helena-en",
}


def _warn(mapped: vsmap.MappedVoice) -> None:
    for line in mapped.ignored:
        logger.warning(f"layers.tts.{line}")


def _voice(choice: EngineChoice, persona: Persona) -> str:
    return persona.layers.tts.external_voice_id or DEFAULT_VOICES[choice.engine]


def _settings_fields(choice: EngineChoice, persona: Persona, mapped: vsmap.MappedVoice) -> dict[str, Any]:
    """Voice, model and mapped voice settings as service settings fields (ignored ones warned)."""
    _warn(mapped)
    fields: dict[str, Any] = {"voice": _voice(choice, persona), **mapped.values}
    if persona.layers.tts.tts_model_name:
        fields["model"] = persona.layers.tts.tts_model_name
    return fields


def _require_language(engine: str, language: LanguageChoice, supported: set[str] | None):
    if language.multilingual:
        return
    if supported is not None and language.code not in supported:
        raise EngineSelectionError(
            f"conversation language {language.name!r} is not supported by the {engine} voice "
            f"(it speaks {sorted(supported)})"
        )


def _build_piper(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    from pipecat.services.piper.tts import PiperTTSService

    voice = piper_voice(settings.local_piper_voice)
    config = json.loads((voice.folder / f"{voice.voice_id}.onnx.json").read_text())
    voice_lang = str(config.get("language", {}).get("code", "en")).split("_")[0].lower()
    if language.multilingual or language.code != voice_lang:
        raise EngineSelectionError(
            f"conversation language {language.name!r} is not supported by the local Piper voice "
            f"{voice.voice_id!r} (language {voice_lang!r}): set CARTESIA_API_KEY or "
            "ELEVENLABS_API_KEY, or LOCAL_PIPER_VOICE to a voice in that language"
        )
    _warn(vsmap.for_piper(persona.layers.tts.voice_settings))
    tts = shared_piper_tts(
        download_dir=voice.folder,
        settings=PiperTTSService.Settings(voice=voice.voice_id),
    )
    # Piper synthesizes a whole text before any of its audio plays: the first clause of a
    # reply goes on its own, so the first audio does not wait for a long first sentence.
    set_tts_text_aggregator(tts, clause_text_aggregator)
    return tts


def _build_cartesia(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    from pipecat.services.cartesia.tts import CartesiaTTSService, GenerationConfig

    tts = persona.layers.tts
    mapped = vsmap.for_cartesia(tts.voice_settings)
    _warn(mapped)
    fields: dict[str, Any] = {"voice": _voice(choice, persona)}
    if tts.tts_model_name:
        fields["model"] = tts.tts_model_name
    if language.pipecat:
        fields["language"] = language.pipecat
    if mapped.values:
        fields["generation_config"] = GenerationConfig(**mapped.values)
    return CartesiaTTSService(
        api_key=choice.api_key or "", settings=CartesiaTTSService.Settings(**fields)
    )


def _build_elevenlabs(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    fields = _settings_fields(choice, persona, vsmap.for_elevenlabs(persona.layers.tts.voice_settings))
    if language.pipecat:
        fields["language"] = language.pipecat
    return ElevenLabsTTSService(
        api_key=choice.api_key or "", settings=ElevenLabsTTSService.Settings(**fields)
    )


def _build_openai(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    from pipecat.services.openai.tts import OpenAITTSService

    fields = _settings_fields(choice, persona, vsmap.for_openai(persona.layers.tts.voice_settings))
    return OpenAITTSService(api_key=choice.api_key, settings=OpenAITTSService.Settings(**fields))


def _build_deepgram(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    from pipecat.services.deepgram.tts import DeepgramTTSService

    tts = persona.layers.tts
    mapped = vsmap.for_deepgram(tts.voice_settings)
    _warn(mapped)
    voice = tts.tts_model_name or _voice(choice, persona)
    _require_language("deepgram", language, {"en", "es"})
    return DeepgramTTSService(
        api_key=choice.api_key or "", settings=DeepgramTTSService.Settings(voice=voice, **mapped.values)
    )


TTS_BUILDERS: dict[str, Callable[..., Any]] = {
    "piper": _build_piper,
    "cartesia": _build_cartesia,
    "elevenlabs": _build_elevenlabs,
    "openai": _build_openai,
    "deepgram": _build_deepgram,
}


def build_tts(choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings):
    """Build the Pipecat TTS service for ``choice``."""
    try:
        builder = TTS_BUILDERS[choice.engine]
    except KeyError:
        raise EngineSelectionError(f"unknown TTS engine {choice.engine!r}") from None
    return builder(choice, persona, language, settings)
