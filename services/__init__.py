"""Services: engine selection and one factory per layer.

``build_services`` turns an :class:`~services.selection.EnginePlan` into the
Pipecat services of one conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.conversation import ConversationRequest
from config.persona import Persona
from config.settings import Settings
from services.language import conversation_language
from services.selection import EngineChoice, EnginePlan, EngineSelectionError, select_engines

__all__ = [
    "EngineChoice",
    "EnginePlan",
    "EngineSelectionError",
    "Services",
    "build_services",
    "select_engines",
]


@dataclass
class Services:
    """The Pipecat services of one conversation (``None`` for a layer not used)."""

    plan: EnginePlan
    stt: Any = None
    llm: Any = None
    tts: Any = None

    async def ready(self) -> None:
        """Wait until embedded servers (the local LLM) answer; raises if they cannot start."""
        server = getattr(self.llm, "local_server", None)
        if server is not None:
            await server.wait_ready()


def build_services(
    plan: EnginePlan,
    persona: Persona,
    conversation: ConversationRequest | None,
    settings: Settings,
    *,
    stt: bool = True,
    llm: bool = True,
    tts: bool = True,
    system_instruction: str | None = None,
) -> Services:
    """Build the requested layers' services for ``plan``.

    ``system_instruction`` is the composed system prompt (see ``config.prompt``).
    """
    from services.llm import build_llm
    from services.stt import build_stt
    from services.tts import build_tts

    language = conversation_language(conversation)
    out = Services(plan=plan)
    if stt:
        out.stt = build_stt(plan.stt, persona, language, settings)
    if llm:
        out.llm = build_llm(plan.llm, persona, settings, system_instruction)
    if tts:
        out.tts = build_tts(plan.tts, persona, language, settings)
    return out
