"""The embedded llama.cpp server: health-checked before use, never left running, restarted
when its child dies (and given up on, clearly, when it keeps dying)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from services.local.llama_server import LlamaServer, LlamaServerError
from services.local.models import llm_gguf
from tests.conftest import ROOT, wait_until


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, secs: float = 15) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


async def test_starts_answers_and_stops():
    server = LlamaServer(llm_gguf(), threads=1, n_ctx=512)
    server.start()
    pid = server.pid
    try:
        await server.wait_ready(timeout=60)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.base_url}/models") as resp:
                assert resp.status == 200
                data = await resp.json()
        assert data["data"][0]["id"] == LlamaServer.MODEL_ALIAS
    finally:
        server.stop()
    assert not server.running and wait_gone(pid)


async def test_missing_model_is_a_clear_error(tmp_path):
    server = LlamaServer(tmp_path / "nope.gguf")
    with pytest.raises(LlamaServerError, match="not found"):
        server.start()


async def test_a_bad_model_file_fails_health_check_with_its_output(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf")
    server = LlamaServer(bogus, threads=1)
    with pytest.raises(LlamaServerError, match="exited"):
        await server.wait_ready(timeout=60)
    server.stop()


@pytest.mark.parametrize("how", ["sigkill", "sigterm", "exception"])
def test_no_orphan_when_the_bot_process_dies(how):
    script = textwrap.dedent(f"""
        import sys, time, asyncio
        sys.path.insert(0, {str(ROOT)!r})
        from services.local.llama_server import shared_server
        from services.local.models import llm_gguf
        server = shared_server(llm_gguf(), threads=1, n_ctx=512)
        asyncio.run(server.wait_ready(timeout=60))
        print(server.pid, flush=True)
        if {how!r} == "exception":
            raise RuntimeError("pipeline crashed")
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        child = int(proc.stdout.readline().strip())
        assert alive(child)
        if how == "sigkill":
            proc.send_signal(signal.SIGKILL)
        elif how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert wait_gone(child), f"llama server {child} survived the bot ({how})"
    finally:
        if proc.poll() is None:
            proc.kill()


# --------------------------------------------------------------------------- supervision

# A stand-in for the server that answers /v1/models like it (starts in a blink), so the
# supervisor's bookkeeping is tested without loading a model.
STANDIN = textwrap.dedent("""
    import http.server, json, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "local-smollm2"}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


class StandIn(LlamaServer):
    RESTART_BACKOFF_SECS = (0.1, 0.2)

    def command(self) -> list[str]:
        return [sys.executable, "-c", STANDIN, str(self.port)]


def wait_for_restart(server: LlamaServer, old_pid: int, secs: float = 15) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if server.pid not in (None, old_pid) and server.running:
            return True
        time.sleep(0.05)
    return False


async def test_a_server_that_died_is_restarted_and_answers_again():
    server = LlamaServer(llm_gguf(), threads=1, n_ctx=512)
    try:
        await server.wait_ready(timeout=60)
        first = server.pid
        os.kill(first, signal.SIGKILL)
        assert wait_for_restart(server, first)  # the supervisor starts another child
        await server.wait_ready(timeout=60)  # which is waited for until it answers
        assert server.pid != first and server.restarts == 1 and server.gave_up is None
        async with aiohttp.ClientSession() as session, session.get(
                f"{server.base_url}/models") as resp:
            assert resp.status == 200
        restarted = server.pid
        await asyncio.sleep(1.5)  # the restarted child outlives the thread that saw the death
        assert alive(restarted)
    finally:
        server.stop()
    assert wait_gone(restarted)


async def test_a_server_that_keeps_dying_is_given_up_with_a_clear_error():
    from loguru import logger

    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    server = StandIn(Path(__file__))  # any existing file: the stand-in loads nothing
    try:
        await server.wait_ready(timeout=30)
        for _ in StandIn.RESTART_BACKOFF_SECS:  # each death within the window: restarted
            pid = server.pid
            os.kill(pid, signal.SIGKILL)
            assert wait_for_restart(server, pid)
            await server.wait_ready(timeout=30)
        pid = server.pid
        os.kill(pid, signal.SIGKILL)  # one more: given up on
        assert wait_until(lambda: server.gave_up is not None)
        with pytest.raises(LlamaServerError, match="keeps dying"):
            await server.wait_ready(timeout=30)
        assert server.restarts == 2 and not server.running
        assert any("keeps dying" in e and "SIGKILL" in e for e in errors)
        assert sum("restarting it" in e for e in errors) == 2
        server.start()  # an explicit start (a new session) tries again
        await server.wait_ready(timeout=30)
        assert server.gave_up is None
    finally:
        logger.remove(sink)
        server.stop()


async def test_a_stopped_server_is_not_restarted():
    server = StandIn(Path(__file__))
    await server.wait_ready(timeout=30)
    pid = server.pid
    server.stop()
    await asyncio.sleep(0.5)  # more than the back-off
    assert not server.running and server.restarts == 0 and not alive(pid)
