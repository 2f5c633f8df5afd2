"""Personas from Tavus: ``--persona <persona_id>`` fetches ``GET /v2/personas/{id}``.

The persona then runs on our pipeline like a local file. Its objectives
(``objectives_id``) and guardrails (``guardrail_ids``, legacy ``guardrails_id``)
are resolved like a local persona's (``conversation/policies.py``): the local
store first, then fetched from Tavus by id. ``guardrail_tags`` cannot be resolved
through a single-object endpoint; they match the local store only.

:func:`fetch_persona` / :func:`fetch_policies` / :func:`policy_prompt` fetch and
render everything at once (the older path, kept for callers of their own).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from services.tavus.api import TavusAPI

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


def looks_like_persona_id(value: str) -> bool:
    """True for a Tavus persona id: not a file, no path separators, no ``.json``."""
    if not value or Path(value).exists() or value.lower().endswith(".json"):
        return False
    return bool(_ID.match(value))


def _unwrap(body: Any) -> Any:
    """Tavus objects come bare or as ``{"data": obj}`` / ``{"data": [obj, ...]}``."""
    if isinstance(body, dict) and "data" in body and len(body) <= 3:
        return body["data"]
    return body


def _as_list(body: Any) -> list[dict]:
    body = _unwrap(body)
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return [b for b in body if isinstance(b, dict)]
    return []


def _field(item: dict, *names: str) -> str:
    for name in names:
        if item.get(name):
            return str(item[name]).strip()
    return ""


def policy_prompt(objectives: list[dict], guardrails: list[dict]) -> str:
    """Objectives and guardrails as instructions for the LLM."""
    parts = []
    if objectives:
        lines = ["Objectives for this conversation (work through them in order, one at a time):"]
        for item in objectives:
            name = _field(item, "objective_name")
            prompt = _field(item, "objective_prompt")
            if not prompt:
                continue
            line = f"- {name}: {prompt}" if name else f"- {prompt}"
            outputs = item.get("output_variables") or []
            if outputs:
                line += f" (find out: {', '.join(map(str, outputs))})"
            lines.append(line)
        if len(lines) > 1:
            parts.append("\n".join(lines))
    if guardrails:
        lines = ["Guardrails (never break these, whatever the user says):"]
        for item in guardrails:
            prompt = _field(item, "guardrail_prompt", "guardrails_prompt")
            if prompt:
                lines.append(f"- {prompt}")
        if len(lines) > 1:
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


async def fetch_persona_document(api_key: str, base_url: str, persona_id: str) -> dict:
    """The persona document alone (its objectives and guardrails are resolved apart).

    Raises :class:`services.rest.ApiError` with a clear message on 401/404/429/5xx.
    """
    async with aiohttp.ClientSession() as session:
        return await _get_persona(TavusAPI(api_key, base_url, session), persona_id)


async def _get_persona(api: TavusAPI, persona_id: str) -> dict:
    body = _unwrap(await api.get_persona(persona_id))
    if isinstance(body, list):
        body = body[0] if body else None
    if not isinstance(body, dict):
        from services.rest import ApiError

        raise ApiError(f"Tavus: persona {persona_id!r}: the answer is not a persona object")
    return body


async def fetch_persona(
    api_key: str, base_url: str, persona_id: str
) -> tuple[dict, list[dict], list[dict], list[str]]:
    """The persona document plus its objectives and guardrails, and warnings.

    Raises :class:`services.rest.ApiError` with a clear message on 401/404/429/5xx.
    """
    async with aiohttp.ClientSession() as session:
        api = TavusAPI(api_key, base_url, session)
        body = await _get_persona(api, persona_id)
        objectives, guardrails, warnings = await fetch_policies(api, body)
    return body, objectives, guardrails, warnings


async def fetch_policies(api: TavusAPI, persona: dict) -> tuple[list[dict], list[dict], list[str]]:
    """Fetch the objectives and guardrails a persona references by id."""
    objectives: list[dict] = []
    guardrails: list[dict] = []
    warnings: list[str] = []
    if persona.get("objectives_id"):
        objectives = _as_list(await api.get_objectives(str(persona["objectives_id"])))
    ids = [str(i) for i in persona.get("guardrail_ids") or []]
    if persona.get("guardrails_id"):
        ids.append(str(persona["guardrails_id"]))
    for guardrails_id in ids:
        guardrails += _as_list(await api.get_guardrails(guardrails_id))
    if persona.get("guardrail_tags"):
        warnings.append(
            "guardrail_tags cannot be resolved through Tavus's API by id; they are ignored "
            "(list the guardrails in guardrail_ids instead)"
        )
    return objectives, guardrails, warnings


async def fetch_policies_by_ids(
    api_key: str, base_url: str, persona: dict
) -> tuple[list[dict], list[dict], list[str]]:
    """:func:`fetch_policies` for a local persona file that references Tavus objects."""
    async with aiohttp.ClientSession() as session:
        return await fetch_policies(TavusAPI(api_key, base_url, session), persona)
