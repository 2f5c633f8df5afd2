"""The two Pipecat renderers on a Tavus conversation we created.

* ``video`` — :class:`TavusVideoRenderer`, Pipecat's ``TavusVideoService``:
  the bot sits in the Tavus room with the replica, sends it our TTS audio and
  forwards the replica's video and audio to the user in *our* room (the local
  page or Daily);
* ``transport`` — :class:`PersonaTavusTransport`, Pipecat's ``TavusTransport``:
  the bot joins the room Tavus creates, and the user joins it through the
  printed conversation URL.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from loguru import logger
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.tavus.video import TavusVideoService
from pipecat.transports.tavus.transport import (
    TavusApi,
    TavusParams,
    TavusTransport,
    TavusTransportClient,
)

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


class PersonaTavusClient(TavusTransportClient):
    """Pipecat's ``TavusTransportClient`` on our conversation: joins with its meeting token,
    and reports a failed join instead of carrying on without a replica."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 on_fatal=None, **kwargs: Any):
        super().__init__(api_key=conversation.api.api_key, replica_id=conversation.replica_id,
                         persona_id=PIPECAT_PERSONA_ID, session=session, **kwargs)
        seam.set_tavus_client_api(self, _ConversationApi(conversation, session))
        self._conversation = conversation
        self._on_fatal = on_fatal

    def set_on_fatal(self, on_fatal) -> None:
        """Called (awaited) with a message when the bot cannot join the Tavus room."""
        self._on_fatal = on_fatal

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
    """``TavusTransport`` on a conversation we created; the user joins its URL."""

    def __init__(self, *, conversation: TavusConversation, session: aiohttp.ClientSession,
                 bot_name: str, params: Any, on_fatal=None):
        super().__init__(bot_name=bot_name, session=session, api_key=conversation.api.api_key,
                         replica_id=conversation.replica_id, params=params)
        self._persona_client = PersonaTavusClient(
            conversation=conversation, session=session, on_fatal=on_fatal,
            bot_name=bot_name, callbacks=seam.tavus_transport_callbacks(self), params=params,
        )
        seam.set_tavus_transport_client(self, self._persona_client)
        self.conversation = conversation

    def set_on_fatal(self, on_fatal) -> None:
        """Called (awaited) with a message when the bot cannot join the Tavus room."""
        self._persona_client.set_on_fatal(on_fatal)
