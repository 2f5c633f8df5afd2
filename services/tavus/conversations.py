"""Tavus conversations we open, and the guarantee that each is ended exactly once.

Tavus bills while a conversation is open, so every conversation we create is
ended exactly once: by the Pipecat client when the pipeline stops or is
cancelled, by :meth:`TavusConversation.end` in the session's ``finally``, and,
for what those miss (an unhandled exit), by an ``atexit`` hook registered when
the first conversation is opened. A SIGKILL cannot be caught: the
conversation's ``max_call_duration`` and participant timeouts, sent to Tavus at
creation, bound what it can cost.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from services.rest import ApiError
from services.tavus.api import PIPECAT_PERSONA_ID, TavusAPI
from services.tavus.plan import RendererPlan

_OPEN: dict[str, tuple[str, str]] = {}  # conversation_id -> (base_url, api_key)
_OPEN_LOCK = threading.Lock()
_HOOKED = False


def open_conversations() -> list[str]:
    """Tavus conversations this process created and has not ended yet."""
    with _OPEN_LOCK:
        return list(_OPEN)


def end_leftovers() -> None:
    """atexit: end what is still open, synchronously (the event loop is gone by now)."""
    with _OPEN_LOCK:
        leftovers = dict(_OPEN)
        _OPEN.clear()
    for conversation_id, (base_url, api_key) in leftovers.items():
        request = urllib.request.Request(
            f"{base_url}/conversations/{conversation_id}/end", method="POST", data=b"",
            headers={"x-api-key": api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
            logger.info(f"Ended Tavus conversation {conversation_id} (at exit)")
        except Exception as exc:  # noqa: BLE001 - last resort, report and go on
            logger.error(f"Could not end Tavus conversation {conversation_id} at exit: {exc}")




def track(conversation_id: str, base_url: str, api_key: str) -> None:
    """Remember an open conversation until it is ended (the exit hook ends what is left)."""
    global _HOOKED
    with _OPEN_LOCK:
        if not _HOOKED:
            atexit.register(end_leftovers)
            _HOOKED = True
        _OPEN[conversation_id] = (base_url, api_key)



@dataclass
class TavusConversation:
    """One Tavus conversation we opened; :meth:`end` is idempotent."""

    api: TavusAPI
    conversation_id: str
    conversation_url: str
    replica_id: str
    meeting_token: str | None = None
    ended: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def join_url(self) -> str:
        """The URL a user opens (carries the meeting token of a private room)."""
        if self.meeting_token:
            sep = "&" if "?" in self.conversation_url else "?"
            return f"{self.conversation_url}{sep}t={self.meeting_token}"
        return self.conversation_url

    async def end(self, reason: str) -> None:
        """End it on Tavus (once). On failure it stays registered for the atexit hook."""
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            try:
                await self.api.end_conversation(self.conversation_id)
            except ApiError as exc:
                if exc.status != 404:
                    logger.error(f"Could not end Tavus conversation {self.conversation_id}: {exc}")
                    return
                logger.info(f"Tavus conversation {self.conversation_id} was already ended")
            with _OPEN_LOCK:
                _OPEN.pop(self.conversation_id, None)
            logger.info(f"Ended Tavus conversation {self.conversation_id} ({reason})")


def conversation_body(plan: RendererPlan, conversation: Any, persona_name: str) -> dict:
    """The create-conversation body for a Pipecat-rendered conversation.

    Tavus runs no pipeline of its own (``pipecat0``), so the persona's prompt,
    greeting, context and callbacks stay with us. Call duration and participant
    timeouts go to Tavus too, so a conversation whose bot died is still ended.
    In ``transport`` mode the user joins the Tavus room: ``require_auth`` and
    ``max_participants`` apply to it. In ``video`` mode only the bot and the
    replica are in it (``max_participants`` 2).
    """
    props = conversation.properties
    body: dict[str, Any] = {
        "replica_id": plan.replica_id,
        "persona_id": PIPECAT_PERSONA_ID,
        "conversation_name": conversation.conversation_name or f"{persona_name} (Pipecat)",
        "properties": {
            "max_call_duration": props.max_call_duration,
            "participant_left_timeout": props.participant_left_timeout,
            "participant_absent_timeout": props.participant_absent_timeout,
            "apply_greenscreen": props.apply_greenscreen,
        },
    }
    if plan.mode == "transport":
        if conversation.require_auth:
            body["require_auth"] = True
        if conversation.max_participants:
            body["max_participants"] = conversation.max_participants
    else:
        body["max_participants"] = 2
    return body


async def open_conversation(
    api: TavusAPI, plan: RendererPlan, conversation: Any, persona_name: str
) -> TavusConversation:
    """Create the Tavus conversation (registered for ending before anything else can fail)."""
    response = await api.create_conversation(conversation_body(plan, conversation, persona_name))
    conv = TavusConversation(
        api=api,
        conversation_id=response["conversation_id"],
        conversation_url=response["conversation_url"],
        replica_id=plan.replica_id or "",
        meeting_token=response.get("meeting_token"),
    )
    track(conv.conversation_id, api.base_url, api.api_key)
    logger.info(f"Created Tavus conversation {conv.conversation_id} (replica {conv.replica_id})")
    return conv
