"""The embedded llama.cpp server: health-checked before use, never left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import aiohttp
import pytest

from services.local.llama_server import LlamaServer, LlamaServerError
from services.local.models import llm_gguf
from tests.conftest import ROOT


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
