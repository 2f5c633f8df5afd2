"""Tavus ``layers.tts.voice_settings`` -> each engine's own settings.

Spec 003 (TTS layer) documents speed as -1.0..1.0 for Cartesia (negative is
slower) and 0.7..1.2 for ElevenLabs, plus Cartesia emotion tags like
``positivity:high``. Current engines take a speed *multiplier* and (Cartesia
sonic-3) one emotion word, so we map:

| voice_settings | Cartesia (sonic-3) | ElevenLabs | OpenAI TTS | Deepgram Aura | Piper |
| --- | --- | --- | --- | --- | --- |
| speed name (slowest..fastest) | 0.6 / 0.8 / 1.0 / 1.2 / 1.5 | normal only -> 1.0 | same as Cartesia | clamped to 0.7-1.5 | ignored (warned) |
| speed -1.0..1.0 | 1 + 0.4*s below 0, 1 + 0.5*s above | (0.7-1.2 as given) | 1 + s | 1 + 0.5*s, clamped | ignored (warned) |
| emotion list | first tag -> one emotion word | ignored (warned) | ignored (warned) | ignored | ignored |
| stability, similarity_boost, style, use_speaker_boost | ignored (warned) | passed through | ignored | ignored | ignored |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.persona import VoiceSettings

SPEED_NAMES = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.2, "fastest": 1.5}

# Legacy Cartesia emotion dimensions -> sonic-3 emotion words.
_EMOTION_WORDS = {
    "positivity": {"lowest": "content", "low": "content", "": "happy", "high": "excited",
                   "highest": "excited"},
    "curiosity": {"": "curious"},
    "surprise": {"": "surprised"},
    "anger": {"": "angry"},
    "sadness": {"": "sad"},
}


@dataclass
class MappedVoice:
    """Engine settings derived from voice_settings, plus what was ignored."""

    values: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def relative_speed(speed: float | str | None, *, up: float = 0.5, down: float = 0.4) -> float | None:
    """A Tavus speed (name or -1..1) as a multiplier around 1.0."""
    if speed is None:
        return None
    if isinstance(speed, str):
        return SPEED_NAMES[speed]
    return 1.0 + (up * speed if speed >= 0 else down * speed)


def cartesia_emotion(tags: list[str] | None) -> str | None:
    """The first emotion tag as a sonic-3 emotion word (``positivity:high`` -> ``excited``)."""
    if not tags:
        return None
    name, _, level = tags[0].partition(":")
    words = _EMOTION_WORDS.get(name)
    if words is None:
        return name
    return words.get(level, words.get("", name))


def _ignored(vs: VoiceSettings, keep: set[str], engine: str) -> list[str]:
    data = vs.model_dump(exclude_none=True)
    return [f"voice_settings.{k} is not supported by {engine}; ignored" for k in data if k not in keep]


def for_cartesia(vs: VoiceSettings | None) -> MappedVoice:
    """Cartesia generation_config fields."""
    if vs is None:
        return MappedVoice()
    values: dict[str, Any] = {}
    speed = relative_speed(vs.speed)
    if speed is not None:
        values["speed"] = round(speed, 3)
    emotion = cartesia_emotion(vs.emotion)
    if emotion:
        values["emotion"] = emotion
    ignored = _ignored(vs, {"speed", "emotion"}, "cartesia")
    if vs.emotion and len(vs.emotion) > 1:
        ignored.append(f"voice_settings.emotion: sonic-3 takes one emotion; using {emotion!r}")
    return MappedVoice(values, ignored)


def for_elevenlabs(vs: VoiceSettings | None) -> MappedVoice:
    """ElevenLabs voice settings fields."""
    if vs is None:
        return MappedVoice()
    values: dict[str, Any] = {}
    if vs.speed is not None:
        values["speed"] = 1.0 if vs.speed == "normal" else float(vs.speed)
    for key in ("stability", "similarity_boost", "style", "use_speaker_boost"):
        value = getattr(vs, key)
        if value is not None:
            values[key] = value
    keep = {"speed", "stability", "similarity_boost", "style", "use_speaker_boost"}
    return MappedVoice(values, _ignored(vs, keep, "elevenlabs"))


def for_openai(vs: VoiceSettings | None) -> MappedVoice:
    """OpenAI TTS speed (0.25-4.0)."""
    if vs is None:
        return MappedVoice()
    values: dict[str, Any] = {}
    if vs.speed is not None:
        speed = relative_speed(vs.speed, up=1.0, down=0.5)
        values["speed"] = max(0.25, min(4.0, round(speed or 1.0, 3)))
    return MappedVoice(values, _ignored(vs, {"speed"}, "openai"))


def for_deepgram(vs: VoiceSettings | None) -> MappedVoice:
    """Deepgram Aura speed (0.7-1.5)."""
    if vs is None:
        return MappedVoice()
    values: dict[str, Any] = {}
    if vs.speed is not None:
        values["speed"] = max(0.7, min(1.5, round(relative_speed(vs.speed) or 1.0, 3)))
    return MappedVoice(values, _ignored(vs, {"speed"}, "deepgram"))


def for_piper(vs: VoiceSettings | None) -> MappedVoice:
    """Piper takes no voice settings here."""
    if vs is None:
        return MappedVoice()
    return MappedVoice({}, _ignored(vs, set(), "piper"))
