"""The local llama.cpp server (``llama-cpp-python[server]``) as a managed child process.

The bot starts it on a free loopback port with the bundled SmolLM2 GGUF,
health-checks it before first use, and stops it on every exit path:

- normal exit and unhandled exceptions: :func:`atexit` and :meth:`LlamaServer.stop`;
- Ctrl-C / SIGTERM: the runner's shutdown ends the interpreter, which runs atexit;
- the bot killed with SIGKILL: the child was started with ``PR_SET_PDEATHSIG``
  so the kernel sends it SIGTERM when the parent dies (Linux), leaving no orphan.

It is supervised once it has been healthy: when the child dies by itself (a crash, the
OOM killer, a ``kill -9``), a watcher thread logs it at ERROR and starts a new one after a
back-off (:attr:`LlamaServer.RESTART_BACKOFF_SECS`, 1 s then 4 s); a request meanwhile
waits in :meth:`LlamaServer.wait_ready` until it answers. A child that keeps dying (more
deaths within :attr:`LlamaServer.RESTART_WINDOW_SECS` than there are back-offs) is not
started again: :meth:`LlamaServer.wait_ready` raises a :class:`LlamaServerError` saying so,
until something starts it explicitly (a new session, :meth:`LlamaServer.start`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import queue
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


def describe_exit(code: int | None) -> str:
    """A child's exit status in words ("killed by SIGKILL", "exit code 1")."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LlamaServer:
    """One llama.cpp OpenAI-compatible server child process, restarted if it dies."""

    MODEL_ALIAS = "local-smollm2"
    PROGRESS_SECS = 10.0  # a progress line this often while the server starts
    # A child that died is restarted after these delays, one per death within the window;
    # one more death within the window and it is given up on.
    RESTART_BACKOFF_SECS: tuple[float, ...] = (1.0, 4.0)
    RESTART_WINDOW_SECS = 300.0

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
        cores = os.cpu_count() or 1
        # One core is left to the rest of the bot: a reply's prompt is evaluated while the
        # audio path (Silero, RNNoise, Smart Turn) keeps running on the event loop, and it is
        # generated while Piper synthesizes its first sentence (and Whisper may run). llama.cpp's
        # threads wait on each other, so one of them sharing a busy core stalls them all: on
        # 2 cores, 2 generation threads beside Piper gave ~24 tokens/s, 1 thread ~57 (Piper no
        # slower), and a 2-thread prompt beside the audio path started its reply ~150 ms later
        # than 1 thread (benchmarks/README.md, issue 18). LLAMA_SERVER_THREADS sets both.
        self.batch_threads = threads or max(1, min(cores - 1, 4))
        self.threads = threads or max(1, min(cores // 2, 4))
        self.n_ctx = n_ctx
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: deque[str] = deque(maxlen=40)
        self._ready = False
        self._started_at = 0.0
        # Supervision: on once the server has been healthy, off again when stop() is called.
        self._lock = threading.RLock()
        self._supervised = False
        self._deaths: list[float] = []  # when supervised children died (monotonic)
        self._gave_up: LlamaServerError | None = None
        self._wake = threading.Event()  # stop() wakes a restart waiting out its back-off
        # Restarts happen on one thread that lives until stop(): a child's PR_SET_PDEATHSIG
        # fires when the *thread* that started it ends, so not on a short-lived watcher.
        self._restarts: queue.SimpleQueue | None = None
        self.restarts = 0  # children started again after one died

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
            str(self.batch_threads),
            "--verbose",
            "False",
            # Its default, stated: a streamed generation ends (at its next token) when another
            # request is waiting, so one conversation's reply never holds up the next one's
            # (the server generates one at a time). A client that closes its stream (a
            # cancelled or interrupted reply, see services/llm.py) is dropped in any case.
            "--interrupt_requests",
            "True",
        ]

    @property
    def gave_up(self) -> LlamaServerError | None:
        """Why the server is not restarted any more (it kept dying), or None."""
        return self._gave_up

    def start(self) -> None:
        """Start the child process (returns at once; see :meth:`wait_ready`).

        An explicit start also tries again a server that was given up on.
        """
        with self._lock:
            if self.running:
                return
            if not self.gguf.is_file():
                raise LlamaServerError(f"GGUF model not found: {self.gguf}")
            if self._gave_up is not None:
                logger.info("Starting the local LLM server again (it had kept dying)")
                self._gave_up = None
                self._deaths = []
            self._spawn()
            atexit.register(self.stop)

    def _spawn(self) -> None:
        """A new child process and the thread that reads its output and sees it exit."""
        logger.info(f"Starting local LLM server ({self.gguf.name}) on {self.base_url}")
        self._ready = False
        self._wake.clear()
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=not sys.platform.startswith("linux"),
        )
        threading.Thread(target=self._drain, args=(self._proc,), name="llama-server-log",
                         daemon=True).start()

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is not None:
            for raw in iter(proc.stdout.readline, b""):
                self._log.append(raw.decode("utf-8", "replace").rstrip())
        self._exited(proc, proc.wait())

    def _exited(self, proc: subprocess.Popen[bytes], code: int) -> None:
        """The watcher: a supervised child that died by itself is started again, or given up on."""
        with self._lock:
            if proc is not self._proc or not self._supervised:
                return  # stopped on purpose, replaced, or never healthy (wait_ready reports it)
            self._ready = False
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < self.RESTART_WINDOW_SECS] + [now]
            how = describe_exit(code)
            logger.debug(f"Local LLM server output before it died:\n{self.recent_output()}")
            last = self._last_line()
            said = f"; its last line: {last}" if last else ""
            if len(self._deaths) > len(self.RESTART_BACKOFF_SECS):
                self._gave_up = LlamaServerError(
                    f"the local LLM server keeps dying ({len(self._deaths)} times within "
                    f"{self.RESTART_WINDOW_SECS:.0f}s, the last {how}{said}); it is not "
                    "restarted again: see its output with --debug, or set LOCAL_LLM_GGUF "
                    "or LLAMA_SERVER_CTX")
                logger.error(str(self._gave_up))
                return
            delay = self.RESTART_BACKOFF_SECS[len(self._deaths) - 1]
            logger.error(f"The local LLM server (pid {proc.pid}) died ({how}{said}); "
                         f"restarting it in {delay:g}s")
            if self._restarts is None:
                self._restarts = queue.SimpleQueue()
                threading.Thread(target=self._restarter, args=(self._restarts,),
                                 name="llama-server-restarts", daemon=True).start()
            self._restarts.put((proc, delay))

    def _restarter(self, jobs: queue.SimpleQueue) -> None:
        """Starts the children that replace dead ones, until stop() (a None job)."""
        while (job := jobs.get()) is not None:
            dead, delay = job
            self._wake.wait(delay)  # stop() cuts the back-off short (and then sends None)
            with self._lock:
                if dead is not self._proc or not self._supervised:
                    continue  # stopped, or started anew meanwhile
                self.restarts += 1
                try:
                    self._spawn()
                except OSError as exc:
                    self._gave_up = LlamaServerError(f"the local LLM server could not be "
                                                     f"restarted: {exc}")
                    logger.error(str(self._gave_up))

    def _last_line(self) -> str:
        return next((line.strip() for line in reversed(self._log) if line.strip()), "")

    def recent_output(self) -> str:
        """The last lines the server printed."""
        return "\n".join(self._log)

    def _failure(self, what: str) -> LlamaServerError:
        """One line for the user (the server's last line says why); its full output at DEBUG."""
        logger.debug(f"Local LLM server output:\n{self.recent_output()}")
        last = self._last_line()
        return LlamaServerError(f"{what}: {last}" if last else what)

    def _restarting(self) -> bool:
        """A supervised child died and the watcher will start another (or is about to)."""
        return self._supervised and self._gave_up is None and not self.running

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/v1/models`` until the server answers 200 (at once while it is healthy).

        After a supervised child died this waits for the restarted one; raises
        :class:`LlamaServerError` if the server cannot start or was given up on.
        """
        if self._ready and self.running:
            return
        if self._gave_up is not None:
            raise self._gave_up
        if self._proc is None:
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
                if self._gave_up is not None:
                    raise self._gave_up
                if self._proc is None:
                    raise LlamaServerError("the local LLM server was stopped")
                if not self.running and not self._restarting():
                    code = self._proc.returncode if self._proc else None
                    raise self._failure(f"local LLM server exited with code {code}")
                if self.running:
                    proc = self._proc
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        async with session.get(url) as resp:
                            if resp.status == 200 and proc is self._proc and self.running:
                                self._ready = self._supervised = True
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
        with self._lock:
            proc = self._proc
            self._supervised = False  # its exit is not a death to restart
            self._wake.set()
            if self._restarts is not None:
                self._restarts.put(None)
                self._restarts = None
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
