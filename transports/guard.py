"""What reaches the local server's signalling: real peers, at a human rate, well-formed.

Two parts, both in front of the development runner's routes (``python bot.py``):

- :class:`SignallingGuard`, an ASGI middleware on ``POST /api/offer``, ``POST /start``
  and the ``/sessions/{id}/api/offer`` proxy. Per client address a token bucket allows
  ``OFFERS_PER_MINUTE`` session starts (burst of half that, at least 2); beyond it: ``429``
  with ``Retry-After``. A session counts once however its client signals: an offer to
  ``/api/offer`` (our page), or ``/start`` and then the first offer of the session it
  answered (Pipecat's client SDK, ``startBotAndConnect``); a renegotiation of a running
  conversation's peer (the offer carries its ``pc_id``; Pipecat's SmallWebRTC asks the
  client for one after connecting when the client offers video, as the SDK does) is not
  counted. (Counting each request made an SDK session cost three: with
  ``OFFERS_PER_MINUTE`` under 6, or on a quick reconnect, its renegotiation got ``429``
  and the SDK disconnected right after connecting.) The SDK's trickle-ICE
  ``PATCH`` requests are not signalling starts: they pass unchecked. Bodies over :data:`MAX_BODY_BYTES` are ``413``; a body that is not a
  JSON object, an offer without a string ``sdp`` and ``type: "offer"``, and a ``/start``
  for a transport this server does not run are ``400`` with a one-line reason, so none
  of them starts a bot session (a ``/start`` for ``daily`` without Daily used to write a
  conversation record and die with a traceback).
- :func:`wait_for_peer`: the bot's runner entry waits for the WebRTC peer connection to
  be established (ICE and DTLS: ``connectionState == "connected"``) before it builds a
  conversation. A junk offer (``{"sdp": "v=0\\r\\n", "type": "offer"}`` is answered by
  aiortc) never connects, so it costs an answer and a closed peer connection, not a
  pipeline with its models, and no conversation record.

The guard also enforces the process's capacity (:mod:`transports.capacity`): an offer
beyond ``MAX_CONVERSATIONS`` (and a ``/start`` then) is ``503`` with ``Retry-After`` and
a reason, before the runner sees it. With an access token (``ACCESS_TOKEN``; required to
bind beyond loopback) every request but ``/local.js`` must carry it (``?token=``, an
``X-Access-Token`` header or ``Authorization: Bearer``), else ``401``. The routes of the
runner's transports this server does not run (WebSocket, telephony, Daily webhooks) are
``404``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from transports import capacity as capacity_registry

RENEGOTIATIONS_PER_MINUTE = 12  # per running peer connection (burst 6)
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few KB; a /start body a few hundred bytes
SIGNALLING_PATHS = ("/api/offer", "/start")
# The runner's routes for transports this server does not run (it serves WebRTC).
UNSERVED_PATHS = ("/ws", "/ws-client", "/daily", "/daily-dialin-webhook")
OPEN_PATHS = ("/local.js",)  # served without the access token: static code, no data
SESSION_OFFER_SECS = 120.0  # how long a /start's session id waits for its first offer
MAX_STARTED_SESSIONS = 1024


class OfferLimiter:
    """A token bucket per client address (``per_minute`` offers, burst ``per_minute // 2``)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = max(2, per_minute // 2)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def take(self, address: str) -> float:
        """0 when an offer from ``address`` may go on, else seconds until one may."""
        now = self._clock()
        tokens, when = self._buckets.get(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        if tokens >= 1.0:
            self._buckets[address] = (tokens - 1.0, now)
            self._forget_idle(now)
            return 0.0
        self._buckets[address] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) > 1024:  # full buckets carry no state: drop them
            refill = self.burst / self.rate
            self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] < refill}


class StartedSessions:
    """The sessions ``POST /start`` answered (``{"sessionId": ...}``), per address, until their
    first offer (``/sessions/{id}/api/offer``) is answered or :data:`SESSION_OFFER_SECS` pass:
    a session started through /start is counted once, at /start."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._sessions: dict[str, tuple[str, float]] = {}  # session id -> (address, when)

    def watch(self, address: str, send: Any) -> Callable[[dict], Awaitable[None]]:
        """``send`` for a /start from ``address``: remembers the session id it answers."""
        status: list[int] = []
        chunks: list[bytes] = []

        async def watching(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and status and 200 <= status[0] < 300:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self._remember(b"".join(chunks), address)
            await send(message)

        return watching

    def _remember(self, body: bytes, address: str) -> None:
        try:
            session_id = json.loads(body).get("sessionId")
        except (ValueError, UnicodeDecodeError, AttributeError):
            return
        if isinstance(session_id, str):
            now = self._clock()
            self._sessions = {k: v for k, v in self._sessions.items()
                              if now - v[1] < SESSION_OFFER_SECS}
            while len(self._sessions) >= MAX_STARTED_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest
            self._sessions[session_id] = (address, now)

    def take(self, path: str, address: str) -> tuple[str, str, float] | None:
        """The session an offer on ``path`` from ``address`` is the first of (then it is
        no longer remembered), else None."""
        parts = path.split("/")  # "", "sessions", id, "api", "offer"
        if len(parts) != 5 or parts[1] != "sessions":
            return None
        found = self._sessions.get(parts[2])
        if found is None or found[0] != address or self._clock() - found[1] >= SESSION_OFFER_SECS:
            return None
        del self._sessions[parts[2]]
        return parts[2], found[0], found[1]

    def give_back(self, taken: tuple[str, str, float]) -> None:
        """The offer was not answered (busy, refused): the session's next offer is its first."""
        self._sessions[taken[0]] = (taken[1], taken[2])


def _is_signalling(path: str) -> bool:
    return path in SIGNALLING_PATHS or (path.startswith("/sessions/") and path.endswith("/api/offer"))


def _is_unserved(path: str, method: str | None) -> bool:
    if path == "/" and method == "POST":  # the runner's telephony webhook
        return True
    return any(path == p or path.startswith(p + "/") for p in UNSERVED_PATHS)


def request_token(scope: dict) -> str | None:
    """The access token a request carries: ``?token=``, ``X-Access-Token`` or a bearer."""
    from urllib.parse import parse_qs

    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if headers.get("x-access-token"):
        return headers["x-access-token"]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("token") or [None])[0]


def _drop_token_from_query(scope: dict) -> None:
    """Remove ``token=`` from the request's query, in the scope the server logs from."""
    from urllib.parse import parse_qsl, urlencode

    raw = scope.get("query_string", b"")
    if b"token=" not in raw:
        return
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "token"]).encode("latin-1")


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class SignallingGuard:
    """ASGI middleware: access token, capacity, rate, size and shape of signalling requests
    (see the module)."""

    def __init__(self, app: Any, *, offers_per_minute: int, transports: tuple[str, ...] = ("webrtc",),
                 access_token: str | None = None,
                 capacity: capacity_registry.Capacity | None = None):
        self.app = app
        self.limiter = OfferLimiter(offers_per_minute)
        # A running peer's renegotiations (ICE restarts, the bot's video re-offer) are not new
        # sessions, but each is real work for aiortc: their own bucket, per peer connection.
        self.renegotiations = OfferLimiter(RENEGOTIATIONS_PER_MINUTE)
        self.transports = transports
        self.access_token = access_token
        self.capacity = capacity if capacity is not None else capacity_registry.conversations
        self._warned: dict[str, float] = {}  # address -> when its refusal was last logged
        self._started = StartedSessions()

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope.get("method")
        given = request_token(scope)
        _drop_token_from_query(scope)  # the server's access log shows the query: not the token
        if scope["type"] == "websocket" or _is_unserved(path, method):
            await _refuse(scope, send, 404, "not served here (this server runs the WebRTC page)")
            return
        if self.access_token and path not in OPEN_PATHS and not token_matches(
                given, self.access_token):
            await _reply(send, 401, "an access token is required: open the URL with ?token=... "
                         "that the bot printed at start-up (a client of its own sends it as "
                         "Authorization: Bearer ... or X-Access-Token)")
            return
        if method != "POST" or not _is_signalling(path):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        body, complete = await _read_body(receive, MAX_BODY_BYTES)
        if not complete:
            await _reply(send, 413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        problem, data = self._checked(scope["path"], body)
        if problem:
            logger.warning(f"Signalling: {scope['path']} from {address} refused: {problem}")
            await _reply(send, 400, problem)
            return
        renegotiation = path.endswith("/api/offer") and self.capacity.holds_peer(data.get("pc_id"))
        # One start per session: a renegotiation of a running conversation's peer (the bot asks
        # for one when the client offers video; an ICE restart) and the first offer of a session
        # this address started with /start are not counted again.
        started = None if renegotiation else self._started.take(path, address)
        if renegotiation:
            wait = self.renegotiations.take(str(data.get("pc_id")))
            if wait:
                await self._too_many(send, address, wait)
                return
        elif started is None:
            wait = self.limiter.take(address)
            if wait:
                await self._too_many(send, address, wait)
                return
        if path == "/start":
            if self.capacity.full():
                await self._busy(send, address)
                return
            await self.app(scope, _replay(body, receive), self._started.watch(address, send))
            return
        if renegotiation:  # its slot is already counted
            await self.app(scope, _replay(body, receive), send)
            return
        slot = self.capacity.reserve()
        if slot is None:
            if started is not None:
                self._started.give_back(started)  # the client may offer again when told to
            await self._busy(send, address)
            return
        status: list[int] = []

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        token = capacity_registry.enter(slot)
        try:
            await self.app(scope, _replay(body, receive), watch)
        finally:
            capacity_registry.leave(token)
            answered = bool(status) and 200 <= status[0] < 300
            self.capacity.settle(slot, answered=answered)
            if started is not None and not answered:
                self._started.give_back(started)

    async def _too_many(self, send: Any, address: str, wait: float) -> None:
        now = time.monotonic()
        if now - self._warned.get(address, -math.inf) > 60:  # one line a minute per address
            self._warned[address] = now
            logger.warning(f"Signalling: too many offers from {address} "
                           f"(over {self.limiter.rate * 60:g} a minute): refusing them")
        await _reply(send, 429, f"too many sessions started from {address}: try again in "
                     f"{math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})

    async def _busy(self, send: Any, address: str) -> None:
        limit = self.capacity.limit
        logger.warning(f"Signalling: busy ({limit} conversation{'s' if limit != 1 else ''} "
                       f"running, MAX_CONVERSATIONS): refused a session from {address}")
        retry = capacity_registry.RETRY_AFTER_SECS
        await _reply(send, 503, f"busy: this machine is already running its {limit} "
                     f"conversation{'s' if limit != 1 else ''} at once (MAX_CONVERSATIONS); "
                     f"try again in {retry} s", {"retry-after": str(retry)})

    def _checked(self, path: str, body: bytes) -> tuple[str | None, dict]:
        """What is wrong with a signalling body (None: nothing), and the body parsed."""
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return "the body must be JSON", {}
        if not isinstance(data, dict):
            return "the body must be a JSON object", {}
        return self._problem(path, data), data

    def _problem(self, path: str, data: dict) -> str | None:
        if path == "/start":
            transport = data.get("transport") or ("daily" if data.get("createDailyRoom") else None)
            if transport is not None and transport not in self.transports:
                return (f"transport {transport!r} is not served here (this server runs "
                        f"{', '.join(self.transports)}; start the bot with -t daily for Daily)")
            return None
        if path.endswith("/api/offer"):
            sdp, kind = data.get("sdp"), data.get("type")
            if not isinstance(sdp, str) or not sdp.startswith("v=0"):
                return "sdp must be an SDP offer (a string starting with v=0)"
            if kind != "offer":
                return f"type must be \"offer\" (got {kind!r})"
        return None


async def _read_body(receive: Callable[[], Awaitable[dict]], limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when the client goes

    return replay


async def _reply(send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def _refuse(scope: dict, send: Any, status: int, detail: str) -> None:
    if scope["type"] == "websocket":  # closed before it is accepted: a 403 to the client
        await send({"type": "websocket.close", "code": 1008})
        return
    await _reply(send, status, detail)


def install_signalling_guard(app: Any, *, offers_per_minute: int, daily: bool = False,
                             access_token: str | None = None,
                             max_conversations: int | None = None) -> None:
    """Put :class:`SignallingGuard` in front of the runner's ``app`` (before it starts)."""
    capacity_registry.set_limit(max_conversations)
    app.add_middleware(SignallingGuard, offers_per_minute=offers_per_minute,
                       transports=("webrtc", "daily") if daily else ("webrtc",),
                       access_token=access_token)


async def wait_for_peer(connection: Any, timeout: float) -> bool:
    """Until the SmallWebRTC peer connection is connected (True), or failed, closed or
    ``timeout`` seconds passed (False: the connection is closed)."""
    pc = connection.pc
    settled = asyncio.Event()

    def changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            settled.set()

    pc.on("connectionstatechange", changed)
    try:
        changed()
        await asyncio.wait_for(settled.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        pc.remove_listener("connectionstatechange", changed)
    if pc.connectionState == "connected":
        return True
    try:
        await connection.disconnect()
    except Exception as exc:  # noqa: BLE001 - a junk peer may fail to close cleanly
        logger.debug(f"closing an unconnected peer: {exc}")
    return False
