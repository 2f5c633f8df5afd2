"""The local server's signalling guard: rate, size and shape of /api/offer and /start."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from transports import capacity
from transports.capacity import Capacity, default_max_conversations
from transports.guard import (
    MAX_BODY_BYTES,
    SESSION_OFFER_SECS,
    OfferLimiter,
    SignallingGuard,
    StartedSessions,
)


def app_with_guard(per_minute: int = 10, *, token: str | None = None,
                   slots: Capacity | None = None, conversation=None,
                   address: str = "testclient") -> tuple[TestClient, list]:
    """The guard in front of stand-ins for the runner's routes. ``conversation(slot)``
    stands in for the bot session the runner starts from an answered offer (one without a
    ``pc_id``: an offer with one renegotiates that peer)."""
    reached: list = []
    app = FastAPI()

    @app.post("/api/offer")
    async def offer(request: Request):
        reached.append(("offer", await request.json()))
        if conversation is not None and not reached[-1][1].get("pc_id"):  # not a renegotiation
            conversation(capacity.claim(f"pc-{len(reached)}"))
        return {"sdp": "v=0 answer", "type": "answer", "pc_id": "x"}

    @app.get("/")
    async def page():
        return {}

    @app.post("/start")
    async def start(request: Request):
        body = await request.body()
        reached.append(("start", await request.json() if body else None))
        return {"sessionId": f"s{len(reached)}"}

    @app.post("/sessions/{sid}/api/offer")
    async def proxied(sid: str, request: Request):
        reached.append(("proxied", await request.json()))
        if conversation is not None and not reached[-1][1].get("pc_id"):
            conversation(capacity.claim(f"pc-{len(reached)}"))
        return {}

    @app.patch("/api/offer")
    @app.patch("/sessions/{sid}/api/offer")
    async def candidates(request: Request):
        reached.append(("candidates", await request.json()))
        return {"status": "success"}

    @app.get("/page-info")
    async def info():
        return {}

    app.add_middleware(SignallingGuard, offers_per_minute=per_minute, access_token=token,
                       capacity=slots if slots is not None else Capacity())
    return TestClient(app, client=(address, 50000)), reached


OFFER = {"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "type": "offer"}


@pytest.mark.parametrize("path, body, status, words", [
    ("/start", b"[1, 2]", 400, "JSON object"),
    ("/start", b'"text"', 400, "JSON object"),
    ("/start", b"{not json", 400, "must be JSON"),
    ("/start", b'{"transport": "daily"}', 400, "'daily' is not served here"),
    ("/start", b'{"createDailyRoom": true}', 400, "'daily' is not served here"),
    ("/start", b'{"transport": "twilio"}', 400, "not served here"),
    ("/api/offer", b'{"sdp": "hello", "type": "offer"}', 400, "starting with v=0"),
    ("/api/offer", b'{"sdp": "v=0\\r\\n", "type": "answer"}', 400, "type must be"),
    ("/api/offer", b'{"type": "offer"}', 400, "sdp must be"),
    ("/api/offer", b"[]", 400, "JSON object"),
    ("/sessions/abc/api/offer", b'{"sdp": 5, "type": "offer"}', 400, "sdp must be"),
])
def test_malformed_signalling_is_a_4xx_with_a_reason_and_reaches_nothing(path, body, status, words):
    client, reached = app_with_guard()
    resp = client.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status
    assert words in resp.json()["detail"]
    assert reached == []


def test_well_formed_requests_pass_with_their_body():
    client, reached = app_with_guard()
    assert client.post("/api/offer", json=OFFER).status_code == 200
    assert client.post("/start", json={"transport": "webrtc", "body": {"a": 1}}).status_code == 200
    assert client.post("/start", content=b"").status_code == 200  # the prebuilt client's empty body
    assert client.get("/page-info").status_code == 200  # not signalling: not counted or read
    assert reached[0] == ("offer", OFFER)
    assert reached[1] == ("start", {"transport": "webrtc", "body": {"a": 1}})


def test_a_body_over_the_limit_is_413():
    client, reached = app_with_guard()
    resp = client.post("/api/offer", content=b"x" * (MAX_BODY_BYTES + 1))
    assert resp.status_code == 413 and str(MAX_BODY_BYTES) in resp.json()["detail"]
    assert reached == []


def test_offers_beyond_the_rate_are_429_with_retry_after():
    client, reached = app_with_guard(per_minute=6)  # burst 3
    codes = [client.post("/api/offer", json=OFFER).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = client.post("/start", json={})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "try again" in refused.json()["detail"]
    assert len(reached) == 3


def test_the_bucket_refills_and_is_per_address():
    now = [0.0]
    limiter = OfferLimiter(per_minute=12, clock=lambda: now[0])  # burst 6, one per 5 s
    assert all(limiter.take("a") == 0 for _ in range(6))
    wait = limiter.take("a")
    assert 4.9 < wait <= 5.0
    assert limiter.take("b") == 0  # another address has its own bucket
    now[0] += 5.0
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0


# What Pipecat's web client SDK sends (@pipecat-ai/small-webrtc-transport 1.10.8, measured
# against python bot.py in tests/test_pipecat_client.py): startBotAndConnect POSTs /start, then
# the offer to /sessions/{id}/api/offer, PATCHes its ICE candidates there, and POSTs the offer
# again with its pc_id when the bot asks to renegotiate (SmallWebRTC does when the client offers
# video, which the SDK always does); connect() does the same on /api/offer.


def _sdk_session(client, running) -> list[int]:
    """One startBotAndConnect session's requests, as the SDK makes them: their status codes."""
    start = client.post("/start", json={"transport": "webrtc", "requestData": {}})
    if start.status_code != 200:
        return [start.status_code]
    offer_url = f"/sessions/{start.json()['sessionId']}/api/offer"
    codes = [start.status_code, client.post(offer_url, json={**OFFER, "pc_id": None,
                                                             "restart_pc": False}).status_code]
    pc_id = running[-1].pc_id if running else None
    codes.append(client.patch(offer_url, json={"pc_id": pc_id, "candidates": [
        {"candidate": "candidate:1 1 udp 2122260223 192.168.1.2 50000 typ host",
         "sdp_mid": "0", "sdp_mline_index": 0}]}).status_code)
    codes.append(client.post(offer_url, json={**OFFER, "pc_id": pc_id, "restart_pc": False}).status_code)
    return codes


def test_a_pipecat_client_session_is_one_start_however_it_signals():
    running: list = []
    client, reached = app_with_guard(per_minute=4, conversation=running.append)  # burst 2
    # Each session: /start, its first offer, trickle ICE, the renegotiation. Counted once.
    assert _sdk_session(client, running) == [200, 200, 200, 200]
    assert _sdk_session(client, running) == [200, 200, 200, 200]
    assert [kind for kind, _ in reached].count("proxied") == 4
    assert len(running) == 2  # the renegotiations started no conversation (their slot is held)
    assert _sdk_session(client, running) == [429]  # a third start within the burst: refused


def test_connect_to_api_offer_renegotiates_without_counting_again():
    running: list = []
    client, _ = app_with_guard(per_minute=4, conversation=running.append)  # burst 2
    for _ in range(2):
        assert client.post("/api/offer", json={**OFFER, "pc_id": None}).status_code == 200
        assert client.patch("/api/offer", json={"pc_id": running[-1].pc_id, "candidates": []}).status_code == 200
        again = client.post("/api/offer", json={**OFFER, "pc_id": running[-1].pc_id})
        assert again.status_code == 200
    assert client.post("/api/offer", json=OFFER).status_code == 429
    # A pc_id no running conversation holds is a new offer: counted (and refused here).
    assert client.post("/api/offer", json={**OFFER, "pc_id": "made-up"}).status_code == 429


def test_a_running_peer_s_renegotiations_have_a_bucket_of_their_own():
    from transports.guard import RENEGOTIATIONS_PER_MINUTE

    running: list = []
    client, _ = app_with_guard(per_minute=4, conversation=running.append)
    assert client.post("/api/offer", json={**OFFER, "pc_id": None}).status_code == 200
    pc_id = running[-1].pc_id
    statuses = [client.post("/api/offer", json={**OFFER, "pc_id": pc_id}).status_code
                for _ in range(RENEGOTIATIONS_PER_MINUTE)]
    burst = RENEGOTIATIONS_PER_MINUTE // 2
    assert statuses[:burst] == [200] * burst and statuses[burst:] == [429] * (len(statuses) - burst)
    # New offers from the same address still have their own budget.
    assert client.post("/api/offer", json=OFFER).status_code == 200


def test_a_started_session_s_first_offer_is_free_and_no_other():
    client, _ = app_with_guard(per_minute=4)  # burst 2
    sid = client.post("/start", json={}).json()["sessionId"]
    assert client.post(f"/sessions/{sid}/api/offer", json=OFFER).status_code == 200  # free
    assert client.post(f"/sessions/{sid}/api/offer", json=OFFER).status_code == 200  # counted: 2nd
    assert client.post(f"/sessions/{sid}/api/offer", json=OFFER).status_code == 429
    assert client.post("/sessions/never-started/api/offer", json=OFFER).status_code == 429


def test_started_sessions_belong_to_their_address_expire_and_come_back_when_refused():
    import asyncio

    now = [0.0]
    started = StartedSessions(clock=lambda: now[0])

    async def send(message):
        pass

    async def answer(session_id: str, address: str, status: int = 200):
        watch = started.watch(address, send)
        await watch({"type": "http.response.start", "status": status, "headers": []})
        await watch({"type": "http.response.body", "body": f'{{"sessionId": "{session_id}"}}'.encode()})

    asyncio.run(answer("a", "10.0.0.1"))
    asyncio.run(answer("refused", "10.0.0.1", status=503))
    assert started.take("/sessions/refused/api/offer", "10.0.0.1") is None  # never answered
    assert started.take("/sessions/a/api/offer", "10.0.0.2") is None  # another address
    taken = started.take("/sessions/a/api/offer", "10.0.0.1")
    assert taken is not None and started.take("/sessions/a/api/offer", "10.0.0.1") is None
    started.give_back(taken)  # its offer was refused (busy): the next one is still the first
    assert started.take("/sessions/a/api/offer", "10.0.0.1") is not None
    asyncio.run(answer("b", "10.0.0.1"))
    now[0] += SESSION_OFFER_SECS
    assert started.take("/sessions/b/api/offer", "10.0.0.1") is None  # too late


def test_a_busy_first_offer_leaves_its_session_free_for_the_retry():
    slots = Capacity(limit=1)
    running: list = []
    client, _ = app_with_guard(per_minute=4, slots=slots, conversation=running.append)  # burst 2
    sid = client.post("/start", json={}).json()["sessionId"]
    assert client.post("/api/offer", json=OFFER).status_code == 200  # another tab takes the slot
    assert client.post(f"/sessions/{sid}/api/offer", json=OFFER).status_code == 503
    running[0].release()  # that conversation ends
    assert client.post(f"/sessions/{sid}/api/offer", json=OFFER).status_code == 200  # not 429


def test_trickle_ice_patches_pass_even_when_offers_are_refused():
    client, reached = app_with_guard(per_minute=2)  # burst 2
    for _ in range(3):
        client.post("/api/offer", json=OFFER)
    assert client.post("/api/offer", json=OFFER).status_code == 429
    patch = {"pc_id": "pc-1", "candidates": []}
    assert client.patch("/api/offer", json=patch).status_code == 200
    assert client.patch("/sessions/s1/api/offer", json=patch).status_code == 200
    assert reached[-2:] == [("candidates", patch), ("candidates", patch)]


# --------------------------------------------------------------------------- capacity


def test_offers_beyond_max_conversations_are_503_and_running_ones_keep_their_slots():
    slots = Capacity(limit=2)
    running: list = []  # the conversations the stand-in runner started (their slots)
    client, reached = app_with_guard(per_minute=60, slots=slots, conversation=running.append)
    assert [client.post("/api/offer", json=OFFER).status_code for _ in range(2)] == [200, 200]
    assert slots.in_use == 2 and all(s is not None and s.claimed for s in running)
    busy = client.post("/api/offer", json=OFFER)
    assert busy.status_code == 503
    assert int(busy.headers["retry-after"]) >= 1
    assert "busy" in busy.json()["detail"] and "MAX_CONVERSATIONS" in busy.json()["detail"]
    assert client.post("/start", json={}).status_code == 503  # told before it offers
    assert len(reached) == 2  # the runner never saw the extra offer
    assert slots.in_use == 2 and not any(s.released for s in running)  # the two go on
    # A renegotiation of a running conversation's peer is not a new conversation.
    again = client.post("/api/offer", json={**OFFER, "pc_id": running[0].pc_id})
    assert again.status_code == 200 and slots.in_use == 2
    running[0].release()  # the first conversation ends
    assert client.post("/api/offer", json=OFFER).status_code == 200
    assert slots.in_use == 2


def test_a_refused_or_unclaimed_offer_gives_its_slot_back():
    now = [0.0]
    slots = Capacity(limit=1, clock=lambda: now[0])
    app = FastAPI()

    @app.post("/api/offer")
    async def offer(request: Request):
        if (await request.json()).get("fail"):
            from fastapi import HTTPException

            raise HTTPException(500)
        return {"sdp": "v=0 answer", "type": "answer"}  # answered, no conversation claims it

    app.add_middleware(SignallingGuard, offers_per_minute=60, capacity=slots)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/api/offer", json={**OFFER, "fail": True}).status_code == 500
    assert slots.in_use == 0  # the runner failed: nothing is running
    assert client.post("/api/offer", json=OFFER).status_code == 200
    assert slots.in_use == 1  # answered: a conversation may still claim it ...
    assert client.post("/api/offer", json=OFFER).status_code == 503
    now[0] += capacity.UNCLAIMED_GRACE_SECS
    assert slots.in_use == 0  # ... but none did within the grace
    assert client.post("/api/offer", json=OFFER).status_code == 200


@pytest.mark.parametrize("engines, cores, expected", [
    (("llama-local", "whisper"), 2, 1), (("llama-local", "whisper"), 1, 1),
    (("llama-local", "whisper"), 8, 4), (("openai", "whisper"), 2, 1),
    (("openai", "deepgram"), 2, 4), (("openai", "deepgram"), 1, 2),
])
def test_the_default_capacity_follows_the_engines_and_cores(engines, cores, expected):
    from types import SimpleNamespace

    plan = SimpleNamespace(llm=SimpleNamespace(engine=engines[0]),
                           stt=SimpleNamespace(engine=engines[1]))
    assert default_max_conversations(plan, cores) == expected


# --------------------------------------------------------------------------- access token


@pytest.mark.parametrize("how", ["query", "header", "bearer"])
def test_with_a_token_the_page_and_signalling_need_it(how):
    client, reached = app_with_guard(token="s3cret-token")
    for path in ("/", "/page-info"):
        refused = client.get(path)
        assert refused.status_code == 401 and "access token" in refused.json()["detail"]
    assert client.post("/api/offer", json=OFFER).status_code == 401
    assert client.post("/api/offer?token=wrong", json=OFFER).status_code == 401
    assert client.post("/start", json={}, headers={"x-access-token": "s3cret-toke"}).status_code == 401
    assert reached == []
    kwargs = {"query": {"params": {"token": "s3cret-token"}},
              "header": {"headers": {"X-Access-Token": "s3cret-token"}},
              "bearer": {"headers": {"Authorization": "Bearer s3cret-token"}}}[how]
    assert client.get("/page-info", **kwargs).status_code == 200
    assert client.get("/", **kwargs).status_code == 200
    assert client.post("/api/offer", json=OFFER, **kwargs).status_code == 200
    assert len(reached) == 1


def test_without_a_token_nothing_asks_for_one_and_unserved_transports_are_404():
    client, _ = app_with_guard()
    assert client.get("/page-info").status_code == 200
    for path in ("/ws", "/ws-client", "/daily", "/daily-dialin-webhook"):
        assert client.get(path).status_code == 404
    assert client.post("/", json={}).status_code == 404  # the runner's telephony webhook


def test_the_token_is_taken_out_of_the_query_the_server_logs():
    seen: list = []
    app = FastAPI()

    @app.get("/page-info")
    async def info(request: Request):
        seen.append(request.url.query)
        return {}

    app.add_middleware(SignallingGuard, offers_per_minute=10, access_token="tok",
                       capacity=Capacity())
    assert TestClient(app).get("/page-info?ec=0&token=tok").status_code == 200
    assert seen == ["ec=0"]
