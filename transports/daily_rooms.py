"""Daily rooms for ``-t daily``: created through Daily's REST API with the conversation's limits.

* room expiry (``exp``, participants ejected then) = now + ``max_call_duration``;
* ``max_participants`` from the conversation (the bot counts as one, as the
  replica does on Tavus);
* ``require_auth`` makes the room private: the user's join URL carries a
  meeting token (valid until ``participant_absent_timeout``, as Tavus does,
  or the room's expiry when that is 0).

Identity, as on Tavus (so a stock Tavus front end, e.g. npm ``@tavus/cvi-ui``, works
unchanged): the room is named after the conversation id (Tavus's conversation URLs are
``https://tavus.daily.co/<conversation_id>``), and the bot joins with its own owner token
whose ``user_id`` is ``tavus-replica-<conversation_id>`` (cvi-ui's ``useReplicaIDs`` takes
the participants whose ``user_id`` contains ``tavus-replica``) and whose ``user_name`` is
the persona's name. Users never get that id.

Bodies are built with Pipecat's Daily models; the calls go through
:class:`services.rest.RestClient` for retries and clear errors.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp
from loguru import logger

from services.rest import ApiError, RestClient

REPLICA_USER_ID_PREFIX = "tavus-replica"
_DAILY_USER_ID_CHARS = 36  # Daily's limit on a meeting token's user_id


def replica_user_id(conversation_id: str) -> str:
    """The Daily ``user_id`` the bot joins with: Tavus front ends find the replica by it."""
    return f"{REPLICA_USER_ID_PREFIX}-{conversation_id}"[:_DAILY_USER_ID_CHARS]

@dataclass
class DailyRoom:
    """A room we created, the bot's token and the URL the user opens."""

    name: str
    url: str
    bot_token: str
    user_token: str | None
    expires_at: int

    @property
    def join_url(self) -> str:
        return f"{self.url}?t={self.user_token}" if self.user_token else self.url


class DailyRooms:
    """Create and delete rooms and meeting tokens (``Authorization: Bearer`` auth)."""

    def __init__(self, api_key: str, base_url: str, session: aiohttp.ClientSession, **retry: Any):
        self.rest = RestClient(
            "Daily", base_url,
            {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            session, "DAILY_API_KEY", **retry,
        )

    async def create(self, conversation: Any, bot_name: str, now: float | None = None, *,
                     conversation_id: str | None = None) -> DailyRoom:
        """A room for one conversation, named after ``conversation_id`` (else a random name),
        with the bot's token (the replica's identity) and, for a private room, the user's."""
        from pipecat.transports.daily.utils import (
            DailyMeetingTokenParams,
            DailyMeetingTokenProperties,
            DailyRoomParams,
            DailyRoomProperties,
        )

        now = time.time() if now is None else now
        props = conversation.properties
        expires_at = int(now + props.max_call_duration)
        room_props = DailyRoomProperties(
            exp=expires_at,
            eject_at_room_exp=True,
            max_participants=conversation.max_participants,
            enable_prejoin_ui=False,
            start_video_off=bool(conversation.audio_only),
        )
        privacy = "private" if conversation.require_auth else "public"
        name = conversation_id or f"persona-{uuid.uuid4().hex[:10]}"
        params = DailyRoomParams(name=name, privacy=privacy, properties=room_props)
        room = await self.rest.request(
            "POST", "rooms", json=params.model_dump(exclude_none=True), what="create room"
        )
        if not isinstance(room, dict) or not room.get("url"):
            raise ApiError("Daily: create room answered without a room url")
        url = room["url"]
        name = room.get("name") or urlparse(url).path.lstrip("/")

        async def token(**fields: Any) -> str:
            body = DailyMeetingTokenParams(properties=DailyMeetingTokenProperties(room_name=name, **fields))
            data = await self.rest.request(
                "POST", "meeting-tokens", json=body.model_dump(exclude_none=True),
                what="create meeting token",
            )
            if not isinstance(data, dict) or not data.get("token"):
                raise ApiError("Daily: create meeting token answered without a token")
            return data["token"]

        bot_token = await token(is_owner=True, user_name=bot_name, exp=expires_at,
                                user_id=replica_user_id(conversation_id or name))
        user_token = None
        if conversation.require_auth:
            absent = props.participant_absent_timeout
            user_exp = int(now + absent) if absent else expires_at
            user_token = await token(is_owner=False, exp=min(user_exp, expires_at),
                                     eject_at_token_exp=False)
        logger.info(
            f"Created Daily room {name} ({privacy}, expires in {props.max_call_duration}s"
            f"{', max ' + str(conversation.max_participants) + ' participants' if conversation.max_participants else ''})"
        )
        return DailyRoom(name=name, url=url, bot_token=bot_token, user_token=user_token,
                         expires_at=expires_at)

    async def delete(self, room: DailyRoom) -> None:
        """Delete the room (best effort: it expires anyway)."""
        try:
            await self.rest.request("DELETE", f"rooms/{room.name}", what=f"delete room {room.name}")
            logger.info(f"Deleted Daily room {room.name}")
        except Exception as exc:  # noqa: BLE001 - the room expires on its own
            logger.warning(f"Could not delete Daily room {room.name}: {exc} (it expires at {room.expires_at})")
