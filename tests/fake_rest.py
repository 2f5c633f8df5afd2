"""Loopback fakes of the Tavus and Daily REST APIs (their documented wire contracts).

Each records every request (method, path, headers, JSON body) and can be told
to fail a route with scripted statuses first (``fail_next``). They run in a
thread of their own so subprocess tests can use them too.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _FakeBase:
    port: int = 0
    bind_port: int = 0  # 0: any free port
    requests: list[Recorded] = field(default_factory=list)
    _failures: dict[str, list[int]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def fail_next(self, route: str, *statuses: int) -> None:
        """Answer the next calls of ``route`` ("POST /v2/conversations") with these statuses."""
        self._failures.setdefault(route, []).extend(statuses)

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    @web.middleware
    async def _record(self, request: web.Request, handler):
        body = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = await request.text()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        route = f"{request.method} {request.match_info.route.resource.canonical if request.match_info.route.resource else request.path}"
        queued = self._failures.get(route)
        if queued:
            status = queued.pop(0)
            payload = {"error": f"scripted failure {status}"}
            if status == 401:
                payload = {"message": "Invalid access token"}
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.json_response(payload, status=status, headers=headers)
        auth = self.check_auth(request)
        if auth is not None:
            return auth
        return await handler(request)

    def check_auth(self, request: web.Request) -> web.Response | None:
        return None

    async def start(self) -> _FakeBase:
        app = web.Application(middlewares=[self._record])
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.bind_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def start_thread(self) -> _FakeBase:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop_thread(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def __enter__(self):
        return self.start_thread()

    def __exit__(self, *exc):
        self.stop_thread()


@dataclass
class FakeTavus(_FakeBase):
    """``/v2`` conversations (create, end), personas, replicas, objectives, guardrails."""

    api_key: str = "tavus-test-key"
    personas: dict[str, dict] = field(default_factory=dict)
    replicas: dict[str, dict] = field(default_factory=lambda: {"r-test": {"replica_id": "r-test", "status": "completed"}})
    objectives: dict[str, dict] = field(default_factory=dict)
    guardrails: dict[str, dict] = field(default_factory=dict)
    conversations: dict[str, dict] = field(default_factory=dict)
    conversation_url_base: str = "https://tavus.daily.co"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def check_auth(self, request):
        if request.headers.get("x-api-key") != self.api_key:
            return web.json_response({"message": "Invalid access token"}, status=401)
        return None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/conversations", self._create)
        app.router.add_post("/v2/conversations/{id}/end", self._end)
        app.router.add_get("/v2/personas/{id}", self._getter(self.personas, "persona_id", "Persona"))
        app.router.add_get("/v2/replicas/{id}", self._getter(self.replicas, "replica_id", "Replica"))
        app.router.add_get("/v2/objectives/{id}", self._getter(self.objectives, "objectives_id", "Objectives"))
        app.router.add_get("/v2/guardrails/{id}", self._getter(self.guardrails, "guardrails_id", "Guardrails"))

    def ended(self) -> list[str]:
        return [r.path.split("/")[3] for r in self.calls("POST", "/v2/conversations/") if r.path.endswith("/end")]

    async def _create(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        if not isinstance(body, dict) or not body.get("replica_id"):
            return web.json_response({"error": "replica_id is required"}, status=400)
        if body["replica_id"] not in self.replicas:
            return web.json_response({"error": "Invalid replica_id"}, status=400)
        cid = "c" + uuid.uuid4().hex[:10]
        conv = {
            "conversation_id": cid,
            "conversation_name": body.get("conversation_name", "New Conversation"),
            "conversation_url": f"{self.conversation_url_base}/{cid}",
            "status": "active",
            "callback_url": body.get("callback_url", ""),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        }
        if body.get("require_auth"):
            conv["meeting_token"] = "mt-" + uuid.uuid4().hex[:16]
        self.conversations[cid] = conv
        return web.json_response(conv)

    async def _end(self, request: web.Request) -> web.Response:
        conv = self.conversations.get(request.match_info["id"])
        if conv is None:
            return web.json_response({"error": "Conversation not found"}, status=404)
        conv["status"] = "ended"
        return web.Response(status=200)

    def _getter(self, table: dict, id_field: str, kind: str):
        async def get(request: web.Request) -> web.Response:
            item = table.get(request.match_info["id"])
            if item is None:
                return web.json_response({"error": f"{kind} not found"}, status=404)
            return web.json_response({id_field: request.match_info["id"], **item})

        return get


@dataclass
class FakeDaily(_FakeBase):
    """``/v1`` rooms (create, delete) and meeting tokens."""

    api_key: str = "daily-test-key"
    rooms: dict[str, dict] = field(default_factory=dict)
    tokens: list[dict] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def check_auth(self, request):
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"error": "authentication-error", "info": "the API key is not valid"}, status=401
            )
        return None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/rooms", self._create_room)
        app.router.add_delete("/v1/rooms/{name}", self._delete_room)
        app.router.add_post("/v1/meeting-tokens", self._token)

    async def _create_room(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body or {}
        name = body.get("name") or uuid.uuid4().hex[:10]
        room = {
            "id": str(uuid.uuid4()), "name": name, "api_created": True,
            "privacy": body.get("privacy", "public"), "url": f"https://fake.daily.co/{name}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "config": body.get("properties", {}),
        }
        self.rooms[name] = room
        return web.json_response(room)

    async def _delete_room(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.rooms.pop(name, None) is None:
            return web.json_response({"error": "not-found"}, status=404)
        return web.json_response({"deleted": True, "name": name})

    async def _token(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body or {}
        props = body.get("properties", {})
        if props.get("room_name") not in self.rooms:
            return web.json_response({"error": "invalid-request-error", "info": "room not found"}, status=400)
        self.tokens.append(props)
        return web.json_response({"token": f"tok-{len(self.tokens)}-{props.get('room_name')}"})


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fake_rest tavus|daily PORT``: run a fake for trying the bot by hand."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] not in ("tavus", "daily"):
        raise SystemExit("usage: python -m tests.fake_rest tavus|daily PORT")
    fake = FakeTavus(bind_port=int(args[1])) if args[0] == "tavus" else FakeDaily(bind_port=int(args[1]))

    async def serve() -> None:
        await fake.start()
        print(f"fake {args[0]} API on http://127.0.0.1:{args[1]}/{'v2' if args[0] == 'tavus' else 'v1'} "
              f"(key {fake.api_key!r}); Ctrl-C to stop", flush=True)
        seen = 0
        while True:
            await asyncio.sleep(0.2)
            for r in fake.requests[seen:]:
                print(f"{r.method} {r.path} {r.body if r.body is not None else ''}", flush=True)
            seen = len(fake.requests)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()


@dataclass
class WebhookReceiver(_FakeBase):
    """A callback receiver: ``POST /hook``. ``fail_next("POST /hook", 500, ...)`` fails attempts;
    ``hang_next`` attempts hang for ``hang_secs`` (then answer 503, never an acknowledgement)."""

    hang_next: int = 0
    hang_secs: float = 5.0
    acked: dict[str, int] = field(default_factory=dict)  # delivery id -> 2xx answers
    payloads: list[dict] = field(default_factory=list)  # acknowledged payloads, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        if self.hang_next > 0:
            self.hang_next -= 1
            await asyncio.sleep(self.hang_secs)
            return web.Response(status=503)
        delivery = request.headers.get("X-Delivery-Id", "")
        self.acked[delivery] = self.acked.get(delivery, 0) + 1
        self.payloads.append(self.requests[-1].body)
        return web.Response(status=200)

    def events(self) -> list[str]:
        return [p["event_type"] for p in self.payloads]
