"""The Tavus v2 REST API: the endpoints we use, with ``x-api-key`` auth and JSON bodies."""

from __future__ import annotations

from typing import Any

import aiohttp

from config.errors import AgentError
from services.rest import ApiError, RestClient

# Tavus's persona for Pipecat: render the audio we send, run no pipeline of its own.
PIPECAT_PERSONA_ID = "pipecat0"


class TavusError(AgentError):
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
