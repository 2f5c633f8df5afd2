"""Tavus: the REST API, the conversation lifecycle, and the two Pipecat renderers.

With Pipecat, Tavus only renders: we create a Tavus conversation with the
``pipecat0`` persona (Tavus lip-syncs the audio we send it over
``conversation.echo``) and either

* ``video`` — :class:`TavusVideoRenderer`, Pipecat's ``TavusVideoService``:
  the bot sits in the Tavus room with the replica, sends it our TTS audio and
  forwards the replica's video and audio to the user in *our* room (the local
  page or Daily); or
* ``transport`` — :class:`PersonaTavusTransport`, Pipecat's ``TavusTransport``:
  the bot joins the room Tavus creates, and the user joins it through the
  printed conversation URL.

Tavus bills while a conversation is open, so every conversation we create is
ended exactly once: by the Pipecat client when the pipeline stops or is
cancelled, by :meth:`TavusConversation.end` in the session's ``finally``, and,
for what those miss (an unhandled exit), by an ``atexit`` hook. A SIGKILL
cannot be caught: the conversation's ``max_call_duration`` and participant
timeouts, sent to Tavus at creation, bound what it can cost.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from loguru import logger
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.tavus.video import TavusVideoService
from pipecat.transports.tavus.transport import (
    TavusApi,
    TavusCallbacks,
    TavusParams,
    TavusTransport,
    TavusTransportClient,
)

from services.rest import ApiError, RestClient

# Tavus's persona for Pipecat: render the audio we send, run no pipeline of its own.
PIPECAT_PERSONA_ID = "pipecat0"
RENDERERS = ("auto", "video", "transport", "none")


class TavusError(RuntimeError):
    """Tavus cannot be used as configured (no key, no replica, an API error)."""


class TavusAPI:
    """The Tavus v2 REST endpoints we use (``x-api-key`` auth, JSON bodies)."""

    def __init__(self, api_key: str, base_url: str, session: aiohttp.ClientSession, **retry: Any):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.rest = RestClient(
            "Tavus", self.base_url,
            {"x-api-key": api_key, "Content-Type": "application/json"},
            session, "TAVUS_API_KEY", **retry,
        )

    async def get_persona(self, persona_id: str) -> dict:
        return await self.rest.request("GET", f"personas/{persona_id}", what=f"persona {persona_id!r}")

    async def get_replica(self, replica_id: str) -> dict:
        return await self.rest.request("GET", f"replicas/{replica_id}", what=f"replica {replica_id!r}")

    async def get_objectives(self, objectives_id: str) -> dict:
        return await self.rest.request(
            "GET", f"objectives/{objectives_id}", what=f"objectives {objectives_id!r}"
        )

    async def get_guardrails(self, guardrails_id: str) -> dict:
        return await self.rest.request(
            "GET", f"guardrails/{guardrails_id}", what=f"guardrails {guardrails_id!r}"
        )

    async def create_conversation(self, body: dict) -> dict:
        result = await self.rest.request("POST", "conversations", json=body, what="create conversation")
        if not isinstance(result, dict) or not result.get("conversation_id") or not result.get(
            "conversation_url"
        ):
            raise ApiError("Tavus: create conversation answered without conversation_id/conversation_url")
        return result

    async def end_conversation(self, conversation_id: str) -> None:
        await self.rest.request(
            "POST", f"conversations/{conversation_id}/end", what=f"end conversation {conversation_id}"
        )


# --------------------------------------------------------------------------- lifecycle

_OPEN: dict[str, tuple[str, str]] = {}  # conversation_id -> (base_url, api_key)
_OPEN_LOCK = threading.Lock()


def open_conversations() -> list[str]:
    """Tavus conversations this process created and has not ended yet."""
    with _OPEN_LOCK:
        return list(_OPEN)


def _end_leftovers() -> None:
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


atexit.register(_end_leftovers)


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
    with _OPEN_LOCK:
        _OPEN[conv.conversation_id] = (api.base_url, api.api_key)
    logger.info(f"Created Tavus conversation {conv.conversation_id} (replica {conv.replica_id})")
    return conv


# --------------------------------------------------------------------------- Pipecat integration


class _ConversationApi(TavusApi):
    """What Pipecat's Tavus client calls, bound to the conversation we already created.

    Creating it up front turns a bad key or replica into a clear error at start
    (Pipecat's client would log it and carry on without video), and puts the
    end of the conversation under our control.
    """

    def __init__(self, conversation: TavusConversation, session: aiohttp.ClientSession):
        super().__init__(conversation.api.api_key, session)
        self._conversation = conversation
        self._persona_names: dict[str, str] = {}

    async def create_conversation(self, replica_id: str, persona_id: str) -> dict:
        return {
            "conversation_id": self._conversation.conversation_id,
            "conversation_url": self._conversation.conversation_url,
        }

    async def end_conversation(self, conversation_id: str):
        await self._conversation.end("the pipeline stopped")

    async def get_persona_name(self, persona_id: str) -> str:
        """The replica's participant name (TavusTransport tells it from the user's by it)."""
        if persona_id not in self._persona_names:
            try:
                persona = await self._conversation.api.get_persona(persona_id)
                self._persona_names[persona_id] = str(persona.get("persona_name", ""))
            except ApiError as exc:
                logger.warning(f"{exc}; the replica participant cannot be told apart by name")
                self._persona_names[persona_id] = ""
        return self._persona_names[persona_id]


class PersonaTavusClient(TavusTransportClient):
    """Pipecat's ``TavusTransportClient`` on our conversation: joins with its meeting token,
    and reports a failed join instead of carrying on without a replica."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 on_fatal=None, **kwargs: Any):
        super().__init__(api_key=conversation.api.api_key, replica_id=conversation.replica_id,
                         persona_id=PIPECAT_PERSONA_ID, session=session, **kwargs)
        self._api = _ConversationApi(conversation, session)
        self._conversation = conversation
        self._on_fatal = on_fatal

    async def setup(self, setup):  # not @acquires: the parent's setup holds that lock
        await super().setup(setup)
        if self._client is None:
            await self._fatal("could not set up the client for the Tavus room")
        elif self._conversation.meeting_token:
            self._client._token = self._conversation.meeting_token  # private room: join with its token

    async def _fatal(self, message: str) -> None:
        logger.error(f"Tavus conversation {self._conversation.conversation_id}: {message}")
        if self._on_fatal:
            await self._on_fatal(message)

    async def _on_handle_callback(self, event_name, *args, **kwargs):
        if event_name == "on_error" and args and str(args[0]).startswith("Error joining"):
            await self._fatal(f"could not join the Tavus room: {args[0]}")
            return
        if event_name == "on_error":
            logger.error(f"Tavus room: {args[0] if args else 'error'}")
        await super()._on_handle_callback(event_name, *args, **kwargs)


class TavusVideoRenderer(TavusVideoService):
    """``TavusVideoService`` on a conversation we created; a failed join stops the pipeline."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 bot_name: str, on_failure=None, **kwargs: Any):
        super().__init__(api_key=conversation.api.api_key, replica_id=conversation.replica_id,
                         session=session, **kwargs)
        self._conversation = conversation
        self._bot_name = bot_name
        self._on_failure = on_failure  # called with the message when the replica cannot render
        self._failure: str | None = None
        self._started = False

    @property
    def conversation(self) -> TavusConversation:
        return self._conversation

    async def setup(self, setup):
        from pipecat.services.ai_service import AIService

        await AIService.setup(self, setup)  # TavusVideoService.setup, with our client
        callbacks = TavusCallbacks(
            on_joined=self._on_joined,
            on_participant_joined=self._on_participant_joined,
            on_participant_left=self._on_participant_left,
        )
        self._client = PersonaTavusClient(
            conversation=self._conversation,
            session=self._session,
            on_fatal=self._on_fatal,
            bot_name=self._bot_name,
            callbacks=callbacks,
            params=TavusParams(
                audio_in_enabled=True,
                video_in_enabled=True,
                audio_out_faster_than_realtime=True,
                initial_receive_bitrate=self._initial_receive_bitrate,
            ),
        )
        await self._client.setup(setup)
        await self._client.join()

    async def _on_fatal(self, message: str) -> None:
        self._failure = message
        if self._on_failure:
            self._on_failure(message)
        if self._started:
            await self._stop_pipeline()

    async def _stop_pipeline(self) -> None:
        """Without the replica the user sees and hears nothing: report and stop."""
        from pipecat.frames.frames import CancelWorkerFrame

        await self.push_error(f"Tavus: {self._failure}")
        await self.push_frame(CancelWorkerFrame(reason=f"Tavus: {self._failure}"),
                              FrameDirection.UPSTREAM)

    async def start(self, frame):
        await super().start(frame)
        self._started = True
        if self._failure:
            await self._stop_pipeline()

    async def _on_joined(self, data):
        logger.info(f"Joined the Tavus room of conversation {self._conversation.conversation_id}")

    async def _on_participant_left(self, participant, reason):
        logger.info(f"The replica left the Tavus room ({reason})")


class PersonaTavusTransport(TavusTransport):
    """``TavusTransport`` on a conversation we created; the user joins its URL."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 bot_name: str, params: Any, on_fatal=None):
        super().__init__(bot_name=bot_name, session=session, api_key=conversation.api.api_key,
                         replica_id=conversation.replica_id, params=params)
        callbacks = self._client._callbacks
        self._client = PersonaTavusClient(
            conversation=conversation, session=session, on_fatal=on_fatal,
            bot_name=bot_name, callbacks=callbacks, params=params,
        )
        self.conversation = conversation

    def set_on_fatal(self, on_fatal) -> None:
        """Called with a message when the bot cannot join the Tavus room."""
        self._client._on_fatal = on_fatal
