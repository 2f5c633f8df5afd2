"""The two Pipecat renderers on a Tavus conversation we created.

* ``video`` — :class:`TavusVideoRenderer`, Pipecat's ``TavusVideoService``:
  the bot sits in the Tavus room with the replica, sends it our TTS audio and
  forwards the replica's video and audio to the user in *our* room (the local
  page or Daily);
* ``transport`` — :class:`PersonaTavusTransport`, Pipecat's ``TavusTransport``:
  the bot joins the room Tavus creates, and the user joins it through the
  printed conversation URL.

Both talk to the Tavus room through :class:`PersonaTavusClient`. Daily app messages
sent to the bot reach the client's ``_on_handle_callback`` (Pipecat's client only
logs them). In the ``transport`` case the room is the user's, so
:class:`PersonaTavusTransport` delivers them to the pipeline as Pipecat's
``DailyTransport`` does (a ``DailyInputTransportMessageFrame`` broadcast from the
input transport, ``participant_id`` the sender), except the replica's own. In the
``video`` case only the replica is in the room: its messages are Tavus's own
events and are ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from loguru import logger
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tavus.video import TavusVideoService
from pipecat.transports.daily.transport import DailyInputTransportMessageFrame
from pipecat.transports.tavus.transport import (
    TavusApi,
    TavusParams,
    TavusTransport,
    TavusTransportClient,
)

from config.logging import loggable
from services import pipecat_seam as seam
from services.rest import ApiError
from services.tavus.api import PIPECAT_PERSONA_ID
from services.tavus.conversations import TavusConversation


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


AppMessageHandler = Callable[[Any, str], Awaitable[None]]

#: What Tavus's replica participants have in their Daily ``user_id`` (Tavus's CVI
#: ``useReplicaIDs`` hook tells them apart by it).
REPLICA_USER_ID_MARK = "tavus-replica"


class PersonaTavusClient(TavusTransportClient):
    """Pipecat's ``TavusTransportClient`` on our conversation: joins with its meeting token,
    reports a failed join instead of carrying on without a replica, and hands the room's
    app messages to :meth:`set_on_app_message`'s handler (none: they are ignored)."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 on_fatal=None, **kwargs: Any):
        super().__init__(api_key=conversation.api.api_key, replica_id=conversation.replica_id,
                         persona_id=PIPECAT_PERSONA_ID, session=session, **kwargs)
        seam.set_tavus_client_api(self, _ConversationApi(conversation, session))
        self._conversation = conversation
        self._on_fatal = on_fatal
        self._on_app_message: AppMessageHandler | None = None

    def set_on_fatal(self, on_fatal) -> None:
        """Called (awaited) with a message when the bot cannot join the Tavus room."""
        self._on_fatal = on_fatal

    def set_on_app_message(self, handler: AppMessageHandler | None) -> None:
        """Called (awaited) with ``(message, sender)`` for each Daily app message the bot
        receives; ``sender`` is the sending participant's id. Without a handler (the video
        renderer's hidden room, where only the replica is) messages are ignored."""
        self._on_app_message = handler

    def participant(self, participant_id: str) -> Mapping[str, Any] | None:
        """Daily's record of a participant in the room (``id``, ``info.userName``,
        ``info.userId``, ...); ``None`` if Daily does not know it (or the bot is not in)."""
        daily = seam.tavus_daily_client(self)
        if daily is None:
            return None
        try:
            found = daily.participants().get(participant_id)
        except Exception as exc:  # noqa: BLE001 - released or never joined
            logger.debug(f"Tavus room: no participant list ({exc})")
            return None
        return found if isinstance(found, Mapping) else None

    async def setup(self, setup):  # not @acquires: the parent's setup holds that lock
        await super().setup(setup)
        daily = seam.tavus_daily_client(self)
        if daily is None:
            await self._fatal("could not set up the client for the Tavus room")
        elif self._conversation.meeting_token:  # private room: join with its token
            seam.set_daily_client_token(daily, self._conversation.meeting_token)

    async def _fatal(self, message: str) -> None:
        logger.error(f"Tavus conversation {self._conversation.conversation_id}: {message}")
        if self._on_fatal:
            await self._on_fatal(message)

    async def _on_handle_callback(self, event_name, *args, **kwargs):
        # Pipecat's hook for every Daily event but join/leave/participants (see pipecat_seam).
        if event_name == "on_error" and args and str(args[0]).startswith("Error joining"):
            await self._fatal(f"could not join the Tavus room: {args[0]}")
            return
        if event_name == "on_error":
            logger.error(f"Tavus room: {args[0] if args else 'error'}")
        if event_name == "on_app_message" and len(args) >= 2:
            message, sender = args[0], args[1]
            if self._on_app_message is None:
                logger.debug(f"Tavus room: app message from {sender} ignored "
                             "(the bot is not in the user's room)")
            else:
                await self._on_app_message(message, sender)
            return
        await super()._on_handle_callback(event_name, *args, **kwargs)


class TavusVideoRenderer(TavusVideoService):
    """``TavusVideoService`` on a conversation we created; a failed join stops the pipeline."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 bot_name: str, on_failure=None, **kwargs: Any):
        super().__init__(api_key=conversation.api.api_key, replica_id=conversation.replica_id,
                         session=session, **kwargs)
        self._conversation = conversation
        self._http = session
        self._bot_name = bot_name
        self._on_failure = on_failure  # called with the message when the replica cannot render
        self._failure: str | None = None
        self._started = False

    @property
    def conversation(self) -> TavusConversation:
        return self._conversation

    async def setup(self, setup):
        """``TavusVideoService.setup``, with our client (Pipecat's would create a conversation)."""
        await seam.setup_tavus_video_service_base(self, setup)
        client = PersonaTavusClient(
            conversation=self._conversation,
            session=self._http,
            on_fatal=self._on_fatal,
            bot_name=self._bot_name,
            callbacks=seam.tavus_video_callbacks(self),
            params=TavusParams(
                audio_in_enabled=True,
                video_in_enabled=True,
                audio_out_faster_than_realtime=True,
                initial_receive_bitrate=seam.tavus_video_receive_bitrate(self),
            ),
        )
        seam.set_tavus_video_client(self, client)
        await client.setup(setup)
        await client.join()

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

    # Overrides of TavusVideoService's hooks (wired by tavus_video_callbacks).
    async def _on_joined(self, data):
        logger.info(f"Joined the Tavus room of conversation {self._conversation.conversation_id}")

    async def _on_participant_left(self, participant, reason):
        logger.info(f"The replica left the Tavus room ({reason})")


class PersonaTavusTransport(TavusTransport):
    """``TavusTransport`` on a conversation we created; the user joins its URL.

    The app messages of the room's participants (the user's front end: ``conversation.
    respond``, ``.interrupt``, ``.tool_result``, ...) go into the pipeline as Pipecat's
    ``DailyTransport`` sends them: a ``DailyInputTransportMessageFrame(message=...,
    participant_id=sender)`` broadcast from the input transport (downstream to the
    Interactions processor, upstream to RTVI), then the ``on_app_message(transport,
    message, sender)`` event. A message that arrives before the pipeline has started
    waits in the next processor's queue for its StartFrame, as Daily's does. The replica's
    own messages (Tavus's events) are not forwarded; see :meth:`is_replica`.

    Event handlers: ``on_connected``, ``on_client_connected``, ``on_client_disconnected``
    (Pipecat's) and ``on_app_message``.
    """

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 bot_name: str, params: Any, on_fatal=None):
        super().__init__(bot_name=bot_name, session=session, api_key=conversation.api.api_key,
                         replica_id=conversation.replica_id, params=params)
        self._persona_client = PersonaTavusClient(
            conversation=conversation, session=session, on_fatal=on_fatal,
            bot_name=bot_name, callbacks=seam.tavus_transport_callbacks(self), params=params,
        )
        seam.set_tavus_transport_client(self, self._persona_client)
        self._persona_client.set_on_app_message(self._on_app_message)
        self._persona_input: FrameProcessor | None = None
        self.conversation = conversation
        self._register_event_handler("on_app_message")

    def set_on_fatal(self, on_fatal) -> None:
        """Called (awaited) with a message when the bot cannot join the Tavus room."""
        self._persona_client.set_on_fatal(on_fatal)

    def input(self) -> FrameProcessor:
        """Pipecat's input transport (one per transport), kept to push app messages from."""
        self._persona_input = super().input()
        return self._persona_input

    async def is_replica(self, participant_id: str) -> bool:
        """Whether a participant of the room is the Tavus replica.

        ``TavusTransport`` learns the replica's participant id when it joins (its user name
        is the persona's). Daily's events are handled in order, a participant's join before
        its app messages, but a message can still come from a replica not recognised by then
        (e.g. the persona's name could not be fetched): so Daily's record of the sender is
        checked too, its ``user_id`` (Tavus's replicas have ``tavus-replica`` in it) and user
        name. A sender Daily does not know is taken for a user (forwarded).
        """
        if participant_id and participant_id == seam.tavus_replica_participant_id(self):
            return True
        participant = self._persona_client.participant(participant_id)
        if participant is None:
            return False
        info = participant.get("info") or {}
        if REPLICA_USER_ID_MARK in str(info.get("userId") or ""):
            return True
        name = info.get("userName") or ""
        return bool(name) and name == await self._persona_client.get_persona_name()

    async def _on_app_message(self, message: Any, sender: str) -> None:
        """A Daily app message: into the pipeline, as ``DailyTransport._on_app_message`` does."""
        if await self.is_replica(sender):
            logger.debug(f"Tavus room: the replica's app message ({_event_type(message)}) "
                         "is Tavus's own, not forwarded")
            return
        if self._persona_input is not None:
            await self._persona_input.broadcast_frame(
                DailyInputTransportMessageFrame, message=message, participant_id=sender)
        else:
            logger.debug(f"Tavus room: app message from {sender} dropped (no input transport)")
        await self._call_event_handler("on_app_message", message, sender)


def _event_type(message: Any) -> str:
    """What a room's message is, for a log line (a participant's value: cut and escaped)."""
    event = message.get("event_type") if isinstance(message, Mapping) else None
    return loggable(event, 80) if event else type(message).__name__
