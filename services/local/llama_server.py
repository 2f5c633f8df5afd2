"""The local llama.cpp server (``llama-cpp-python[server]``) as a managed child process.

The bot starts it on a free loopback port with the bundled SmolLM2 GGUF,
health-checks it before first use, and stops it on every exit path:

- normal exit and unhandled exceptions: :func:`atexit` and :meth:`LlamaServer.stop`;
- Ctrl-C / SIGTERM: the runner's shutdown ends the interpreter, which runs atexit;
- the bot killed with SIGKILL: the child was started with ``PR_SET_PDEATHSIG``
  so the kernel sends it SIGTERM when the parent dies (Linux), leaving no orphan.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import aiohttp
from loguru import logger

from config.errors import AgentError

_PR_SET_PDEATHSIG = 1


class LlamaServerError(AgentError):
    """The local LLM server could not be started or did not become healthy."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setsid()


class LlamaServer:
    """One llama.cpp OpenAI-compatible server child process."""

    MODEL_ALIAS = "local-smollm2"
    PROGRESS_SECS = 10.0  # a progress line this often while the server starts

    def __init__(
        self,
        gguf: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        threads: int | None = None,
        n_ctx: int = 4096,
    ):
        self.gguf = Path(gguf)
        self.host = host
        self.port = port or free_port(host)
        self.threads = threads or max(1, min(os.cpu_count() or 1, 4))
        self.n_ctx = n_ctx
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: deque[str] = deque(maxlen=40)
        self._ready = False
        self._started_at = 0.0

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.MODEL_ALIAS,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--verbose",
            "False",
        ]

    def start(self) -> None:
        """Start the child process (returns at once; see :meth:`wait_ready`)."""
        if self.running:
            return
        if not self.gguf.is_file():
            raise LlamaServerError(f"GGUF model not found: {self.gguf}")
        logger.info(f"Starting local LLM server ({self.gguf.name}) on {self.base_url}")
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=not sys.platform.startswith("linux"),
        )
        threading.Thread(target=self._drain, name="llama-server-log", daemon=True).start()
        atexit.register(self.stop)

    def _drain(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for raw in iter(proc.stdout.readline, b""):
            self._log.append(raw.decode("utf-8", "replace").rstrip())

    def recent_output(self) -> str:
        """The last lines the server printed."""
        return "\n".join(self._log)

    def _failure(self, what: str) -> LlamaServerError:
        """One line for the user (the server's last line says why); its full output at DEBUG."""
        logger.debug(f"Local LLM server output:\n{self.recent_output()}")
        last = next((line.strip() for line in reversed(self._log) if line.strip()), "")
        return LlamaServerError(f"{what}: {last}" if last else what)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/v1/models`` until the server answers 200."""
        if self._ready and self.running:
            return
        if not self.running:
            self.start()
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/models"
        next_note = time.monotonic() + self.PROGRESS_SECS
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if time.monotonic() >= next_note:  # the first start can take a minute
                    next_note += self.PROGRESS_SECS
                    took = time.monotonic() - self._started_at
                    logger.info(f"Still starting the local LLM server ({took:.0f}s; "
                                "the first start on a new machine is the slowest) ...")
                if not self.running:
                    code = self._proc.returncode if self._proc else None
                    raise self._failure(f"local LLM server exited with code {code}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            self._ready = True
                            took = time.monotonic() - self._started_at
                            logger.info(f"Local LLM server ready in {took:.1f}s")
                            return
                await asyncio.sleep(0.1)
        self.stop()
        raise self._failure(f"local LLM server not healthy after {timeout:.0f}s")

    def stop(self, timeout: float = 1.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout``).

        The server keeps nothing worth a graceful exit, and its uvicorn waits for a
        generation in progress (seconds on 2 cores) before it exits on SIGTERM.
        """
        proc = self._proc
        if proc is None:
            return
        self._ready = False
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


_shared: LlamaServer | None = None
_shared_lock = threading.Lock()


def shared_server(
    gguf: Path, *, threads: int | None = None, n_ctx: int = 4096
) -> LlamaServer:
    """The process-wide server for ``gguf`` (started once, reused by every session)."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.gguf != Path(gguf):
            _shared.stop()
            _shared = None
        if _shared is None:
            _shared = LlamaServer(gguf, threads=threads, n_ctx=n_ctx)
        if not _shared.running:
            _shared.start()
        return _shared
