"""Run a scenario file against a persona's real pipeline, one conversation per scenario run.

Each conversation is assembled by :class:`session.owner.ConversationSession`, as every run
mode is (engines, prompt, objectives, guardrails, tools, records), on a
:class:`~persona_tests.transport.ScriptedTransport`: the scripted user joins, waits for
the greeting, and says each turn as text (``conversation.respond``, as a Tavus front end
sends it) or as speech (synthesized, streamed in real time through the persona's own
VAD, turn-taking and speech-to-text). Client tool calls are answered from the scenario's
``tool_results``. Everything the bot sends and every guard verdict is put on one
timeline with both sides' audio; expectations are checked once the conversation is
over (a turn's reply is what the bot said between its turn and the next).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from config.errors import AgentError, ConfigError, Problem
from config.redact import redact_text
from persona_tests import results as R
from persona_tests.llms import Endpoint, JudgeUnavailable, SimulatedUser
from persona_tests.scenario import Scenario, ScenarioFile, Turn
from persona_tests.transport import Clip, ScriptedTransport

USER_ID = "persona-test-user"
SETTLE_SECS = 1.2  # the bot is done once it has been quiet this long after replying
END_SETTLE_SECS = 2.0  # after the last turn: late guard verdicts, objective extraction
DEFAULT_TOOL_RESULT = {"status": "ok"}


@dataclass
class Options:
    """How to run (the command line's options)."""

    force_local: bool = False  # every layer on the embedded models
    llm_url: str | None = None  # the persona's LLM replaced by this OpenAI-compatible endpoint
    llm_model: str | None = None
    llm_key_env: str = "OPENAI_API_KEY"
    judge: Endpoint | None = None
    user_llm: Endpoint | None = None
    repeat: int = 1
    only: list[str] = field(default_factory=list)  # run scenarios whose name has one of these


# --------------------------------------------------------------------------- loading


def load_app(persona_path: str | Path, conversation: dict[str, Any], options: Options,
             source: str) -> Any:
    """The persona (with ``--llm-url`` applied) and a scenario's conversation, as the bot
    loads them: validated, objectives and guardrails resolved, secrets registered."""
    from config import Settings, conversation_from_dict
    from config.app import AppConfig
    from config.loader import persona_from_dict, read_json
    from config.redact import register_secrets
    from session.launch import attach_policies

    data = read_json(persona_path)
    if not isinstance(data, dict):
        raise ConfigError(str(persona_path), [Problem("", "must be a JSON object")])
    if options.llm_url:
        data = copy.deepcopy(data)
        llm = data.setdefault("layers", {}).setdefault("llm", {})
        if not isinstance(llm, dict):
            raise ConfigError(str(persona_path), [Problem("layers.llm", "must be an object")])
        llm["base_url"] = options.llm_url
        llm["model"] = options.llm_model or llm.get("model") or "default"
        llm["api_key"] = os.environ.get(options.llm_key_env) or "none"
    persona = persona_from_dict(data, str(persona_path))
    conv = conversation_from_dict(conversation, source)
    app = AppConfig(persona=persona.value, conversation=conv.value, settings=Settings.from_env(),
                    persona_source=str(persona_path),
                    warnings=[f"{persona_path}: {w}" for w in persona.warnings]
                    + [f"{source}: {w}" for w in conv.warnings])
    attach_policies(app)
    register_secrets(app.secrets())
    return app


def check_inputs(persona_path: str | Path, scenarios: ScenarioFile, options: Options,
                 scenario_path: str) -> None:
    """Everything that can be refused before a conversation starts: the persona, each
    scenario's conversation, a judge where one is needed."""
    for i, scenario in enumerate(scenarios.scenarios):
        load_app(persona_path, scenario.conversation, options,
                 f"{scenario_path}: scenarios[{i}].conversation")
    if scenarios.uses_judge() and options.judge is None:
        raise JudgeUnavailable(
            "these scenarios have eval expectations or simulated users, which need an LLM "
            "judge: give --judge-url and --judge-model (any OpenAI-compatible endpoint; key "
            "from --judge-key-env, default OPENAI_API_KEY), a judge: block in the scenario "
            "file, or set OPENAI_API_KEY")


# --------------------------------------------------------------------------- observing


class _CallObserver:
    """Every function call the LLM makes (local tools and client tools alike), once each."""

    def __init__(self, on_call: Callable[[str, str, dict], None],
                 on_result: Callable[[str, Any], None]):
        from pipecat.frames.frames import FunctionCallInProgressFrame, FunctionCallResultFrame
        from pipecat.observers.base_observer import BaseObserver

        self._kinds = (FunctionCallInProgressFrame, FunctionCallResultFrame)

        outer = self

        class Observer(BaseObserver):
            async def on_push_frame(self, data):
                outer.saw(data.frame)

        self.observer = Observer()
        self._on_call, self._on_result = on_call, on_result
        self._seen: set[str] = set()
        self._results: set[str] = set()

    def saw(self, frame: Any) -> None:
        """Called for every frame pushed anywhere (audio included): an isinstance and out."""
        in_progress, result = self._kinds
        if isinstance(frame, in_progress) and frame.tool_call_id not in self._seen:
            self._seen.add(frame.tool_call_id)
            arguments = frame.arguments if isinstance(frame.arguments, dict) else {}
            self._on_call(frame.tool_call_id, frame.function_name, dict(arguments))
        elif isinstance(frame, result) and frame.tool_call_id not in self._results:
            self._results.add(frame.tool_call_id)
            self._on_result(frame.tool_call_id, frame.result)


@dataclass
class _Call:
    t: float
    name: str
    arguments: dict[str, Any]
    tool_call_id: str


@dataclass
class _Verdict:
    t: float
    role: str
    text: str
    guardrail: str | None  # None: nothing broken
    reason: str = ""


class Conversation:
    """One scenario run: the session, the scripted user, what was seen."""

    def __init__(self, persona_path: str | Path, scenarios: ScenarioFile, scenario: Scenario,
                 index: int, run: int, options: Options, scenario_path: str):
        self.persona_path = persona_path
        self.file = scenarios
        self.scenario = scenario
        self.index = index
        self.options = options
        self.scenario_path = scenario_path
        self.result = R.ConversationResult(scenario=scenario.name, run=run,
                                           kind="simulation" if scenario.simulate else "script",
                                           persona="")
        self.transport = ScriptedTransport()
        self.events: list[tuple[float, dict]] = []
        self.calls: list[_Call] = []
        self.verdicts: list[_Verdict] = []
        self.guardrail_names: list[str] = []
        self.session: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ what the bot sends

    def _on_message(self, message: Any) -> None:
        if not isinstance(message, dict) or "event_type" not in message:
            return  # RTVI traffic
        self.events.append((self.transport.now(), message))
        self._changed.set()
        if message["event_type"] == "conversation.tool_call":
            self._spawn(self._answer_tool_call(message.get("properties") or {}))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_tool_call(self, properties: dict) -> None:
        """A client tool call: answered as a Tavus front end would, from ``tool_results``."""
        name = str(properties.get("name", ""))
        results = {**self.file.tool_results, **self.scenario.tool_results}
        output = results.get(name, DEFAULT_TOOL_RESULT)
        await self.send("conversation.tool_result", {
            "tool_call_id": properties.get("tool_call_id", ""),
            "output": output if isinstance(output, str) else json.dumps(output)})

    async def send(self, event_type: str, properties: dict) -> None:
        await self.transport.receive_message({
            "message_type": "conversation", "event_type": event_type,
            "conversation_id": self.session.conversation_id, "properties": properties},
            USER_ID)

    def _on_call(self, tool_call_id: str, name: str, arguments: dict) -> None:
        self.calls.append(_Call(self.transport.now(), name, arguments, tool_call_id))

    def _on_result(self, tool_call_id: str, result: Any) -> None:
        call = next((c for c in self.calls if c.tool_call_id == tool_call_id), None)
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        self.result.timeline.append(R.TimelineEntry(
            self.transport.now(), R.TOOL_CALL, f"{call.name if call else 'tool'} result: "
            f"{text[:200]}", detail={"tool_call_id": tool_call_id}))

    def _on_verdict(self, role: str, text: str, found: Any) -> None:
        guardrail, reason = found if found else (None, "")
        self.verdicts.append(_Verdict(self.transport.now(), role, text[:300],
                                      guardrail.guardrail_name if guardrail else None, reason))

    # ------------------------------------------------------------------ waiting

    def _replica_events(self, kind: str, after: float) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in self.events if t >= after and e["event_type"] == kind]

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.session.running:
                return predicate()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))
            except TimeoutError:
                pass
        return True

    def _quiet_since(self, after: float) -> float | None:
        """When the bot last went quiet after ``after`` (None while it is speaking or has not
        replied): its last ``replica.stopped_speaking`` with no start after it, no speech
        audio still playing."""
        started = self._replica_events("conversation.replica.started_speaking", after)
        stopped = self._replica_events("conversation.replica.stopped_speaking", after)
        if not stopped or (started and started[-1][0] > stopped[-1][0]):
            return None
        if self.transport.bot_speaking_at(self.transport.now()):
            return None
        return stopped[-1][0]

    async def wait_for_reply(self, after: float, timeout: float) -> bool:
        """Until the bot has replied to what ended at ``after`` and been quiet for
        :data:`SETTLE_SECS` (a tool call's follow-up reply counts as the same reply)."""
        def done() -> bool:
            quiet = self._quiet_since(after)
            return quiet is not None and self.transport.now() - quiet >= SETTLE_SECS
        return await self._wait(done, timeout)

    async def wait_for_audio(self, after: float, timeout: float) -> float | None:
        """When the bot is first heard after ``after`` (None: not within ``timeout``)."""
        await self._wait(lambda: self.transport.first_bot_audio_after(after) is not None, timeout)
        return self.transport.first_bot_audio_after(after)

    # ------------------------------------------------------------------ running

    async def run(self) -> R.ConversationResult:
        from pipecat.frames.frames import EndFrame  # noqa: F401 - pipecat loaded before timing

        from session.owner import ConversationSession
        from tools import build_registry

        started = time.monotonic()
        source = f"{self.scenario_path}: scenarios[{self.index}].conversation"
        try:
            app = load_app(self.persona_path, self.scenario.conversation, self.options, source)
            self.result.persona = app.options.persona_name
            self.guardrail_names = [g.guardrail_name for g in app.policies.guardrails]
            async with ConversationSession(app, transport="test", registry=build_registry(),
                                           force_local=self.options.force_local) as session:
                self.session = session
                self.result.conversation_id = session.conversation_id
                self.result.engines = {c.layer: c.engine + (f" ({c.model})" if c.model else "")
                                       for c in session.plan.choices()}
                calls = _CallObserver(self._on_call, self._on_result)
                built = session.build(self.transport, observers=[calls.observer])
                self.transport.message_listeners.append(self._on_message)
                if built.guardrails is not None:
                    built.guardrails.check.verdict_listeners.append(self._on_verdict)
                await session.start()
                try:
                    await self._converse(built)
                    if not session.running and self.result.error is None:
                        reason = session.lifecycle.shutdown_reason or "the pipeline stopped"
                        self.result.error = f"the conversation ended before the script did: {reason}"
                finally:
                    from conversation.lifecycle import PARTICIPANT_LEFT

                    session.lifecycle.ending_because(PARTICIPANT_LEFT)  # the scripted user hung up
                    self.transport.finish()
                    await session.stop(timeout=20)
        except AgentError as exc:
            self.result.error = redact_text(str(exc))
        except Exception as exc:  # noqa: BLE001 - one failed run is reported, the next runs
            logger.exception("persona test run failed")
            self.result.error = redact_text(f"{type(exc).__name__}: {exc}")[:2000]
        finally:
            for task in list(self._tasks):
                task.cancel()
        self.result.duration_s = round(time.monotonic() - started, 2)
        await self._finish()
        return self.result

    async def _converse(self, built: Any) -> None:
        defaults = self.file.defaults
        await asyncio.sleep(0.3)  # StartFrame through the pipeline
        await self.transport.client_connected({"id": USER_ID})
        greets = bool(built.greeting_frames())
        if self.scenario.greeting and greets:
            if await self.wait_for_audio(0.0, defaults.reply_timeout_s) is None:
                self._error("no greeting within the reply timeout")
            else:
                next_turn = self.scenario.turns[0] if self.scenario.turns else None
                if next_turn is None or next_turn.barge_in_after_ms is None:
                    await self.wait_for_reply(0.0, defaults.reply_timeout_s)
        if self.scenario.simulate is not None:
            await self._simulate()
        else:
            turns = self.scenario.turns
            for i, turn in enumerate(turns):
                following = turns[i + 1] if i + 1 < len(turns) else None
                await self._turn(i + 1, turn, turn.user, following)
        await asyncio.sleep(END_SETTLE_SECS)

    def _error(self, label: str) -> None:
        self.result.timeline.append(R.TimelineEntry(self.transport.now(), R.ERROR, label))

    async def _turn(self, index: int, turn: Turn | None, text: str,
                    following: Turn | None) -> R.TurnResult:
        """Say one turn, then wait for the reply (or, when the next turn barges in, for the
        reply to start and the barge-in moment)."""
        from persona_tests.voices import speak
        from transports.file import last_speech_secs

        defaults = self.file.defaults
        sim = self.scenario.simulate
        mode = (turn.input if turn and turn.input else None) or (sim.input if sim else None) \
            or defaults.input
        voice = (turn.voice if turn and turn.voice else None) or (sim.voice if sim else None) \
            or defaults.voice
        record = R.TurnResult(index=index, input=mode, user=text)
        self.result.turns.append(record)
        if turn is not None and turn.barge_in_after_ms is not None:
            previous = self.result.turns[-2].user_ended if len(self.result.turns) > 1 else 0.0
            first = await self.wait_for_audio(previous or 0.0, defaults.reply_timeout_s)
            if first is not None:
                delay = first + turn.barge_in_after_ms / 1000 - self.transport.now()
                if delay > 0:
                    await asyncio.sleep(delay)
        else:
            pause = turn.pause_s if turn and turn.pause_s is not None else defaults.pause_s
            await asyncio.sleep(pause)
        record.started = self.transport.now()
        if mode == "speech":
            pcm = await asyncio.to_thread(speak, text, voice)
            clip: Clip = self.transport.say(pcm)
            self.result.timeline.append(R.TimelineEntry(record.started, R.USER_SPEECH, text,
                                                        detail={"voice": voice}))
            # Played in real time; a pipeline that stopped meanwhile stops playing it too.
            if not await self._wait(clip.done.is_set, len(pcm) / 32000 + 10):
                self._error(f"turn {index}: the conversation stopped before the turn was said")
                return record
            speech = last_speech_secs(pcm, 16000) or len(pcm) / 32000
            record.started = clip.started or record.started
            record.user_ended = record.started + speech
            entry = self.result.timeline[-1]
            entry.t, entry.end = record.started, record.user_ended
        else:
            await self.send("conversation.respond", {"text": text})
            record.user_ended = self.transport.now()
            self.result.timeline.append(R.TimelineEntry(record.started, R.USER_TEXT, text))
        if turn is not None and turn.barge_in_after_ms is not None:
            self.result.timeline.append(R.TimelineEntry(
                record.started, R.BARGE_IN, f"turn {index} barges in "
                f"{turn.barge_in_after_ms:g} ms into the reply"))
        timeout = defaults.reply_timeout_s
        if following is not None and following.barge_in_after_ms is not None:
            await self.wait_for_audio(record.user_ended, timeout)
        elif turn is None or turn.expect_reply:
            if not await self.wait_for_reply(record.user_ended, timeout):
                self._error(f"turn {index}: no complete reply within {timeout:g}s")
        else:  # no reply expected: give it the time one would take
            await asyncio.sleep(min(timeout, 6.0))
        return record

    async def _simulate(self) -> None:
        sim = self.scenario.simulate
        assert sim is not None and self.options.user_llm is not None
        user = SimulatedUser(self.options.user_llm, sim.user, sim.goal)
        ended_by = "max_turns"
        try:
            for index in range(1, sim.max_turns + 1):
                bot_said = self.said("replica", self.result.turns[-1].user_ended
                                     if self.result.turns else 0.0)
                line = await user.next_line(bot_said)
                if line is None:
                    ended_by = "end_call"
                    break
                await self._turn(index, None, line, None)
                if user.hung_up:
                    ended_by = "end_call"
                    break
        finally:
            await user.close()
        self.result.simulation = {"user": sim.user, "goal": sim.goal, "ended_by": ended_by,
                                  "claim": user.claim, "max_turns": sim.max_turns}

    def said(self, role: str, start: float = float("-inf"), end: float = float("inf")) -> str:
        """What ``role`` (``user``: as the bot heard it; ``replica``) said in [start, end)."""
        return " ".join(e["properties"].get("speech", "") for t, e in self.events
                        if start <= t < end and e["event_type"] == "conversation.utterance"
                        and e["properties"].get("role") == role).strip()

    # ------------------------------------------------------------------ afterwards

    async def _finish(self) -> None:
        """Turns filled in from what was seen; the timeline and audio."""
        t = self.transport
        result = self.result
        turns = result.turns
        for i, turn in enumerate(turns):
            start = turn.started
            end = turns[i + 1].started if i + 1 < len(turns) else float("inf")
            after = turn.user_ended if turn.user_ended is not None else start
            turn.reply = self.said("replica", after, end)
            turn.heard = self.said("user", start, end)
            first = t.first_bot_audio_after(after)
            if first is not None and first < end:
                turn.first_audio = round(first, 3)
                turn.latency_ms = round((first - after) * 1000)
            stops = [e for at, e in self.events if at > (turn.first_audio or after)
                     and e["event_type"] == "conversation.replica.stopped_speaking"]
            turn.interrupted = bool(stops and stops[0]["properties"].get("interrupted"))
        self._timeline()
        result.user_audio = bytes(t.user_audio)
        result.user_rate = t.input_rate
        result.bot_audio = bytes(t.bot_audio)
        result.bot_rate = t.bot_rate
        from persona_tests.expectations import check_conversation

        await check_conversation(self)

    def _timeline(self) -> None:
        timeline = self.result.timeline
        for start, end in self.transport.bot_segments:
            timeline.append(R.TimelineEntry(round(start, 3), R.BOT_SPEECH, "bot audio",
                                            end=round(end, 3)))
        for at, e in self.events:
            kind, props = e["event_type"], e.get("properties") or {}
            if kind == "conversation.utterance":
                role = props.get("role")
                timeline.append(R.TimelineEntry(at, R.TURN if role == "user" else R.REPLY,
                                                ("heard: " if role == "user" else "")
                                                + str(props.get("speech", ""))[:500]))
            elif kind == "conversation.user.stopped_speaking":
                timeline.append(R.TimelineEntry(at, R.TURN, "user stopped speaking (VAD)"))
            elif kind.startswith("conversation.objective."):
                label = f"{kind.rsplit('.', 1)[1]}: {props.get('objective_name', '')}"
                if props.get("output_variables"):
                    label += f" {json.dumps(props['output_variables'])[:300]}"
                timeline.append(R.TimelineEntry(at, R.OBJECTIVE, label, detail=props))
            elif kind == "system.error":
                timeline.append(R.TimelineEntry(at, R.ERROR, str(props.get("message", ""))[:300],
                                                detail=props))
            elif kind == "conversation.replica.stopped_speaking" and props.get("interrupted"):
                timeline.append(R.TimelineEntry(at, R.BARGE_IN, "the bot was interrupted"))
        for call in self.calls:
            timeline.append(R.TimelineEntry(call.t, R.TOOL_CALL, f"{call.name}("
                                            f"{json.dumps(call.arguments)[:300]})",
                                            detail={"tool_call_id": call.tool_call_id}))
        for v in self.verdicts:
            label = (f"{v.guardrail} triggered by the {v.role}: {v.reason}" if v.guardrail
                     else f"guardrails held ({v.role})")
            timeline.append(R.TimelineEntry(v.t, R.GUARDRAIL, label,
                                            detail={"role": v.role, "text": v.text}))
        timeline.sort(key=lambda entry: entry.t)
        for entry in timeline:  # tool arguments and results did not pass the secret fence
            entry.t = round(entry.t, 3)
            entry.label = redact_text(entry.label)


# --------------------------------------------------------------------------- the command


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def normalized(text: str) -> str:
    """Lower case, accents and punctuation folded, single spaces: what "heard" compares."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c if c.isalnum() else " " for c in text if not unicodedata.combining(c))
    return " ".join(text.split())


async def run_scenarios(persona_path: str | Path, scenarios: ScenarioFile, options: Options,
                        scenario_path: str,
                        progress: Callable[[R.ConversationResult], None] | None = None
                        ) -> R.RunResult:
    """Every selected scenario, ``options.repeat`` times, one after the other."""
    run = R.RunResult(persona_path=str(persona_path), scenario_path=scenario_path,
                      started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                      machine=machine(), repeat=options.repeat)
    started = time.monotonic()
    chosen = [(i, s) for i, s in enumerate(scenarios.scenarios)
              if not options.only or any(k.lower() in s.name.lower() for k in options.only)]
    if chosen:
        await warm_up(persona_path, scenarios.scenarios[chosen[0][0]], options, scenario_path)
    for number in range(1, options.repeat + 1):
        for index, scenario in chosen:
            conversation = Conversation(persona_path, scenarios, scenario, index, number, options,
                                        scenario_path)
            result = await conversation.run()
            run.conversations.append(result)
            if progress is not None:
                progress(result)
    run.duration_s = time.monotonic() - started
    return run


async def warm_up(persona_path: str | Path, scenario: Scenario, options: Options,
                  scenario_path: str) -> None:
    """What ``python bot.py`` does before anyone joins (:mod:`session.warmup`): the embedded
    models run once, so the first conversation's latencies are a warm bot's, not a cold
    process's. Best effort: a failure is left to the conversation to report."""
    from services.llm import local_llm_server
    from session.owner import plan_for
    from session.warmup import warm_up as warm

    try:
        app = load_app(persona_path, scenario.conversation, options, scenario_path)
        plan = plan_for(app, options.force_local)
        server = local_llm_server(app.settings) if plan.llm.engine == "llama-local" else None
        if server is not None:
            await server.wait_ready()
        await asyncio.to_thread(warm, app, plan, server)
    except Exception as exc:  # noqa: BLE001 - the conversation reports its own errors
        logger.warning(f"persona tests: warming the models failed: {redact_text(str(exc))}")


def selected_problem(scenarios: ScenarioFile, options: Options) -> str | None:
    """Why ``--only`` selects nothing (None when it selects something)."""
    if options.only and not any(any(k.lower() in s.name.lower() for k in options.only)
                                for s in scenarios.scenarios):
        names = ", ".join(repr(s.name) for s in scenarios.scenarios[:10])
        return f"--only {' '.join(options.only)!r} matches no scenario (there are: {names})"
    return None
