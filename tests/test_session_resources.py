"""What a conversation takes, it gives back; what is not a conversation takes nothing.

``python bot.py`` as a user starts it, reached by a headless WebRTC peer
(``benchmarks/soak.py``'s client): after a first conversation has loaded what is
shared (models, thread pools), further conversations leave the process's threads
and open file descriptors where they were. Before the fix each one kept three
threads (an FFmpeg filter graph of pyrnnoise's and two ONNX Runtime pools), a file
descriptor and a hundred-odd megabytes until a full garbage collection happened to
run (session/memory.py). Checked: this test fails on the code before the fix
(threads 19 -> 25, fds 27 -> 29 over three conversations). An offer whose peer never connects starts no conversation.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time

import aiohttp
import pytest

from benchmarks.soak import ENDED, one_session, proc_stats, settle
from tests.conftest import running_bot, wait_until
from tests.speech import write_question_wav

pytestmark = pytest.mark.e2e


def _pid(log_path, base: str) -> int:
    import subprocess

    port = base.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", f"bot.py --port {port}"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def _ended(log_path) -> int:
    return len(ENDED.findall(log_path.read_text()))


def test_conversations_leave_threads_and_file_descriptors_where_they_were(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    wav = write_question_wav(tmp_path / "q.wav", "What is the capital of France?",
                             lead_secs=0.5, tail_secs=1.0)
    with running_bot(tmp_path) as (base, log):
        pid = _pid(log, base)
        samples = []
        for n in range(4):
            heard = asyncio.run(one_session(base, wav, hold=5.0))
            assert heard > 0, "the peer heard nothing"
            assert wait_until(lambda: _ended(log) > n, timeout=60), log.read_text()[-3000:]
            samples.append(settle(pid))
    baseline = samples[0]  # after the first conversation: what is shared is loaded
    last = samples[-1]
    detail = f"threads/fds per conversation: {[(s['threads'], s['fds']) for s in samples]}"
    assert last["threads"] <= baseline["threads"] + 2, detail
    assert last["fds"] <= baseline["fds"] + 2, detail


def test_an_offer_whose_peer_never_connects_starts_no_conversation(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("PERSONA_DATA_DIR", str(data))
    monkeypatch.setenv("PEER_CONNECT_TIMEOUT_SECS", "2")
    with running_bot(tmp_path) as (base, log):
        pid = _pid(log, base)
        before = proc_stats(pid)

        async def junk() -> int:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/api/offer",
                                     json={"sdp": "v=0\r\n", "type": "offer"}) as resp:
                    return resp.status

        assert asyncio.run(junk()) == 200  # aiortc answers even this
        assert wait_until(lambda: "did not connect within 2s" in log.read_text(), timeout=30)
        assert wait_until(lambda: "Discarding peer connection" in log.read_text(), timeout=10)
        time.sleep(1)
        text = log.read_text()
        assert "Participant joined" not in text
        assert not re.search(r"Conversation \S+ (started|ended)", text)
        after = proc_stats(pid)
    assert after["threads"] <= before["threads"] + 2
    db = data / "conversations.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from conversations").fetchone()[0] == 0
