"""The conversation transcript, kept in memory as it happens.

Fed by the context aggregators' events: a user entry when a user turn is
written to the context, an assistant entry when the replica's turn ends
(interrupted turns are kept with what was actually said). Entries follow the
shape of Tavus's ``application.transcription_ready`` transcript items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TranscriptEntry:
    """One utterance."""

    role: Role
    content: str
    timestamp: float
    seconds_from_start: float
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = asdict(self)
        if not self.interrupted:
            data.pop("interrupted")
        return data


@dataclass
class Transcript:
    """An append-only transcript with listeners (later: storage, captions)."""

    started_at: float = field(default_factory=time.time)
    entries: list[TranscriptEntry] = field(default_factory=list)
    _listeners: list[Callable[[TranscriptEntry], None]] = field(default_factory=list, repr=False)

    def add(self, role: Role, content: str, *, interrupted: bool = False) -> TranscriptEntry | None:
        """Append an utterance (blank text is ignored) and notify listeners."""
        text = (content or "").strip()
        if not text:
            return None
        now = time.time()
        entry = TranscriptEntry(
            role=role,
            content=text,
            timestamp=round(now, 3),
            seconds_from_start=round(now - self.started_at, 3),
            interrupted=interrupted,
        )
        self.entries.append(entry)
        for listener in list(self._listeners):
            listener(entry)
        return entry

    def add_listener(self, listener: Callable[[TranscriptEntry], None]) -> None:
        """Call ``listener`` for every new entry."""
        self._listeners.append(listener)

    def of(self, role: Role) -> list[str]:
        """All utterances of one role."""
        return [e.content for e in self.entries if e.role == role]

    def to_list(self) -> list[dict[str, Any]]:
        """The transcript as a list of dicts."""
        return [e.to_dict() for e in self.entries]

    def attach(self, user_aggregator: Any, assistant_aggregator: Any) -> None:
        """Record turns from a Pipecat ``LLMContextAggregatorPair``."""

        @user_aggregator.event_handler("on_user_turn_message_added")
        async def _on_user(_aggregator, message):
            self.add("user", message.content)

        @assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def _on_assistant(_aggregator, message):
            self.add("assistant", message.content, interrupted=message.interrupted)
