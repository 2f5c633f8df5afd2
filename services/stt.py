"""STT factories: one small builder per engine, imported lazily."""

from __future__ import annotations

import re
import threading
import functools
from collections.abc import Callable
from typing import Any

from config.persona import Persona
from config.settings import Settings
from services.language import LanguageChoice
from services.local.models import whisper_model_dir
from services.selection import EngineChoice, EngineSelectionError

# Words that never make useful key terms on their own.
_STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "he", "her", "his", "i",
    "in", "is", "it", "its", "my", "name", "of", "on", "or", "our", "she", "that", "the",
    "their", "they", "this", "to", "we", "with", "you", "your", "you're", "person", "speaking",
}


def hotwords_to_keyterms(hotwords: str | None) -> list[str]:
    """Turn Tavus ``hotwords`` (free text) into Deepgram key terms.

    Short comma/semicolon/newline-separated phrases are kept whole; from a long
    sentence such as "Roey is the name of the person you're speaking with" the
    capitalised or unusual words are kept ("Roey").
    """
    if not hotwords:
        return []
    terms: list[str] = []
    for phrase in re.split(r"[,;\n]+", hotwords):
        phrase = phrase.strip().strip(".!?\"'")
        if not phrase:
            continue
        words = phrase.split()
        if len(words) <= 3:
            terms.append(phrase)
            continue
        for word in words:
            clean = word.strip(".,!?\"'()")
            if not clean or clean.lower() in _STOPWORDS:
                continue
            if clean[0].isupper() or any(c.isdigit() for c in clean) or "-" in clean:
                terms.append(clean)
    seen: set[str] = set()
    unique = []
    for term in terms:
        if term.lower() not in seen:
            seen.add(term.lower())
            unique.append(term)
    return unique[:100]


# --------------------------------------------------------------------------- local whisper

_whisper_cache: dict[tuple[str, str, str], Any] = {}
_whisper_lock = threading.Lock()


class _FastTranscribe:
    """Wraps a faster-whisper model so every call decodes greedily without timestamps.

    Pipecat's ``WhisperSTTService`` uses faster-whisper's defaults (beam 5, with
    timestamps); greedy decoding is ~140 ms faster per turn on 2 cores with
    the same words on short utterances.
    """

    def __init__(self, model: Any):
        self._model = model

    def transcribe(self, audio, **kwargs):
        kwargs.setdefault("beam_size", 1)
        kwargs.setdefault("without_timestamps", True)
        kwargs.setdefault("condition_on_previous_text", False)
        return self._model.transcribe(audio, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def load_whisper_model(path: str, device: str = "cpu", compute_type: str = "int8") -> Any:
    """Load (once per process) and return a faster-whisper model."""
    from faster_whisper import WhisperModel

    key = (path, device, compute_type)
    with _whisper_lock:
        if key not in _whisper_cache:
            _whisper_cache[key] = _FastTranscribe(
                WhisperModel(path, device=device, compute_type=compute_type)
            )
        return _whisper_cache[key]


@functools.cache
def _local_whisper_class():
    from pipecat.services.whisper.stt import WhisperSTTService

    from services import pipecat_seam as seam
    from services.early_stt import EarlyTranscriptMixin

    class LocalWhisperSTTService(EarlyTranscriptMixin, WhisperSTTService):
        """``WhisperSTTService`` whose model is loaded once per process and shared, and
        which starts transcribing at a short pause (``services/early_stt.py``)."""

        def _load(self):  # Pipecat's hook, called by __init__ (see pipecat_seam)
            device, compute_type = seam.whisper_device_and_compute_type(self)
            seam.set_whisper_model(
                self, load_whisper_model(str(self.settings.model), device, compute_type))
            unsupported = seam.whisper_unsupported_language(self)
            if unsupported:
                raise ValueError(unsupported)

    return LocalWhisperSTTService


def _build_whisper(
    choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings
):
    path = whisper_model_dir(settings.local_whisper_model)
    model = load_whisper_model(path)
    if list(getattr(model, "supported_languages", None) or []) == ["en"]:
        if language.multilingual or language.code != "en":
            raise EngineSelectionError(
                f"conversation language {language.name!r} is not supported by the local Whisper "
                "model (English-only tiny.en): set DEEPGRAM_API_KEY, or LOCAL_WHISPER_MODEL to a "
                "multilingual faster-whisper model folder"
            )
    cls = _local_whisper_class()
    return cls(
        device="cpu",
        compute_type="int8",
        settings=cls.Settings(
            model=path,
            language=language.pipecat,
            no_speech_prob=0.6,
            initial_prompt=persona.layers.stt.hotwords or None,
        ),
    )


def _build_deepgram(
    choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings
):
    from pipecat.services.deepgram.stt import DeepgramSTTService

    keyterms = hotwords_to_keyterms(persona.layers.stt.hotwords)
    extra = {"keyterm": keyterms} if keyterms else {}
    return DeepgramSTTService(
        api_key=choice.api_key or "",
        settings=DeepgramSTTService.Settings(
            model=choice.model or "nova-3",
            language="multi" if language.multilingual else language.code,
            **extra,
        ),
    )


def _build_openai(
    choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings
):
    from pipecat.services.openai.stt import OpenAISTTService

    return OpenAISTTService(
        api_key=choice.api_key,
        settings=OpenAISTTService.Settings(
            model=choice.model or "gpt-4o-transcribe",
            language=language.pipecat,
            prompt=persona.layers.stt.hotwords or None,
        ),
    )


STT_BUILDERS: dict[str, Callable[..., Any]] = {
    "whisper": _build_whisper,
    "deepgram": _build_deepgram,
    "openai": _build_openai,
}


def build_stt(
    choice: EngineChoice, persona: Persona, language: LanguageChoice, settings: Settings
):
    """Build the Pipecat STT service for ``choice``."""
    try:
        builder = STT_BUILDERS[choice.engine]
    except KeyError:
        raise EngineSelectionError(f"unknown STT engine {choice.engine!r}") from None
    try:
        return builder(choice, persona, language, settings)
    except ValueError as exc:  # e.g. Whisper rejecting a language
        raise EngineSelectionError(f"STT ({choice.engine}): {exc}") from None
