"""``python bot.py`` as a user starts it, reached by a WebRTC peer the way our page does it.

An aiortc client plays a spoken question into the runner's ``/api/offer``
(SmallWebRTC) session and listens: the persona greets, hears the question and
answers, all on the embedded models with no network. The page itself is
served at ``/`` and makes no off-machine requests (checked statically here;
the browser run is a separate check).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

from tests.conftest import ROOT, free_port
from tests.speech import write_question_wav

pytestmark = pytest.mark.e2e


async def test_local_page_is_served_and_self_contained(bot_server):
    base, _ = bot_server
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as resp:
            assert resp.status == 200
            html = await resp.text()
        async with session.get(f"{base}/local.js") as resp:
            assert resp.status == 200
            script = await resp.text()
    assert "Connect" in html and '<script src="/local.js">' in html
    # Nothing loaded from elsewhere: no absolute URLs in the page or its script.
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "http://" not in script and "https://" not in script
    assert 'fetch("/api/offer"' in script


async def test_webrtc_client_hears_a_spoken_answer(bot_server, tmp_path):
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    base, log = bot_server
    wav = write_question_wav(tmp_path / "question.wav", "What is the capital of France?",
                             lead_secs=3.0, tail_secs=25.0)
    pc = RTCPeerConnection()
    player = MediaPlayer(str(wav))
    pc.addTrack(player.audio)
    received: list[tuple[float, float]] = []  # (monotonic time, rms)
    utterances = _events(pc.createDataChannel("chat"), "conversation.utterance")

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                samples = frame.to_ndarray().astype(np.float32) / 32768.0
                received.append((time.monotonic(), float(np.sqrt((samples**2).mean()))))
        asyncio.ensure_future(consume())

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/offer", json={
                "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    # What was heard and said, as the page sees it: the utterance events on the data channel.
    deadline = time.monotonic() + 90
    heard = None
    answered = False
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            roles = [u["properties"]["role"] for u in utterances]
            if "user" in roles:
                heard = utterances[roles.index("user")]["properties"]["speech"]
                # Done when a reply to the question has been spoken (the greeting may or
                # may not have ended before the question).
                if "replica" in roles[roles.index("user"):]:
                    answered = True
                # The utterance event can come before its audio has been played: done
                # once the reply is also audible.
                if answered and any(level > 0.01 for _, level in received):
                    break
    finally:
        await pc.close()
        player.audio.stop() if player.audio else None

    text = log.read_text()
    assert heard is not None, text[-3000:]
    # Whisper tiny.en over the WebRTC path may drop or swap one short word ("what is capital
    # of france"): the question is heard when its words are there but for one.
    words = re.sub(r"[^a-z ]", "", heard.lower()).split()
    expected = "what is the capital of france".split()
    import difflib

    matcher = difflib.SequenceMatcher(a=expected, b=words)
    differing = max(len(expected), len(words)) - sum(b.size for b in matcher.get_matching_blocks())
    assert {"capital", "france"} <= set(words) and differing <= 1, heard
    assert answered, "no spoken reply after the question"
    loud = [t for t, level in received if level > 0.01]
    assert loud, "no audible bot audio arrived over WebRTC"
    assert "Participant joined Ava" in text
    assert "Traceback" not in text
    # A normal session at the default level: no DEBUG lines and no ERROR.
    assert not re.search(r"^\S+ (DEBUG|ERROR)\b", text, re.M), text[-3000:]
    assert "| DEBUG" not in text and "| ERROR" not in text
    assert text.count("Open http://localhost:") == 1  # the one banner
    # ... and none of what was said (LOG_TRANSCRIPT=1 would show it), no message bodies.
    assert not re.search(r"^\S+ INFO +(User|Ava): ", text, re.M), text[-3000:]
    assert "capital of france" not in text.lower()
    for said in [u["properties"]["speech"] for u in utterances]:
        assert said not in text
    assert "event_type" not in text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)


def _events(channel, event_type: str | None = None) -> list[dict]:
    """The interactions events (of ``event_type``, or all) arriving on ``channel``, as a
    live list."""
    import json

    found: list[dict] = []

    @channel.on("message")
    def on_message(data):
        try:
            message = json.loads(data)
        except ValueError:
            return
        if isinstance(message, dict) and "event_type" in message and (
                event_type is None or message["event_type"] == event_type):
            found.append(message)

    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_bot_stops_the_local_llm_server(tmp_path, sig):
    port = free_port()
    log = tmp_path / "bot.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PERSONA_DOTENV"] = "0"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        llm_port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and llm_port is None:
            match = re.search(r"127\.0\.0\.1:(\d+)/v1", log.read_text())
            llm_port = int(match.group(1)) if match else None
            time.sleep(0.2)
        assert llm_port, log.read_text()[-2000:]
        while time.monotonic() < deadline:  # the runner is up and the LLM server answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", llm_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", llm_port), timeout=0.5).close()
                time.sleep(0.2)
            except OSError:
                return  # nothing listens any more: the server is gone
        pytest.fail("the local LLM server still answers after the bot stopped")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_interactions_over_the_webrtc_data_channel(bot_server, tmp_path):
    """The protocol over a real transport: an aiortc peer's data channel to `python bot.py`.

    A raw Tavus message (no ``"type"`` key, as Tavus clients send it) is answered, as
    are typed ones (our page adds ``"type": "tavus"``) and RTVI's ``client-ready``."""
    import json

    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    from transports.file import write_wav_mono16

    base, log = bot_server
    silence = tmp_path / "silence.wav"
    write_wav_mono16(silence, b"\x00\x00" * 16000 * 30, 16000)
    pc = RTCPeerConnection()
    player = MediaPlayer(str(silence))
    pc.addTrack(player.audio)
    channel = pc.createDataChannel("chat")
    received = _events(channel)
    rtvi: list[dict] = []
    channel.on("message", lambda data: rtvi.append(json.loads(data)) if isinstance(data, str)
               and '"rtvi-ai"' in data else None)
    opened = asyncio.Event()

    @channel.on("open")
    def on_open():
        opened.set()

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/offer", json={
                "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as resp:
            answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    try:
        await asyncio.wait_for(opened.wait(), 20)

        async def wait_for(predicate, timeout=60):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = [m for m in received if predicate(m)]
                if found:
                    return found[0]
                await asyncio.sleep(0.1)
            raise AssertionError(f"not received; got {[m['event_type'] for m in received]}")

        # Wait for the greeting to finish, so the session is live.
        greeted = await wait_for(lambda m: m["event_type"] == "conversation.replica.stopped_speaking")
        channel.send(json.dumps({"label": "rtvi-ai", "type": "client-ready", "id": "ready-1",
                                 "data": {"version": "1.0.0"}}))
        # What a Tavus client sends: the protocol's message as it is, no "type" key.
        channel.send(json.dumps({"message_type": "conversation", "event_type": "conversation.respond",
                                 "conversation_id": greeted["conversation_id"],
                                 "properties": {"text": "Please say hello."}}))
        user = await wait_for(lambda m: m["event_type"] == "conversation.utterance"
                              and m["properties"]["role"] == "user")
        assert user["properties"]["speech"] == "Please say hello."
        reply = await wait_for(lambda m: m["event_type"] == "conversation.utterance"
                               and m["properties"]["role"] == "replica"
                               and m["inference_id"] == user["inference_id"])
        assert reply["properties"]["speech"]
        channel.send(json.dumps({"type": "tavus", "event_type": "conversation.nope"}))
        error = await wait_for(lambda m: m["event_type"] == "system.error")
        assert "unknown event_type" in error["properties"]["error"]
        # The data channel's limit is the bot's: aiortc advertises 262144 bytes in its SDP and
        # the sender refuses more (as a browser does); just under it, the message arrives
        # and our own checks answer it.
        from pipeline.interactions import MAX_MESSAGE_BYTES

        with pytest.raises(ValueError, match=str(MAX_MESSAGE_BYTES)):
            channel.send("x" * (MAX_MESSAGE_BYTES + 1))
        big = {"type": "tavus", "event_type": "conversation.respond", "properties": {"text": ""}}
        big["properties"]["text"] = "w" * (MAX_MESSAGE_BYTES - len(json.dumps(big)) - 16)
        channel.send(json.dumps(big))
        too_long = await wait_for(lambda m: m["event_type"] == "system.error"
                                  and "properties.text" in m["properties"]["error"])
        assert too_long["properties"]["received_event_type"] == "conversation.respond"
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(seqs)
        assert {m["conversation_id"] for m in received} == {user["conversation_id"]}
        assert any(m.get("type") == "bot-ready" for m in rtvi), rtvi  # RTVI is answered as before
    finally:
        await pc.close()
        if player.audio:
            player.audio.stop()
    text = log.read_text()
    assert "Error parsing JSON message" not in text, text[-3000:]  # nothing was dropped
    assert "Traceback" not in text


async def test_a_provider_error_reaches_the_webrtc_client_without_the_key(tmp_path):
    """The persona's LLM endpoint answers the greeting with 401, echoing the Authorization
    header (tests/fake_openai.py): the client's data channel gets the RTVI ``error``, and
    nothing on it, nor in the log, carries the key."""
    import json
    import threading

    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    from tests.conftest import running_bot
    from tests.fake_openai import FakeOpenAI
    from transports.file import write_wav_mono16

    secret = "sk-test-SECRET-e2e9"  # too short for Pipecat's own sk- pattern
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = asyncio.run_coroutine_threadsafe(FakeOpenAI().start(), loop).result(10)
    persona = tmp_path / "persona.json"
    persona.write_text(json.dumps({"persona_name": "Ava", "system_prompt": "You are Ava.",
                                   "layers": {"llm": {"model": "fake", "base_url": fake.base_url,
                                                      "api_key": secret}}}))
    silence = tmp_path / "silence.wav"
    write_wav_mono16(silence, b"\x00\x00" * 16000 * 30, 16000)
    raw: list[str] = []
    try:
        with running_bot(tmp_path, "--persona", str(persona)) as (base, log):
            pc = RTCPeerConnection()
            player = MediaPlayer(str(silence))
            pc.addTrack(player.audio)
            channel = pc.createDataChannel("chat")
            channel.on("message", lambda data: raw.append(data if isinstance(data, str) else ""))
            # An RTVI client (our page, Pipecat's SDK) says client-ready once the channel is
            # open: RTVI messages go out after bot-ready, errors from before it are held.
            channel.on("open", lambda: channel.send(json.dumps({
                "label": "rtvi-ai", "type": "client-ready", "id": "ready-1",
                "data": {"version": "1.0.0"}})))
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/api/offer", json={
                        "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as resp:
                    answer = await resp.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

            def rtvi_errors() -> list[dict]:
                messages = [json.loads(r) for r in raw if r.startswith("{")]
                return [m for m in messages if m.get("label") == "rtvi-ai" and m.get("type") == "error"]

            try:
                deadline = time.monotonic() + 60
                while not rtvi_errors() and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
            finally:
                await pc.close()
                if player.audio:
                    player.audio.stop()
            text = log.read_text()
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert fake.rejected >= 1, text[-3000:]  # the greeting asked the endpoint, with the key
    errors = rtvi_errors()
    assert errors and "401" in errors[0]["data"]["error"], (raw[:20], text[-3000:])
    assert secret not in "".join(raw)
    assert secret not in text


async def _open_peer(base: str, wav) -> tuple:
    """An aiortc peer as benchmarks/soak.py's one_session: (peer, player, offer response status,
    its JSON, its headers); the peer is connected when the answer was 200."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    pc = RTCPeerConnection()
    player = MediaPlayer(str(wav))
    pc.addTrack(player.audio)
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/offer", json={
                "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as resp:
            status, body, headers = resp.status, await resp.json(), dict(resp.headers)
    if status == 200:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        deadline = time.monotonic() + 20
        while pc.connectionState != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    return pc, player, status, body, headers


async def _close_peer(pc, player) -> None:
    await pc.close()
    if player.audio:
        player.audio.stop()


async def test_a_conversation_beyond_max_conversations_is_busy_503(tmp_path, monkeypatch):
    """MAX_CONVERSATIONS=1: while one conversation runs a second offer is 503 with a reason
    and Retry-After (the first goes on), and once it has ended a new one is accepted."""
    from tests.conftest import running_bot

    monkeypatch.setenv("MAX_CONVERSATIONS", "1")
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    wav = write_question_wav(tmp_path / "q.wav", "Hello there.", lead_secs=0.5, tail_secs=20.0)
    with running_bot(tmp_path) as (base, log):
        first, player, status, _, _ = await _open_peer(base, wav)
        try:
            assert status == 200 and first.connectionState == "connected", log.read_text()[-3000:]
            second, player2, status2, body2, headers2 = await _open_peer(base, wav)
            await _close_peer(second, player2)
            assert status2 == 503, (status2, body2)
            assert "busy" in body2["detail"] and int(headers2["Retry-After"]) >= 1
            assert first.connectionState == "connected"  # the running one goes on
        finally:
            await _close_peer(first, player)
        ended = re.compile(r"Conversation \S+ ended")
        deadline = time.monotonic() + 60
        while not ended.search(log.read_text()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert ended.search(log.read_text()), log.read_text()[-3000:]
        third, player3, status3, body3, _ = await _open_peer(base, wav)
        await _close_peer(third, player3)
        assert status3 == 200, (status3, body3)
        assert "MAX_CONVERSATIONS): refused" in log.read_text()


async def test_docs_are_off_and_a_token_guards_page_and_signalling(tmp_path, monkeypatch):
    from tests.conftest import running_bot

    monkeypatch.setenv("ACCESS_TOKEN", "e2e-token-42")
    with running_bot(tmp_path) as (base, log):
        async with aiohttp.ClientSession() as session:
            for path in ("/docs", "/redoc", "/openapi.json"):
                async with session.get(f"{base}{path}?token=e2e-token-42") as resp:
                    assert resp.status == 404, path
            for path in ("/", "/page-info"):
                async with session.get(f"{base}{path}") as resp:
                    assert resp.status == 401 and "access token" in (await resp.json())["detail"]
                async with session.get(f"{base}{path}?token=e2e-token-42") as resp:
                    assert resp.status == 200, path
            async with session.get(f"{base}/local.js") as resp:
                assert resp.status == 200
            async with session.post(f"{base}/api/offer", json={"sdp": "v=0\r\n", "type": "offer"}) as resp:
                assert resp.status == 401
            async with session.get(f"{base}/status", headers={"X-Access-Token": "e2e-token-42"}) as resp:
                assert (await resp.json())["transports"] == ["webrtc"]  # only what we serve
            async with session.get(f"{base}/ws-client?token=e2e-token-42") as resp:
                assert resp.status == 404
        text = log.read_text()
        assert "?token=e2e-token-42" in text  # the banner's URL carries it
        requests = [line for line in text.splitlines() if '"GET /' in line]
        leaked = [line for line in requests if "e2e-token-42" in line]
        assert requests and not leaked, leaked  # the access log does not show it
