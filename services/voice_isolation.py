"""``conversational_flow.voice_isolation`` -> a noise-suppression filter on participant audio.

``near`` (Tavus's default) runs RNNoise (``pipecat-ai[rnnoise]``: the pyrnnoise
wheel ships librnnoise and its model, so it works offline) on the transport
input, before VAD and STT. ``off`` sends raw audio down the pipeline. Tavus's
own model is tuned for a speaker within a metre of the microphone; RNNoise
is a general speech denoiser, the closest local equivalent.
"""

from __future__ import annotations

from typing import Any

from config.persona import Persona


def voice_isolation(persona: Persona) -> str:
    """``near`` or ``off`` (absent layer or field: ``near``, as on Tavus)."""
    flow = persona.layers.conversational_flow
    return (flow.voice_isolation if flow else None) or "near"


def input_filter(persona: Persona) -> Any | None:
    """A fresh audio filter for one transport input, or None."""
    if voice_isolation(persona) != "near":
        return None
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

    return RNNoiseFilter()
