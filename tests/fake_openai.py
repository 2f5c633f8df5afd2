"""A loopback server speaking OpenAI's streaming chat-completions protocol with scripted answers."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ToolCall:
    """A scripted tool call answer."""

    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass
class FakeOpenAI:
    """Records every request and streams the next scripted answer (SSE ``chat.completion.chunk``).

    An answer is a string (streamed word by word; ``""`` streams no content at all, as a
    model that says nothing does) or a list of :class:`ToolCall`.
    ``delay_secs`` waits before the first chunk (a slow model). A request without
    ``Authorization: Bearer <api_key>`` is answered 401 with a body that echoes the header
    it got, as some OpenAI-compatible servers do ("Incorrect API key provided: ..."):
    what a leak of the key into client messages looks like. ``rejected`` counts them.
    """

    answers: list[Any] = field(default_factory=lambda: ["Hello from the fake model."])
    delay_secs: float = 0.0
    api_key: str = "test-key"  # the key it accepts (``Authorization: Bearer <api_key>``)
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)  # time.time() of each request
    headers: list[dict[str, str]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0
    #: Side calls (a guard's verdict, an objective's extraction): ``route(body)`` returns their
    #: answer (a string, e.g. JSON, or a list of :class:`ToolCall`), or None for the scripted
    #: conversation. Routed requests are kept in ``routed``, not ``requests``.
    route: Any = None  # may return a coroutine (awaited: a slow side call)
    chunk_delay_secs: float = 0.0  # between streamed words (a slowly streaming model)
    routed: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    @staticmethod
    def _completion(body: dict[str, Any], answer: Any) -> dict[str, Any]:
        """A non-streaming ``chat.completion`` carrying ``answer``."""
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(answer, list):
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": json.dumps(c.arguments)}} for c in answer]
            finish = "tool_calls"
        else:
            message["content"] = answer
            finish = "stop"
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            self.rejected += 1
            return web.json_response({"error": {
                "message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error",
                "code": "invalid_api_key", "received_headers": {"Authorization": auth}}}, status=401)
        body = await request.json()
        routed = self.route(body) if self.route is not None else None
        if asyncio.iscoroutine(routed):
            routed = await routed
        if routed is not None:
            self.routed.append(body)
            answer = routed
        else:
            self.requests.append(body)
            self.request_times.append(time.time())
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            self.queries.append(dict(request.query))
            answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        if not body.get("stream"):
            if self.delay_secs and routed is None:
                await asyncio.sleep(self.delay_secs)
            return web.json_response(self._completion(body, answer))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created,
                     "model": body.get("model", "fake"),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        if isinstance(answer, list):
            for index, call in enumerate(answer):
                await send({"role": "assistant", "content": None, "tool_calls": [{
                    "index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]})
                await send({"tool_calls": [{"index": index, "function": {
                    "arguments": json.dumps(call.arguments)}}]})
            await send({}, "tool_calls")
        else:
            await send({"role": "assistant", "content": ""})
            for word in answer.split(" ") if answer else ():
                await send({"content": word + " "})
                if self.chunk_delay_secs:
                    await asyncio.sleep(self.chunk_delay_secs)
            await send({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
