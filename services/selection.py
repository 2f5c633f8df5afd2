"""Engine selection: which STT, LLM and TTS engine each persona layer runs on, and why.

Rules, per layer, in order:

1. ``--local`` forces the embedded engine on every layer.
2. An engine the persona names explicitly; its key missing is a start-up
   error naming the variable (never a silent fallback).
3. Else the cloud engine whose key is in the environment.
4. Else the embedded local engine.

Tavus-hosted names (``tavus-*`` STT engines and LLM models) cannot run
outside Tavus; they map to the closest engine available here (see the
README's engine table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from config.errors import AgentError
from config.persona import Persona
from config.settings import Settings

Layer = Literal["stt", "llm", "tts"]


class EngineSelectionError(AgentError):
    """A persona asks for an engine that cannot run here (usually a missing key)."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine chosen for one layer."""

    layer: Layer
    engine: str
    reason: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed

    def describe(self) -> str:
        """One human line without secrets."""
        model = f" (model {self.model})" if self.model else ""
        return f"{self.layer.upper():3} -> {self.engine}{model}: {self.reason}"


@dataclass(frozen=True)
class EnginePlan:
    """The engines of one conversation."""

    stt: EngineChoice
    llm: EngineChoice
    tts: EngineChoice

    def choices(self) -> list[EngineChoice]:
        """All three choices, in pipeline order."""
        return [self.stt, self.llm, self.tts]

    @property
    def uses_local(self) -> bool:
        """True when any layer runs an embedded model."""
        return any(c.engine in LOCAL_ENGINES for c in self.choices())


LOCAL_ENGINES = {"whisper", "llama-local", "piper"}

# Key variables of each cloud engine (persona api_key fields may stand in for some).
ENGINE_KEY = {
    "deepgram": "deepgram_api_key",
    "openai": "openai_api_key",
    "cartesia": "cartesia_api_key",
    "elevenlabs": "elevenlabs_api_key",
}

# Tavus STT engine names -> what runs here. First: engine when its key is set; second: fallback.
TAVUS_STT_MAP: dict[str, tuple[str, str | None, str]] = {
    "tavus-auto": ("deepgram", "nova-3", "Tavus's automatic choice"),
    "tavus-parakeet": ("deepgram", "nova-3", "low-latency English/European STT"),
    "tavus-advanced": ("deepgram", "nova-3", "Tavus's deprecated advanced engine"),
    "tavus-turbo": ("deepgram", "nova-3", "Tavus's legacy turbo engine"),
    "tavus-soniox": ("deepgram", "nova-3", "broad multilingual coverage"),
    "tavus-whisper": ("openai", "gpt-4o-transcribe", "Whisper-family multilingual STT"),
}


def _local_model(settings: Settings, layer: Layer) -> str:
    """The embedded model's name for ``--check``: the bundled one or the override's file name."""
    override = {"stt": settings.local_whisper_model, "llm": settings.local_llm_gguf,
                "tts": settings.local_piper_voice}[layer]
    if override:
        return f"{override.rstrip('/').rsplit('/', 1)[-1]} (override)"
    return {"stt": "tiny.en", "llm": "SmolLM2-135M-Instruct (llama.cpp)",
            "tts": "en_US-joe-medium"}[layer]


def _key(settings: Settings, engine: str) -> str | None:
    field = ENGINE_KEY.get(engine)
    return getattr(settings, field) if field else None


def _missing_key(layer_path: str, engine: str, persona_key_field: str | None) -> EngineSelectionError:
    var = Settings.env_name(ENGINE_KEY[engine])
    where = f"set {var} in the environment (.env)"
    if persona_key_field:
        where += f" or {persona_key_field} in the persona"
    return EngineSelectionError(
        f"{layer_path} asks for {engine!r} but no {engine} API key is set: {where}, "
        "or run with --local to use the embedded models"
    )


def select_stt(persona: Persona, settings: Settings, force_local: bool) -> EngineChoice:
    """Choose the STT engine."""
    requested = persona.layers.stt.stt_engine
    if force_local:
        return EngineChoice("stt", "whisper", "--local: embedded faster-whisper", _local_model(settings, "stt"))
    if requested in ("deepgram", "openai"):
        key = _key(settings, requested)
        if not key:
            raise _missing_key("layers.stt.stt_engine", requested, None)
        model = "nova-3" if requested == "deepgram" else "gpt-4o-transcribe"
        return EngineChoice("stt", requested, "named in the persona", model, key)
    if requested == "whisper":
        return EngineChoice("stt", "whisper", "named in the persona", _local_model(settings, "stt"))
    if requested == "tavus-deepgram-medical":
        key = settings.deepgram_api_key
        if not key:
            raise _missing_key("layers.stt.stt_engine 'tavus-deepgram-medical'", "deepgram", None)
        return EngineChoice(
            "stt", "deepgram", "tavus-deepgram-medical -> Deepgram's medical model",
            "nova-3-medical", key,
        )
    if requested in TAVUS_STT_MAP:
        engine, model, what = TAVUS_STT_MAP[requested]
        key = _key(settings, engine)
        if key:
            return EngineChoice(
                "stt", engine, f"{requested} ({what}) -> {engine}, its key is set", model, key
            )
        return EngineChoice(
            "stt", "whisper",
            f"{requested} ({what}) -> embedded faster-whisper: no {Settings.env_name(ENGINE_KEY[engine])}",
            _local_model(settings, "stt"),
        )
    if settings.deepgram_api_key:
        return EngineChoice(
            "stt", "deepgram", "no engine named; DEEPGRAM_API_KEY is set", "nova-3",
            settings.deepgram_api_key,
        )
    return EngineChoice(
        "stt", "whisper", "no engine named and no STT key set: embedded faster-whisper",
        _local_model(settings, "stt"),
    )


def select_llm(persona: Persona, settings: Settings, force_local: bool) -> EngineChoice:
    """Choose the LLM engine."""
    llm = persona.layers.llm
    local = EngineChoice("llm", "llama-local", "", _local_model(settings, "llm"))
    if force_local:
        return EngineChoice("llm", local.engine, "--local: embedded llama.cpp server", local.model)
    if llm.base_url:
        if not llm.model:
            raise EngineSelectionError(
                "layers.llm.base_url is set but layers.llm.model is not: name the model "
                "your OpenAI-compatible server should run"
            )
        return EngineChoice(
            "llm", "openai-compatible", f"layers.llm.base_url is set ({llm.base_url})",
            llm.model, llm.api_key,
        )
    if llm.model and not llm.is_tavus_model:
        key = llm.api_key or settings.openai_api_key
        if not key:
            raise _missing_key(f"layers.llm.model {llm.model!r}", "openai", "layers.llm.api_key")
        return EngineChoice("llm", "openai", "model named in the persona", llm.model, key)
    why = f"{llm.model} is Tavus-hosted" if llm.model else "no model named"
    if settings.openai_api_key:
        return EngineChoice(
            "llm", "openai", f"{why}; OPENAI_API_KEY is set (OPENAI_MODEL)",
            settings.openai_model, settings.openai_api_key,
        )
    return EngineChoice(
        "llm", local.engine, f"{why} and OPENAI_API_KEY is not set: embedded llama.cpp server",
        local.model,
    )


def select_tts(persona: Persona, settings: Settings, force_local: bool) -> EngineChoice:
    """Choose the TTS engine."""
    tts = persona.layers.tts
    if force_local:
        return EngineChoice("tts", "piper", "--local: embedded Piper voice", _local_model(settings, "tts"))
    requested = tts.tts_engine
    if requested == "piper":
        return EngineChoice("tts", "piper", "named in the persona", _local_model(settings, "tts"))
    if requested:
        key = tts.api_key or _key(settings, requested)
        if not key:
            raise _missing_key("layers.tts.tts_engine", requested, "layers.tts.api_key")
        return EngineChoice("tts", requested, "named in the persona", tts.tts_model_name, key)
    for engine in ("cartesia", "elevenlabs"):
        key = _key(settings, engine)
        if key:
            var = Settings.env_name(ENGINE_KEY[engine])
            return EngineChoice(
                "tts", engine, f"no engine named; {var} is set", tts.tts_model_name, key
            )
    return EngineChoice(
        "tts", "piper", "no engine named and no TTS key set: embedded Piper voice",
        _local_model(settings, "tts"),
    )


def select_engines(persona: Persona, settings: Settings, *, force_local: bool = False) -> EnginePlan:
    """Choose every layer's engine; raise :class:`EngineSelectionError` listing all problems.

    Language support is checked by the factories, which know each engine's languages.
    """
    problems: list[str] = []
    chosen: dict[str, EngineChoice] = {}
    for layer, select in (("stt", select_stt), ("llm", select_llm), ("tts", select_tts)):
        try:
            chosen[layer] = select(persona, settings, force_local)
        except EngineSelectionError as exc:
            problems.append(str(exc))
    if problems:
        raise EngineSelectionError("\n".join(problems))
    return EnginePlan(**chosen)
