"""The LLMs around the persona under test: the judge of fuzzy expectations and the simulated user.

Both take any OpenAI-compatible endpoint (:class:`Endpoint`): ``--judge-url`` /
``--judge-model`` (key from ``--judge-key-env``, default ``OPENAI_API_KEY``), the
scenario file's ``judge:`` block, or OpenAI itself when ``OPENAI_API_KEY`` is set. The
simulated user uses the judge's endpoint unless ``--user-llm-url`` names another.

The judge is :class:`pipecat.evals.judge.EvalJudge` over an
:class:`~pipecat.classifiers.llm.classifier.LLMClassifier` (Pipecat's release evals' judge:
a verdict per criterion with a reason); the simulated user runs under
:class:`pipecat.evals.persona.EvalPersona`'s instruction and hangs up with its ``end_call``
tool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.errors import AgentError
from config.redact import redact_text, register_secrets

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_JUDGE_MODEL = "gpt-4.1-mini"


class JudgeUnavailable(AgentError):
    """A scenario needs a judge or a simulated user and no LLM endpoint is configured."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str

    def describe(self) -> str:
        """Model and endpoint, for the console (credentials in the URL hidden)."""
        return redact_text(f"{self.model} at {self.base_url}")


def endpoint_from(url: str | None, model: str | None, key_env: str | None,
                  block: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> Endpoint | None:
    """The endpoint the command line, the scenario's ``judge:`` block or the environment
    name, in that order; None when there is none.

    A key is only ever sent where the person running the command chose: ``key_env`` (the
    command line's) names it; without it, ``OPENAI_API_KEY`` goes to OpenAI's own URL only.
    A scenario file may name an endpoint and a model, never a key: a file from elsewhere
    must not be able to send a key to a host of its choosing."""
    env = os.environ if env is None else env
    block = block or {}
    url = url or block.get("base_url")
    if key_env:
        key = env.get(key_env, "")
    else:
        key = env.get("OPENAI_API_KEY", "") if not url or url.rstrip("/") == DEFAULT_OPENAI_URL \
            else ""
    if not url and not key:
        return None
    if key:
        register_secrets([key])
    return Endpoint(base_url=(url or DEFAULT_OPENAI_URL).rstrip("/"),
                    model=model or block.get("model") or DEFAULT_JUDGE_MODEL,
                    api_key=key or "none")


def _service(endpoint: Endpoint) -> Any:
    from pipecat.services.openai.llm import OpenAILLMService

    return OpenAILLMService(api_key=endpoint.api_key, base_url=endpoint.base_url,
                            settings=OpenAILLMService.Settings(model=endpoint.model,
                                                               temperature=0))


def make_judge(endpoint: Endpoint) -> Any:
    """An :class:`~pipecat.evals.judge.EvalJudge` on ``endpoint`` (final replies only)."""
    from pipecat.classifiers.llm.classifier import LLMClassifier
    from pipecat.evals.judge import EvalJudge

    service = _service(endpoint)
    return EvalJudge(LLMClassifier(llm=service), explainer=service, allow_continue=False)


class SimulatedUser:
    """An LLM playing the caller: who they are and what they want (``EvalPersona``)."""

    def __init__(self, endpoint: Endpoint, description: str, goal: str):
        from openai import AsyncOpenAI
        from pipecat.evals.persona import END_CALL_SCHEMA, EvalPersona

        self.instruction = EvalPersona(description, goal, llm=None).instruction
        self._tool = {"type": "function", "function": END_CALL_SCHEMA.to_default_dict()}
        self._client = AsyncOpenAI(api_key=endpoint.api_key, base_url=endpoint.base_url,
                                   timeout=60, max_retries=1)
        self._model = endpoint.model
        # The bot's turns are the user's messages here, the caller's own the assistant's.
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": self.instruction}]
        self.hung_up = False
        self.claim: dict[str, Any] | None = None  # end_call's success and reason

    async def next_line(self, bot_said: str) -> str | None:
        """What the caller says after ``bot_said``; None once they have hung up with nothing
        left to say. A goodbye said with ``end_call`` is returned (and ``hung_up`` set)."""
        if self.hung_up:
            return None
        self.messages.append({"role": "user", "content": bot_said or "(silence)"})
        try:
            response = await self._client.chat.completions.create(
                model=self._model, messages=self.messages, tools=[self._tool], temperature=0.7,
                max_tokens=200)
        except Exception as exc:  # noqa: BLE001 - any client error: the simulation stops
            raise JudgeUnavailable(
                f"the simulated user's LLM failed: {redact_text(str(exc))[:300]}") from None
        message = response.choices[0].message
        text = (message.content or "").strip()
        for call in message.tool_calls or []:
            if call.function.name == "end_call":
                self.hung_up = True
                try:
                    self.claim = json.loads(call.function.arguments or "{}")
                except json.JSONDecodeError:
                    self.claim = {"raw": call.function.arguments}
        self.messages.append({"role": "assistant", "content": text})
        return text or None

    async def close(self) -> None:
        await self._client.close()
