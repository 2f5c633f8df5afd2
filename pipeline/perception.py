"""Perception in the pipeline: frames and voice in, observations to the LLM, tools fired.

    transport.input -> interactions -> STT -> PerceptionTap -> user aggregator -> ...
      -> PerceptionInjector -> LLM

:class:`PerceptionTap` takes the user's camera and screen-share frames out of the pipeline
(nothing downstream wants them) and keeps the user's audio of the current turn. It never
waits: a frame goes to :class:`PerceptionRunner` only when its source is due (the sampling
rate) and nothing is being processed and the CPU budget allows it; otherwise it is dropped and
counted. At most one frame is processed at a time, in a worker thread; after a frame that cost
``d`` seconds of CPU the next waits ``d / budget - d``, so detectors use at most ``budget`` of
a core. The turn's audio is analysed (a few ms, in a thread) when its final transcript passes.

:class:`PerceptionInjector` sets Tavus's perception system message (``<user_appearance>``,
``<user_emotions>``, ``<user_screenshare>``, and the awareness queries' answers) as an appended
part of the system instruction before each LLM call, rebuilt from observations no older than
the stale bound. User utterances carry ``user_visual_analysis`` / ``user_audio_analysis`` and
the legacy ``visual_context``.

Perception tools fire from what is perceived, not from the LLM: a rule (perception/rules.py) or
the vision model matches the tool; ``conversation.perception_tool_call`` goes to the room with
the frames that triggered it, and a local handler of that name in ``tools/`` runs. A tool fires
once per episode: again only after its condition has not held for :data:`REARM_SECS`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputImageRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from perception import PerceptionPlan
from perception.rules import RULES, audio_tones, route, tool_arguments, tool_text
from perception.state import Observations
from perception.vision import LOOK_INTERVAL_SECS
from services.pipecat_seam import replace_system_addon

SOURCES = ("camera", "screenVideo")
REARM_SECS = 10.0
STATS_EVERY_SECS = 10.0
CAMERA_TEXT_EVERY_SECS = 5.0
MAX_TURN_AUDIO_SECS = 20.0
TOOL_FRAMES = 2
SUMMARY_SECS = 6.0  # the vision model's end-of-call summary (inside the lifecycle's 8 s)
JPEG_LONG_SIDE = 640
SCREEN_SAME = 1.5  # mean grey difference of a 64x36 thumbnail below which a screen is unchanged
MAX_EVENT_BYTES = 200_000  # a perception_tool_call's frames are dropped, oldest first, past it
MAX_ARGUMENT_BYTES = 4000
INJECT_VOICE_WAIT_SECS = 0.05

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class SourceStats:
    """Frames of one source: offered by the transport, processed, dropped."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    first_at: float | None = None
    last_at: float | None = None
    next_due: float = 0.0
    cpu_secs: float = 0.0

    def rate(self, now: float) -> float:
        if self.first_at is None or self.processed == 0:
            return 0.0
        span = max(now - self.first_at, 1.0)
        return self.processed / span


@dataclass
class _Trigger:
    """One tool, guardrail or objective and its episode state."""

    kind: str  # "visual_tool", "audio_tool", "guardrail", "objective"
    item: Any
    text: str
    rule: Any = None
    tones: frozenset[str] | None = None
    fired_at: float | None = None
    last_held: float | None = None
    done: bool = False  # an objective completes once

    def armed(self, now: float) -> bool:
        if self.done:
            return False
        return self.fired_at is None or (self.last_held is not None
                                         and now - self.last_held >= REARM_SECS)


def _rgb(frame: Any) -> Any:
    """The frame's pixels as an HxWx3 RGB uint8 array."""
    import numpy as np

    width, height = frame.size
    fmt = (frame.format or "RGB").upper()
    channels = 4 if fmt in ("RGBA", "BGRA") else 3
    data = np.frombuffer(frame.image, dtype=np.uint8)
    if data.size != width * height * channels:
        raise ValueError(f"a {fmt} frame of {width}x{height} has {data.size} bytes")
    pixels = data.reshape(height, width, channels)[:, :, :3]
    return pixels[:, :, ::-1] if fmt.startswith("BGR") else pixels


def _jpeg(rgb: Any) -> str:
    """A base64 JPEG of the frame, its long side at most :data:`JPEG_LONG_SIDE`."""
    import cv2

    height, width = rgb.shape[:2]
    scale = JPEG_LONG_SIDE / max(height, width)
    if scale < 1:
        rgb = cv2.resize(rgb, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("the frame could not be encoded")
    return base64.b64encode(data.tobytes()).decode("ascii")


@dataclass
class PerceptionRunner:
    """A conversation's perception work, off the audio path."""

    plan: PerceptionPlan
    observations: Observations
    emit: Emit | None = None  # an app message to the room
    record: Callable[[str, dict[str, Any]], None] | None = None  # an event on the record
    registry: Any = None  # local handlers (tools/)
    conversation_id: str = ""
    data_dir: Any = None
    guardrail_report: Callable[[Any, str, str], Awaitable[None]] | None = None
    objective_seen: Callable[[str], Awaitable[bool]] | None = None
    detectors: Any = None  # perception.detectors.LocalDetectors (lazy)
    vision: Any = None  # perception.vision.VisionModel
    clock: Callable[[], float] = time.monotonic
    max_chars: int = 1200  # of the perception system message (500 on the embedded model)
    stats: dict[str, SourceStats] = field(default_factory=lambda: {s: SourceStats() for s in SOURCES})
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    _busy: bool = False
    _cooldown_until: float = 0.0
    _next_stats: float = 0.0
    _frames: dict[str, deque] = field(default_factory=dict)
    _camera_text_at: float = 0.0
    _camera_text: str = ""
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _triggers: list[_Trigger] = field(default_factory=list)
    _looking: bool = False
    _look_at: float = 0.0
    _voice: asyncio.Task | None = None
    _closed: bool = False  # close() has begun: nothing new is taken
    accepting: bool = True  # the pipeline still runs (the tap clears it at its end)
    _closing: asyncio.Task | None = None
    _warned: set = field(default_factory=set)
    _screen_thumb: Any = None
    _screen_facts: Any = None

    def __post_init__(self) -> None:
        layer = self.plan.layer
        if self.plan.visual:
            for tool in layer.visual_tools:
                self._triggers.append(_Trigger("visual_tool", tool, tool_text(tool),
                                               rule=route(tool_text(tool))))
            for guardrail in self.plan.visual_guardrails:
                self._triggers.append(_Trigger("guardrail", guardrail, guardrail.guardrail_prompt,
                                               rule=route(guardrail.guardrail_prompt)))
            for objective in self.plan.visual_objectives:
                self._triggers.append(_Trigger("objective", objective, objective.objective_prompt,
                                               rule=route(objective.objective_prompt)))
        if self.plan.hears:
            for tool in layer.audio_tools:
                self._triggers.append(_Trigger("audio_tool", tool, tool_text(tool),
                                               tones=audio_tones(tool_text(tool))))
        if self.plan.visual and self.plan.vision is None and self.detectors is None:
            from perception.detectors import LocalDetectors

            self.detectors = LocalDetectors()  # loads nothing until the first frame
        if self.plan.visual and self.plan.vision is not None and self.vision is None:
            from perception.vision import VisionModel

            self.vision = VisionModel(self.plan.vision, tool_prompt=layer.visual_tool_prompt,
                                      tools=layer.visual_tools)

    # ------------------------------------------------------------------ frames

    def offer_frame(self, source: str, frame: Any) -> bool:
        """A video frame from the transport: taken now, or dropped. Never waits."""
        if self._closed or not self.accepting or source not in self.stats or not self.plan.visual:
            return False
        now = self.clock()
        stats = self.stats[source]
        stats.received += 1
        if stats.first_at is None:
            stats.first_at = now
            logger.info(f"Perception: receiving {source} frames")
        self._maybe_log_stats(now)
        if now < stats.next_due:
            return False  # not due: the sampling rate, not a drop
        if self._busy or now < self._cooldown_until:
            stats.dropped += 1
            return False
        stats.next_due = now + 1.0 / self.plan.fps
        self._busy = True
        self._spawn(self._process(source, frame))
        return True

    async def _process(self, source: str, frame: Any) -> None:
        try:
            work = self._look_local if self.vision is None else self._encode_only
            facts, jpeg, cpu = await asyncio.to_thread(work, source, frame)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end perception
            key = (source, type(exc).__name__, getattr(frame, "format", None))
            if key not in self._warned:  # once per kind of problem, not once a frame
                self._warned.add(key)
                logger.warning(f"Perception: a {source} frame could not be processed: {exc}")
            self.stats[source].dropped += 1
            self._busy = False
            return
        now = self.clock()
        stats = self.stats[source]
        stats.processed += 1
        stats.last_at = now
        stats.cpu_secs += cpu
        budget = self.plan.cpu_budget
        self._cooldown_until = now + cpu * (1.0 / budget - 1.0)
        self._busy = False
        self._frames.setdefault(source, deque(maxlen=TOOL_FRAMES)).append(jpeg)
        if facts is not None:
            self.observations.add(source, facts, now)
            await self._check_visual(now)
        elif not self._looking and now - self._look_at >= LOOK_INTERVAL_SECS:
            self._looking = True
            self._look_at = now
            self._spawn(self._look_remote())

    def _look_local(self, source: str, frame: Any) -> tuple[Any, str, float]:
        """In the worker thread: the detectors on one frame (and its JPEG)."""
        started = time.thread_time()
        rgb = _rgb(frame)
        if source == "camera":
            facts = self.detectors.camera(rgb)
            if self.plan.camera_text:
                now = self.clock()
                if now - self._camera_text_at >= CAMERA_TEXT_EVERY_SECS:
                    self._camera_text_at = now
                    self._camera_text = self.detectors.screen(rgb).text
                facts = replace(facts, text=self._camera_text)
        else:
            facts = self._screen(rgb)
        jpeg = _jpeg(rgb)
        return facts, jpeg, time.thread_time() - started

    def _screen(self, rgb: Any) -> Any:
        """OCR of a shared screen, only when it changed since the last one read (a static
        slide is read once, not every second)."""
        import cv2
        import numpy as np

        thumb = cv2.resize(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), (64, 36),
                           interpolation=cv2.INTER_AREA).astype(np.int16)
        last = self._screen_thumb
        if last is not None and self._screen_facts is not None \
                and float(np.abs(thumb - last).mean()) < SCREEN_SAME:
            return self._screen_facts
        self._screen_thumb = thumb
        self._screen_facts = self.detectors.screen(rgb)
        return self._screen_facts

    def _encode_only(self, source: str, frame: Any) -> tuple[None, str, float]:
        started = time.thread_time()
        jpeg = _jpeg(_rgb(frame))
        return None, jpeg, time.thread_time() - started

    async def _check_visual(self, now: float) -> None:
        for trigger in self._triggers:
            if trigger.kind == "audio_tool" or trigger.rule is None:
                continue
            recent = self.observations.fresh(trigger.rule.source, now)
            held = bool(recent) and trigger.rule.holds(recent)
            await self._update(trigger, held, now, lambda t=trigger, r=recent: t.rule.value(r))

    async def _update(self, trigger: _Trigger, held: bool, now: float,
                      value: Callable[[], str], arguments: dict[str, Any] | None = None) -> None:
        if not held:
            return
        armed = trigger.armed(now)
        trigger.last_held = now
        if not armed:
            return
        trigger.fired_at = now
        if trigger.kind in ("visual_tool", "audio_tool"):
            args = arguments if arguments is not None else tool_arguments(trigger.item, value())
            source = None  # an audio tool's event carries no frames
            if trigger.kind == "visual_tool":
                source = trigger.rule.source if trigger.rule is not None else "camera"
            await self.fire_tool(trigger.item, args, source)
        elif trigger.kind == "guardrail" and self.guardrail_report is not None:
            await self.guardrail_report(trigger.item, f"observed: {trigger.text}", "user")
        elif trigger.kind == "objective" and self.objective_seen is not None:
            trigger.done = await self.objective_seen(trigger.item.objective_name)
            if not trigger.done:
                trigger.fired_at = None  # not its turn yet: looked for again

    # ------------------------------------------------------------------ the vision model

    async def _look_remote(self) -> None:
        try:
            frames = {s: q[-1] for s, q in self._frames.items()
                      if q and self.stats[s].last_at is not None
                      and self.clock() - self.stats[s].last_at <= self.plan.stale_secs}
            if not frames:
                return
            layer = self.plan.layer
            checks = [t for t in self._triggers if t.kind in ("guardrail", "objective")]
            look = await self.vision.look(frames, list(layer.visual_awareness_queries),
                                          [t.text for t in checks])
            if look is None:
                return
            now = self.clock()
            obs = self.observations
            for key in ("appearance", "emotions", "screen"):
                if getattr(look, key):
                    obs.describe(key, getattr(look, key), now)
            for query, answer in zip(layer.visual_awareness_queries, look.answers or []):
                obs.describe(f"query:{query}", answer, now)
            obs.add("look", look, now)
            for trigger, held in zip(checks, look.checks or []):
                await self._update(trigger, bool(held), now, lambda: "")
            by_name = {t.item.function.name: t for t in self._triggers if t.kind == "visual_tool"}
            for name, arguments in look.tool_calls or []:
                trigger = by_name.get(name)
                if trigger is not None:
                    await self._update(trigger, True, now, lambda: "", arguments)
        finally:
            self._looking = False

    # ------------------------------------------------------------------ voice

    def offer_voice(self, pcm: bytes, sample_rate: int, transcript: str) -> None:
        """A user turn's audio and its final transcript: analysed in a thread."""
        if self._closed or not self.plan.hears or not pcm:
            return
        self._voice = self._spawn(self._analyse_voice(pcm, sample_rate, transcript))

    async def voice_ready(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the last turn's voice analysis."""
        task = self._voice
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def _analyse_voice(self, pcm: bytes, sample_rate: int, transcript: str) -> None:
        from perception.audio import analyse_turn

        try:
            facts = await asyncio.to_thread(analyse_turn, pcm, sample_rate, transcript)
        except Exception as exc:  # noqa: BLE001
            logger.warning(f"Perception: the turn's audio could not be analysed: {exc}")
            return
        now = self.clock()
        self.observations.add("voice", facts, now)
        for trigger in self._triggers:
            if trigger.kind == "audio_tool" and trigger.tones:
                await self._update(trigger, facts.tone in trigger.tones, now,
                                   lambda f=facts: f.tone)

    # ------------------------------------------------------------------ tools

    async def fire_tool(self, tool: Any, arguments: dict[str, Any], source: str | None) -> None:
        """``conversation.perception_tool_call`` with the frames, and the local handler if any."""
        import json

        name = tool.function.name
        if len(json.dumps(arguments, default=str)) > MAX_ARGUMENT_BYTES:
            logger.warning(f"Perception tool {name}: its arguments are over "
                           f"{MAX_ARGUMENT_BYTES} bytes; sent without them")
            arguments = {}
        frames = list(self._frames.get(source, ())) if source else []
        while frames and sum(len(f) for f in frames) > MAX_EVENT_BYTES:
            frames.pop(0)  # an app message must fit the data channel
        properties = {"name": name, "arguments": arguments, "frames": frames}
        self.tool_calls.append({"name": name, "arguments": arguments, "frames": len(frames)})
        logger.info(f"Perception tool {name} fired with {arguments}")
        if self.emit is not None:
            await self.emit("conversation.perception_tool_call", properties)
        if self.record is not None:  # the record keeps the call, not the images
            self.record("conversation.perception_tool_call",
                        {"name": name, "arguments": arguments, "frame_count": len(frames)})
        handler = self.registry.get(name) if self.registry is not None else None
        if handler is not None:
            self._spawn(self._run_handler(handler, name, arguments, frames))

    async def _run_handler(self, handler: Any, name: str, arguments: dict[str, Any],
                           frames: list[str]) -> None:
        from pathlib import Path

        from tools.registry import ToolContext

        context = ToolContext(self.conversation_id, f"perception-{name}-{len(self.tool_calls)}",
                              Path(self.data_dir or "data"))
        timeout = handler.timeout_secs or 10.0
        try:
            await asyncio.wait_for(handler.call(arguments, context), timeout)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is logged, not fatal
            logger.warning(f"Perception tool {name}: its handler failed: {exc or type(exc).__name__}")

    # ------------------------------------------------------------------ turn-level

    def system_message(self) -> str:
        return self.observations.system_message(self.clock(), visual=self.plan.visual,
                                                max_chars=self.max_chars)

    def utterance_fields(self) -> dict[str, str]:
        """What a user utterance carries (Raven-1's analyses and raven-0's visual_context)."""
        out: dict[str, str] = {}
        now = self.clock()
        if self.plan.visual:
            visual = self.observations.visual_analysis(now)
            out["user_visual_analysis"] = visual
            out["visual_context"] = visual
        if self.plan.hears:
            audio = self.observations.audio_analysis()
            if audio:
                out["user_audio_analysis"] = audio
        return out

    def _maybe_log_stats(self, now: float) -> None:
        if now >= self._next_stats:
            if self._next_stats:
                logger.info(self.stats_line(now))
            self._next_stats = now + STATS_EVERY_SECS

    def stats_line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        parts = [f"{s} {st.rate(now):.1f} frames/s ({st.processed} processed, {st.dropped} dropped)"
                 for s, st in self.stats.items()]
        return "Perception: " + "; ".join(parts)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait for the work in flight (tests; the end of the call)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self) -> str | None:
        """End of call: stop taking frames, finish what runs, return the analysis (or None).

        Idempotent: the lifecycle's graceful end and the teardown may both ask; they get the
        same analysis, made once (a caller that gives up does not cancel it)."""
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        return await asyncio.shield(self._closing)

    async def _close(self) -> str | None:
        await self.settle()
        for task in list(self._tasks):
            task.cancel()
        if any(st.received for st in self.stats.values()) or self.observations.log:
            logger.info(self.stats_line())
        analysis = None
        queries = list(self.plan.layer.perception_analysis_queries)
        if self.observations.log or queries:
            if self.vision is not None:
                try:
                    analysis = await asyncio.wait_for(
                        self.vision.summarise(_log_text(self.observations), queries),
                        SUMMARY_SECS)
                except TimeoutError:
                    logger.warning("Perception: the vision model's analysis took over "
                                   f"{SUMMARY_SECS:g}s; the local summary is sent instead")
            if analysis is None:
                analysis = self.observations.analysis(queries)
        if self.vision is not None:
            await self.vision.close()
        return analysis


def _log_text(observations: Observations) -> str:
    lines = []
    for at, source, facts in observations.log:
        if source == "look":
            lines.append(f"{at:.0f}s look: appearance {facts.appearance}; emotions "
                         f"{facts.emotions}; screen {facts.screen}")
        elif source == "voice":
            lines.append(f"{at:.0f}s voice: {facts.tone}")
        else:
            lines.append(f"{at:.0f}s {source}: {facts}")
    return "\n".join(lines[-400:])


class PerceptionTap(FrameProcessor):
    """After STT: video frames out of the pipeline into the runner; the turn's audio kept."""

    def __init__(self, runner: PerceptionRunner, **kwargs):
        super().__init__(name="PerceptionTap", **kwargs)
        self.runner = runner
        self._audio = bytearray()
        self._rate = 16000
        self._hears = runner.plan.hears

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputImageRawFrame):
            source = frame.transport_source or "camera"
            self.runner.offer_frame(source, frame)
            return  # consumed: nothing downstream uses the user's video
        if self._hears:
            if isinstance(frame, InputAudioRawFrame):
                if frame.num_channels == 1:
                    self._rate = frame.sample_rate
                    self._audio += frame.audio
                    cap = int(MAX_TURN_AUDIO_SECS * self._rate) * 2
                    if len(self._audio) > cap:
                        del self._audio[: len(self._audio) - cap]
            elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
                self.runner.offer_voice(bytes(self._audio), self._rate, frame.text)
                self._audio.clear()
            elif isinstance(frame, UserStartedSpeakingFrame):
                self._audio.clear()  # the turn's audio starts here, not at the last transcript
        if isinstance(frame, (EndFrame, CancelFrame)):
            self.runner.accepting = False  # close() still makes the analysis
        await self.push_frame(frame, direction)


class PerceptionInjector(FrameProcessor):
    """Before the LLM: the perception system message, current at every LLM call."""

    def __init__(self, runner: PerceptionRunner, llm: Any, **kwargs):
        super().__init__(name="PerceptionInjector", **kwargs)
        self.runner = runner
        self.llm = llm
        self._addon: str | None = None

    def apply(self) -> None:
        new = self.runner.system_message()
        if new != self._addon:
            replace_system_addon(self.llm, self._addon, new)
            self._addon = new

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            # This turn's voice analysis (started at its final transcript, a few ms of work)
            # if it is about to land; past the bound the LLM gets the previous turn's.
            await self.runner.voice_ready(INJECT_VOICE_WAIT_SECS)
            self.apply()
        await self.push_frame(frame, direction)


__all__ = ["RULES", "PerceptionInjector", "PerceptionRunner", "PerceptionTap"]
