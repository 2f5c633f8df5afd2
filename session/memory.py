"""Give the memory a finished conversation freed back to the operating system.

A conversation allocates a few hundred megabytes across native libraries (PyAV,
ONNX Runtime, CTranslate2, soxr) from many threads. glibc's allocator keeps what
they free in per-thread arenas, so the process's resident memory only grows from
one conversation to the next even though nothing is leaked (benchmarks/soak.py
measured ~40 MB per session). ``malloc_trim(0)`` hands the free pages back. It
runs in a worker thread (ctypes releases the GIL for the call) a moment after
the conversation's objects are dropped, never on the audio path.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc

from loguru import logger

RELEASE_DELAY_SECS = 2.0  # after teardown: the runner drops the session's last references

_libc = None


def _malloc_trim():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def release_now() -> None:
    """Collect reference cycles, then return free heap pages to the system."""
    gc.collect()
    _malloc_trim()


def release_soon(delay: float = RELEASE_DELAY_SECS) -> None:
    """:func:`release_now` in a worker thread ``delay`` seconds from now (no loop: now)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        release_now()
        return

    def start() -> None:
        future = loop.run_in_executor(None, release_now)
        future.add_done_callback(
            lambda f: f.exception() and logger.debug(f"memory release failed: {f.exception()}"))

    loop.call_later(delay, start)
