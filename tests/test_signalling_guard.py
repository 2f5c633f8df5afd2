"""The local server's signalling guard: rate, size and shape of /api/offer and /start."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from transports.guard import MAX_BODY_BYTES, OfferLimiter, SignallingGuard


def app_with_guard(per_minute: int = 10) -> tuple[TestClient, list]:
    reached: list = []
    app = FastAPI()

    @app.post("/api/offer")
    async def offer(request: Request):
        reached.append(("offer", await request.json()))
        return {"sdp": "v=0 answer", "type": "answer", "pc_id": "x"}

    @app.post("/start")
    async def start(request: Request):
        body = await request.body()
        reached.append(("start", await request.json() if body else None))
        return {"sessionId": "s"}

    @app.post("/sessions/{sid}/api/offer")
    async def proxied(sid: str, request: Request):
        reached.append(("proxied", await request.json()))
        return {}

    @app.get("/page-info")
    async def info():
        return {}

    app.add_middleware(SignallingGuard, offers_per_minute=per_minute)
    return TestClient(app), reached


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
