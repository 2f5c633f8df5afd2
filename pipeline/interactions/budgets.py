"""Inbound budgets: how many messages a sender may send, how large a message may be.

Token buckets per sender (a Daily participant id, or ``None``: SmallWebRTC's one peer)
and per class: messages that make the LLM work (``respond``, the context events) have a
small bucket, everything else a larger one. A message over budget is dropped (never
queued for the LLM), and one ``system.error`` reports a burst of them, not one each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

LLM_EVENTS = frozenset({
    "conversation.respond",
    "conversation.overwrite_llm_context",
    "conversation.append_llm_context",
})
# LLM-triggering messages: a burst of 10, then 2 a second (an app that types or clicks).
LLM_BURST, LLM_RATE = 10, 2.0
# Everything else: echo audio in 20 ms chunks is 50 a second.
OTHER_BURST, OTHER_RATE = 100, 50.0
MAX_SENDERS = 64  # buckets kept (a room's participants); the oldest go first


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` a second; :meth:`take` spends one."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.rate, self._clock = float(capacity), float(rate), clock
        self._tokens, self._at = float(capacity), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass
class _Budget:
    bucket: TokenBucket
    dropping: bool = False  # a burst is being dropped (its error already sent)


class SenderBudgets:
    """Per (sender, class) buckets. :meth:`admit` -> ``(accepted, report)``: ``report`` is
    True for the first message dropped in a burst (the one that gets a ``system.error``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._budgets: dict[tuple[str | None, str], _Budget] = {}

    @staticmethod
    def kind(event_type: str | None) -> str:
        return "llm" if event_type in LLM_EVENTS else "other"

    def admit(self, sender: str | None, event_type: str | None) -> tuple[bool, bool]:
        kind = self.kind(event_type)
        key = (sender, kind)
        budget = self._budgets.pop(key, None)
        if budget is None:
            burst, rate = (LLM_BURST, LLM_RATE) if kind == "llm" else (OTHER_BURST, OTHER_RATE)
            budget = _Budget(TokenBucket(burst, rate, self._clock))
        self._budgets[key] = budget  # most recent last
        while len(self._budgets) > MAX_SENDERS:
            self._budgets.pop(next(iter(self._budgets)))
        if budget.bucket.take():
            budget.dropping = False
            return True, False
        report = not budget.dropping
        budget.dropping = True
        return False, report

    @staticmethod
    def error(event_type: str | None) -> str:
        if SenderBudgets.kind(event_type) == "llm":
            return (f"rate limit: at most {LLM_BURST} conversation.respond / "
                    f"overwrite_llm_context / append_llm_context messages at once, then "
                    f"{LLM_RATE:g} a second; these messages are dropped until the rate falls")
        return (f"rate limit: at most {OTHER_BURST} messages at once, then {OTHER_RATE:g} a "
                f"second; messages are dropped until the rate falls")


@dataclass(frozen=True)
class MessageLimits:
    """Size limits for what reaches the LLM (characters). ``engine`` names where they come from."""

    respond_chars: int | None = None  # None: the message's own limit (models.MAX_TEXT_CHARS)
    context_chars: int | None = None  # None: each message's own limit (100,000), no total
    engine: str = "this LLM"
    echo_audio_secs: float = 60.0  # echo audio buffered ahead of playback, per conversation


# A conservative characters-per-token estimate for English on a byte-level BPE (SmolLM2
# averages ~4.6): a text over limit_tokens * 4 characters is very likely over limit_tokens.
CHARS_PER_TOKEN = 4


def embedded_limits(fitter) -> MessageLimits:
    """Limits for the embedded engine from its :class:`~services.local.prompt_fit.PromptFitter`:
    a context holds the system prompt's share of the window, a respond the turns' share."""
    budget = fitter.budget(None)
    system = fitter.system_cap(budget)
    return MessageLimits(respond_chars=(budget - system) * CHARS_PER_TOKEN,
                         context_chars=system * CHARS_PER_TOKEN,
                         engine=f"the embedded LLM ({fitter.n_ctx}-token context)")
