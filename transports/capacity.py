"""How many conversations this process runs at once, and the slots that count them.

A slot is taken when :class:`transports.guard.SignallingGuard` accepts a WebRTC offer
(``POST /api/offer``) and given back when that offer's conversation ends; an offer whose
peer never connects, or that the runner fails to answer, gives it back too. Beyond
``MAX_CONVERSATIONS`` the guard answers ``503`` with ``Retry-After`` before any peer
connection is created, so the conversations already running keep their CPU.

The hand-over from the guard to the session code is a context variable: the guard sets it
around the runner's request handling, and the bot's runner entry (which Pipecat runs from
that request, as a background task of it or a task created in it) inherits it and
:func:`claim` s the slot for the conversation's lifetime.

Default (:func:`default_max_conversations`), from ``benchmarks/README.md``, "Concurrency
and memory" (2 cores): with cloud-style STT / LLM / TTS a conversation costs ~0.16-0.22
core and 4 at once kept p95 within 20 % (6: +33 %), so **2 per core**. With the embedded
models (llama.cpp LLM, Whisper) the models themselves take the cores: one turn's Whisper
and LLM use both cores of that machine for ~1 s, and two conversations talking at once
would each wait for the other's turn, so **one per two cores** (at least 1).
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Callable
from typing import Any

# An answered offer whose conversation never claimed its slot (the runner changed how it
# starts bots, or failed between answering and starting one) gives it back after this long.
UNCLAIMED_GRACE_SECS = 30.0
RETRY_AFTER_SECS = 30  # what a busy answer tells the client; a conversation lasts minutes

EMBEDDED_ENGINES = ("llama-local", "whisper")


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_max_conversations(plan: Any, cores: int | None = None) -> int:
    """The measured rule (see the module): embedded LLM or STT: ``max(1, cores // 2)``;
    otherwise ``2 * cores``."""
    cores = machine_cores() if cores is None else cores
    engines = {getattr(getattr(plan, layer, None), "engine", None) for layer in ("llm", "stt")}
    if engines & set(EMBEDDED_ENGINES):
        return max(1, cores // 2)
    return max(1, 2 * cores)


class Slot:
    """One accepted offer, until its conversation ends (:meth:`release`, idempotent)."""

    def __init__(self, owner: Capacity):
        self._owner = owner
        self.claimed = False
        self.released = False
        self.pc_id: str | None = None
        self.expires: float | None = None  # set when answered but not yet claimed

    def claim(self, pc_id: str | None = None) -> None:
        self.claimed, self.pc_id, self.expires = True, pc_id, None

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._owner._slots.discard(self)


class Capacity:
    """Slots up to ``limit`` (None: no limit, still counted)."""

    def __init__(self, limit: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._slots: set[Slot] = set()

    def _expire(self) -> None:
        now = self._clock()
        for slot in list(self._slots):
            if not slot.claimed and slot.expires is not None and now >= slot.expires:
                slot.release()

    @property
    def in_use(self) -> int:
        self._expire()
        return len(self._slots)

    def full(self) -> bool:
        return self.limit is not None and self.in_use >= self.limit

    def reserve(self) -> Slot | None:
        """A slot for a new offer, or None when every one is taken."""
        if self.full():
            return None
        slot = Slot(self)
        self._slots.add(slot)
        return slot

    def settle(self, slot: Slot, answered: bool) -> None:
        """The runner's handling of the offer returned: an unanswered offer's slot is given
        back now; an answered one's, if no conversation claimed it, after the grace."""
        if slot.claimed or slot.released:
            return
        if not answered:
            slot.release()
        else:
            slot.expires = self._clock() + UNCLAIMED_GRACE_SECS

    def holds_peer(self, pc_id: Any) -> bool:
        """Whether ``pc_id`` is the peer of a running conversation (a renegotiation)."""
        return isinstance(pc_id, str) and any(s.pc_id == pc_id for s in self._slots)


conversations = Capacity()  # this process's (bot.py sets the limit before the runner starts)
_current: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("offer_slot", default=None)


def set_limit(limit: int | None) -> None:
    conversations.limit = limit


def enter(slot: Slot) -> contextvars.Token:
    """The guard: ``slot`` is the one of the offer being handled in this context."""
    return _current.set(slot)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)


def claim(pc_id: str | None = None) -> Slot | None:
    """The bot's runner entry: take over the slot of the offer that started it (None when
    it was not started through the guard: nothing to give back)."""
    slot = _current.get()
    if slot is None or slot.released:
        return None
    slot.claim(pc_id)
    return slot
