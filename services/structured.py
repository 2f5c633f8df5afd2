"""JSON-schema-constrained side calls to the conversation's own LLM endpoint.

The objectives' extraction (did this turn complete the objective, with which values) and
the guardrails' verdicts are small chat completions whose answer must be JSON of a given
shape. They go to the same server, model, key and headers as the conversation's replies
(the Pipecat service's own OpenAI client), never in its stream:

- the embedded llama.cpp server (``llama-cpp-python``) takes
  ``response_format={"type": "json_object", "schema": ...}`` and samples under a grammar
  made from the schema, so even SmolLM2-135M answers parseable JSON of that shape;
- OpenAI and compatible servers take ``{"type": "json_schema", "json_schema": ...}``; a
  server that refuses it (400) is asked again with ``{"type": "json_object"}`` and the
  schema in the prompt, once per process.

A failure (timeout, HTTP error, JSON that does not parse or lacks a required key) is
``None`` with a warning naming why, secrets scrubbed: the caller carries on without a
verdict, it never takes the conversation down.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from loguru import logger

from config.logging import scrub

#: Servers that refused ``json_schema`` (by base URL): they get ``json_object`` from then on.
_NO_JSON_SCHEMA: set[str] = set()


def is_local(llm: Any) -> bool:
    """Whether ``llm`` is the embedded llama.cpp server's service."""
    return getattr(llm, "local_server", None) is not None


def _model(llm: Any) -> str:
    settings = getattr(llm, "_settings", None)
    return str(getattr(settings, "model", None) or "")


def _response_format(llm: Any, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if is_local(llm):
        return {"type": "json_object", "schema": schema}
    if str(getattr(getattr(llm, "_client", None), "base_url", "")) in _NO_JSON_SCHEMA:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


async def json_completion(llm: Any, messages: list[dict[str, Any]], schema: dict[str, Any], *,
                          name: str, timeout_secs: float = 10.0, max_tokens: int = 200,
                          what: str = "a structured call") -> dict[str, Any] | None:
    """The model's JSON answer to ``messages`` under ``schema`` (an object schema), or None.

    ``name``: the schema's name (letters, digits, ``_``); ``what``: for the warning."""
    client = getattr(llm, "_client", None)
    if client is None:
        return None
    base_url = str(getattr(client, "base_url", ""))
    fmt = _response_format(llm, name, schema)
    if fmt["type"] == "json_object" and "schema" not in fmt:
        messages = [*messages, {"role": "system", "content":
                                "Answer with one JSON object only, of this JSON schema: "
                                + json.dumps(schema)}]
    params: dict[str, Any] = {"model": _model(llm), "messages": messages, "stream": False,
                              "temperature": 0, "max_tokens": max_tokens, "response_format": fmt}
    try:
        response = await asyncio.wait_for(client.chat.completions.create(**params), timeout_secs)
    except TimeoutError:
        logger.warning(f"{what}: no answer within {timeout_secs:g}s")
        return None
    except Exception as exc:  # noqa: BLE001 - any client or server error: no verdict
        status = getattr(exc, "status_code", None)
        if status == 400 and fmt["type"] == "json_schema":
            _NO_JSON_SCHEMA.add(base_url)
            return await json_completion(llm, messages, schema, name=name,
                                         timeout_secs=timeout_secs, max_tokens=max_tokens,
                                         what=what)
        logger.warning(f"{what} failed: {scrub(str(exc) or type(exc).__name__)}")
        return None
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError):
        text = ""
    value = parse_json_object(text)
    missing = [key for key in schema.get("required", []) if value is None or key not in value]
    if value is None or missing:
        logger.warning(f"{what}: the answer is not the JSON asked for "
                       f"({'missing ' + ', '.join(missing) if value is not None else 'no object'})")
        return None
    return value


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (a model may wrap it in prose or a code fence)."""
    text = text.strip()
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    start = text.find("{")
    while start != -1:
        try:
            value, _end = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return None
