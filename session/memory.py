"""Give back what a finished conversation held, right after it ends.

Root cause of the per-conversation "leak" (benchmarks/soak.py: +3 threads, +1 fd
and ~110 MB per session, 1.5 GB after 10): a finished conversation's objects form
reference cycles (processors, their tasks, event handlers and callbacks point at
each other), so reference counting never frees them, and CPython's generational
collector only runs a full collection after many more allocations. Until then
every finished conversation kept its native resources alive: ONNX Runtime
sessions with their thread pools (Piper, Smart Turn), pyrnnoise's FFmpeg filter
graph and its worker thread, aiortc's codecs, soxr resamplers. A full
``gc.collect()`` a moment after the conversation's last references are dropped
frees all of it; ``malloc_trim(0)`` then hands the freed heap pages back to the
system (glibc keeps them in per-thread arenas otherwise).

Both run in a worker thread a moment after teardown, never on the audio path.
``gc.collect()`` holds the GIL while it walks the heap: 129 ms median, 1.3 s worst
under load, on 2 cores (benchmarks/soak.py, 50 sessions); a conversation running at
that moment hears it as a gap. Python's own full collections cost the same when they
come. ``gc.freeze()`` after the collection (so later ones walk only new objects)
cut it to 2-17 ms but froze objects of conversations still finishing, and threads
and descriptors grew again: not used. ``malloc_trim`` releases the GIL (4 ms median).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time

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
    started = time.perf_counter()
    found = gc.collect()
    collected = time.perf_counter()
    _malloc_trim()
    logger.debug(f"Released a finished conversation: {found} objects in cycles, "
                 f"gc {1000 * (collected - started):.0f} ms, "
                 f"malloc_trim {1000 * (time.perf_counter() - collected):.0f} ms")


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
