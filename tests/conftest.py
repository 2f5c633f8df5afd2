"""Shared fixtures. A developer's .env and shell keys never reach the tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PERSONAS = ROOT / "personas"
OUTPUT = ROOT / "tests" / "output"

_KEY_VARS = [Settings.env_name(f) for f in Settings._ENV]
# Captured before the autouse fixture clears them: only `-m live` tests may use real keys.
LIVE_ENV = {var: os.environ.get(var, "") for var in _KEY_VARS}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in _KEY_VARS + ["LOG_LEVEL", "LOG_TRANSCRIPT", "DAILY_ROOM_URL"]:
        monkeypatch.delenv(var, raising=False)
    yield
    from conversation.lifecycle import close_records

    close_records()  # each test's records (store thread, callback thread) end with it


@pytest.fixture
def default_persona() -> dict:
    return json.loads((PERSONAS / "default.json").read_text())


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


def wait_until(predicate, timeout: float = 15.0) -> bool:
    """Poll ``predicate`` every 50 ms until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_bot(tmp_path: Path, *args: str):
    """`python bot.py --port N ARGS` as a user starts it (no keys, no .env), until the block
    ends (then SIGTERM, as a service manager stops it); yields (base URL, log path)."""
    port = free_port()
    log = tmp_path / "bot.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PERSONA_DOTENV": "0"})
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), "--port", str(port), *args],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"bot exited early:\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        yield f"http://localhost:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def running_bot_with_fake_llm(tmp_path: Path, answers: list, *args: str):
    """:func:`running_bot` on the default persona (embedded Whisper, Piper, Smart Turn) whose
    LLM is a zero-latency stand-in (tests/fake_openai.py) giving ``answers`` in turn: the
    embedded SmolLM2 on a shared, loaded 2-core machine took 5-12 s to a first sentence."""
    import asyncio
    import threading

    from tests.fake_openai import FakeOpenAI

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = asyncio.run_coroutine_threadsafe(FakeOpenAI(answers=answers).start(), loop).result(10)
    persona = json.loads((ROOT / "personas" / "default.json").read_text())
    persona["layers"]["llm"].update({"base_url": fake.base_url, "model": "fake",
                                     "api_key": "test-key"})
    persona_path = tmp_path / "persona.json"
    persona_path.write_text(json.dumps(persona))
    try:
        with running_bot(tmp_path, "--persona", str(persona_path), *args) as running:
            yield running
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


@contextlib.contextmanager
def running_llama_server(n_ctx: int):
    """A real embedded llama.cpp server (2 threads, context ``n_ctx``), ready, until the
    block ends (a small context keeps real-model tests cheap)."""
    import asyncio

    from services.local.llama_server import LlamaServer
    from services.local.models import llm_gguf

    server = LlamaServer(llm_gguf(), threads=2, n_ctx=n_ctx)
    try:
        asyncio.run(server.wait_ready(timeout=120))
        yield server
    finally:
        server.stop()


@pytest.fixture
def bot_server(tmp_path):
    """`python bot.py --port N` as a user starts it; yields (base URL, log)."""
    with running_bot(tmp_path) as running:
        yield running


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in. root ignores a chmod 555 directory,
    so as root: a procfs directory, which nobody can create files in."""
    if os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    if not Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no directory root cannot write to")
    return Path("/proc/self")
