"""Which renderer a run uses: ``--renderer auto|video|transport|none`` and the replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loguru import logger

from services.tavus.api import TavusError

RENDERERS = ("auto", "video", "transport", "none")


def resolve_replica(conversation: Any, persona: Any, settings: Any) -> tuple[str | None, str]:
    """The replica: conversation ``replica_id``, else persona ``default_replica_id``, else TAVUS_REPLICA_ID."""
    if conversation.replica_id:
        return conversation.replica_id, "conversation replica_id"
    if persona.default_replica_id:
        return persona.default_replica_id, "persona default_replica_id"
    if settings.tavus_replica_id:
        return settings.tavus_replica_id, "TAVUS_REPLICA_ID"
    return None, ""


@dataclass(frozen=True)
class RendererPlan:
    """Which renderer a run uses and why."""

    mode: str  # "video" | "transport" | "none"
    replica_id: str | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.mode == "none":
            return f"RENDERER -> none (audio only): {self.reason}"
        name = "TavusVideoService" if self.mode == "video" else "TavusTransport"
        return f"RENDERER -> {name}, replica {self.replica_id} ({self.reason})"


def plan_renderer(requested: str, conversation: Any, persona: Any, settings: Any) -> RendererPlan:
    """Choose the renderer. ``requested`` is the ``--renderer`` flag (``auto`` by default).

    ``auto``: Tavus video when ``TAVUS_API_KEY`` and a replica are known and the
    conversation is not ``audio_only``; otherwise none. Asking for ``video`` or
    ``transport`` explicitly without a key or a replica is an error.
    """
    if requested not in RENDERERS:
        raise TavusError(f"--renderer must be one of {', '.join(RENDERERS)} (got {requested!r})")
    replica, source = resolve_replica(conversation, persona, settings)
    if requested == "none":
        return RendererPlan("none", reason="--renderer none")
    if conversation.audio_only:
        if requested != "auto":
            raise TavusError(
                f"--renderer {requested} needs video, but the conversation is audio_only; "
                "drop one of them"
            )
        return RendererPlan("none", reason="the conversation is audio_only")
    if not settings.tavus_api_key:
        if requested != "auto":
            raise TavusError(f"--renderer {requested} needs TAVUS_API_KEY (set it in the environment or .env)")
        return RendererPlan("none", reason="no TAVUS_API_KEY")
    if not replica:
        message = (
            "no Tavus replica: set replica_id in the --conversation file, default_replica_id "
            "in the persona, or TAVUS_REPLICA_ID"
        )
        if requested != "auto":
            raise TavusError(f"--renderer {requested}: {message}")
        logger.warning(f"TAVUS_API_KEY is set but {message}; running audio only")
        return RendererPlan("none", reason="TAVUS_API_KEY is set but no replica is known")
    mode = "video" if requested == "auto" else requested
    return RendererPlan(mode, replica, source)
