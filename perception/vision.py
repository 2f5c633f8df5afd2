"""A vision-capable OpenAI-compatible model as the perception layer (instead of the detectors).

Named by ``layers.perception.vision_model`` (or ``PERCEPTION_VISION_MODEL``), at
``vision_base_url`` (``PERCEPTION_VISION_BASE_URL``, default OpenAI's) with ``vision_api_key``
(``PERCEPTION_VISION_API_KEY``, default ``OPENAI_API_KEY``). Each look sends the latest camera
and screen frames as JPEG ``image_url`` parts with the awareness queries, and the visual tools
as function tools with the persona's ``visual_tool_prompt``; the model answers in JSON (the
appearance, emotions and screen lines Tavus's system message carries, one answer per query)
and calls a tool when what it sees matches one. One look at a time, at most one every
:data:`LOOK_INTERVAL_SECS`; the end-of-call analysis is a text-only call over the log.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from config.logging import scrub

LOOK_INTERVAL_SECS = 3.0
TIMEOUT_SECS = 20.0

INSTRUCTION = (
    "You are the perception layer of a video call: you see the user's camera and, when shared, "
    "their screen. Reply with one JSON object: {\"appearance\": one sentence on who is in view "
    "and how they look, \"emotions\": one sentence on their visible emotional state, "
    "\"screen\": one sentence on what the shared screen shows or \"\" when none, \"answers\": "
    "[one short answer per query, in order; say \"cannot tell\" when the image does not show "
    "it], \"checks\": [true or false per check, in order]}. Be literal; never guess identities.")


@dataclass(frozen=True)
class VisionConfig:
    model: str
    base_url: str | None
    api_key: str | None = field(repr=False)

    def describe(self) -> str:
        return f"{self.model} at {self.base_url or 'https://api.openai.com/v1'}"


def vision_config(layer: Any, settings: Any) -> VisionConfig | None:
    """The configured vision model (the persona's fields win over the environment), or None."""
    model = getattr(layer, "vision_model", None) or settings.perception_vision_model
    if not model:
        return None
    persona_url = getattr(layer, "vision_base_url", None)
    base_url = persona_url or settings.perception_vision_base_url
    key = getattr(layer, "vision_api_key", None)
    if key is None and not persona_url:
        # The environment's keys go only to the environment's endpoint (or OpenAI's), never
        # to a URL a persona names, as with layers.llm.
        key = settings.perception_vision_api_key or (
            settings.openai_api_key if not base_url else None)
    return VisionConfig(model, base_url, key)


@dataclass
class Look:
    """What one look found."""

    appearance: str = ""
    emotions: str = ""
    screen: str = ""
    answers: list[str] | None = None
    checks: list[bool] | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None


class VisionModel:
    """Calls to one vision model for one conversation."""

    def __init__(self, config: VisionConfig, *, tool_prompt: str | None = None,
                 tools: list[Any] | None = None):
        from openai import AsyncOpenAI

        self.config = config
        self.tool_prompt = tool_prompt
        self.tools = [t.model_dump(mode="json", exclude_none=True) for t in tools or []]
        self.client = AsyncOpenAI(api_key=config.api_key or "none", base_url=config.base_url,
                                  timeout=TIMEOUT_SECS, max_retries=0)
        self.failures = 0

    async def look(self, frames: dict[str, str], queries: list[str],
                   checks: list[str] | None = None) -> Look | None:
        """Ask about ``frames`` (source -> base64 JPEG); None when the call failed."""
        content: list[dict[str, Any]] = []
        lines = [f"Queries: {json.dumps(queries)}", f"Checks (true/false): {json.dumps(checks or [])}"]
        content.append({"type": "text", "text": "\n".join(lines)})
        for source, jpeg in frames.items():
            label = "Camera" if source == "camera" else "Shared screen"
            content.append({"type": "text", "text": f"{label}:"})
            content.append({"type": "image_url",
                            "image_url": {"url": f"data:image/jpeg;base64,{jpeg}", "detail": "low"}})
        system = INSTRUCTION + (f"\n\nTools: {self.tool_prompt}" if self.tool_prompt else "")
        params: dict[str, Any] = {
            "model": self.config.model, "temperature": 0, "max_tokens": 400,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
        }
        if self.tools:
            params["tools"] = self.tools
        try:
            response = await asyncio.wait_for(self.client.chat.completions.create(**params),
                                              TIMEOUT_SECS)
            return _parse_look(response)
        except Exception as exc:  # noqa: BLE001 - any client, server or shape error: no look
            self.failures += 1
            logger.warning(f"Perception: the vision model failed: {scrub(str(exc) or type(exc).__name__)}")
            return None

    async def summarise(self, log_text: str, analysis_queries: list[str]) -> str | None:
        """The end-of-call analysis in markdown from the observation log (text only)."""
        prompt = ("Summarise these observations of a video call's user as markdown bullets: "
                  "**User Appearance:**, **User Behavior and Demeanor:**, **User Emotions:**, "
                  "**Notable Screen Activities:**, **Ambient Awareness Queries:**, and one bullet "
                  "answering each of these analysis queries: " + json.dumps(analysis_queries))
        try:
            response = await asyncio.wait_for(self.client.chat.completions.create(
                model=self.config.model, temperature=0, max_tokens=700,
                messages=[{"role": "system", "content": prompt},
                          {"role": "user", "content": log_text[:12000]}]), TIMEOUT_SECS)
        except Exception as exc:  # noqa: BLE001
            logger.warning(f"Perception: the analysis call failed: {scrub(str(exc) or type(exc).__name__)}")
            return None
        try:
            return str(response.choices[0].message.content or "").strip()[:8000] or None
        except (AttributeError, IndexError, TypeError):
            return None

    async def close(self) -> None:
        await self.client.close()


def _parse_look(response: Any) -> Look:
    """A look from the model's answer, every part checked (it is untrusted data)."""
    message = response.choices[0].message
    parsed = _json(str(message.content or "")[:20000])
    calls = []
    for call in (message.tool_calls or [])[:5]:
        function = getattr(call, "function", None)
        if function is None or not isinstance(getattr(function, "name", None), str):
            continue
        try:
            arguments = json.loads(function.arguments or "{}")
        except (TypeError, ValueError):
            arguments = {}
        calls.append((function.name[:100], arguments if isinstance(arguments, dict) else {}))
    answers = parsed.get("answers")
    checks = parsed.get("checks")
    return Look(
        appearance=str(parsed.get("appearance") or "")[:500],
        emotions=str(parsed.get("emotions") or "")[:500],
        screen=str(parsed.get("screen") or "")[:500],
        answers=[str(a)[:300] for a in answers[:20]] if isinstance(answers, list) else None,
        # Only a JSON true is a yes: "false" (a string) must not trigger a guardrail.
        checks=[c is True for c in checks[:50]] if isinstance(checks, list) else None,
        tool_calls=calls,
    )


def _json(text: str) -> dict[str, Any]:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        value = json.loads(text[start: end + 1])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
