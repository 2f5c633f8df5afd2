"""``conversational_flow.voice_isolation`` -> a noise-suppression filter on participant audio.

``near`` (Tavus's default) runs RNNoise (``pipecat-ai[rnnoise]``: the pyrnnoise
wheel ships librnnoise and its model, so it works offline) on the transport
input, before VAD and STT. ``off`` sends raw audio down the pipeline. Tavus's
own model is tuned for a speaker within a metre of the microphone; RNNoise
is a general speech denoiser, the closest local equivalent.
"""

from __future__ import annotations

from typing import Any

from config.options import FlowOptions


def input_filter(flow: FlowOptions) -> Any | None:
    """A fresh audio filter for one transport input, or None (``voice_isolation: off``)."""
    if flow.voice_isolation != "near":
        return None
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

    return RNNoiseFilter()
