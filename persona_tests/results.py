"""What a persona test run produced: per conversation, its turns, expectations, timeline and audio.

The runner (:mod:`persona_tests.runner`) fills these in; the reports
(:mod:`persona_tests.report`) read them. Times are seconds from the start of the
conversation (the pipeline's start), on one monotonic clock for both sides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Timeline entry kinds (``TimelineEntry.kind``).
USER_SPEECH = "user_speech"  # the scripted user's audio (start..end)
USER_TEXT = "user_text"  # a text turn (conversation.respond)
BOT_SPEECH = "bot_speech"  # the bot's audio out (start..end)
TURN = "turn"  # a turn decision: the user's turn committed (what the bot heard)
REPLY = "reply"  # the bot's reply text (its utterance)
TOOL_CALL = "tool_call"
OBJECTIVE = "objective"  # activated / pending / completed
GUARDRAIL = "guardrail"  # a guardrail verdict (held or triggered)
BARGE_IN = "barge_in"  # the user spoke over the bot
ERROR = "error"  # system.error, or the run's own failure
KINDS = (USER_SPEECH, USER_TEXT, BOT_SPEECH, TURN, REPLY, TOOL_CALL, OBJECTIVE, GUARDRAIL,
         BARGE_IN, ERROR)


@dataclass
class TimelineEntry:
    """One thing that happened: at ``t`` (until ``end`` for speech), of a ``kind`` above."""

    t: float
    kind: str
    label: str
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExpectationResult:
    """One expectation and whether it held.

    ``description`` says what was expected (``reply contains "router"``); ``detail`` what
    was found when it failed (or what matched); ``reason``: an LLM judge's reason.
    """

    kind: str
    description: str
    passed: bool
    detail: str = ""
    turn: int | None = None  # 1-based scripted turn; None: the whole conversation
    reason: str | None = None


@dataclass
class TurnResult:
    """One scripted (or simulated) user turn and the bot's answer to it."""

    index: int  # 1-based
    input: str  # "text" or "speech"
    user: str  # what the script (or the simulated user) said
    heard: str = ""  # what the bot's speech-to-text heard (speech turns)
    reply: str = ""  # the bot's reply, as its utterances say
    started: float = 0.0  # the turn's input starts (timeline seconds)
    user_ended: float | None = None  # the user's speech (or text) ended
    first_audio: float | None = None  # the bot's first audio after it
    latency_ms: float | None = None  # user_ended -> first_audio
    interrupted: bool = False  # the reply was cut short by a barge-in
    expectations: list[ExpectationResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.expectations)


@dataclass
class ConversationResult:
    """One run of one scenario."""

    scenario: str
    run: int  # 1-based repeat number
    kind: str  # "script" or "simulation"
    persona: str  # the persona's name
    conversation_id: str = ""
    engines: dict[str, str] = field(default_factory=dict)  # layer -> engine
    duration_s: float = 0.0
    error: str | None = None  # the run itself failed (not an expectation)
    turns: list[TurnResult] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)  # conversation-level
    timeline: list[TimelineEntry] = field(default_factory=list)
    user_audio: bytes = b""  # 16-bit mono PCM of the user's side, from t=0
    bot_audio: bytes = b""  # 16-bit mono PCM of the bot's side, from t=0
    user_rate: int = 16000
    bot_rate: int = 24000
    simulation: dict[str, Any] | None = None  # goal, end reason, the simulated user's claim

    @property
    def all_expectations(self) -> list[ExpectationResult]:
        return [e for t in self.turns for e in t.expectations] + self.expectations

    @property
    def failures(self) -> list[ExpectationResult]:
        return [e for e in self.all_expectations if not e.passed]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


@dataclass
class RunResult:
    """Every conversation of one command: a persona against a scenario file."""

    persona_path: str
    scenario_path: str
    started_at: str  # ISO 8601 UTC
    machine: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    conversations: list[ConversationResult] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.conversations) and all(c.passed for c in self.conversations)

    def flakiness(self) -> dict[str, dict[str, int]]:
        """Per scenario: how many runs passed and failed (``--repeat``)."""
        counts: dict[str, dict[str, int]] = {}
        for c in self.conversations:
            entry = counts.setdefault(c.scenario, {"passed": 0, "failed": 0})
            entry["passed" if c.passed else "failed"] += 1
        return counts


def summary(run: RunResult) -> dict[str, Any]:
    """The JSON summary: everything but the audio, with pass/fail per level."""
    conversations = []
    for c in run.conversations:
        data = asdict(c)
        data.pop("user_audio")
        data.pop("bot_audio")
        data["passed"] = c.passed
        for turn, t in zip(data["turns"], c.turns):
            turn["passed"] = t.passed
        data["failures"] = [asdict(e) for e in c.failures]
        conversations.append(data)
    return {"persona": run.persona_path, "scenarios": run.scenario_path,
            "started_at": run.started_at, "machine": run.machine, "repeat": run.repeat,
            "duration_s": round(run.duration_s, 2), "passed": run.passed,
            "flakiness": run.flakiness(), "conversations": conversations}
