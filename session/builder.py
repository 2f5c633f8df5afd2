"""``build_pipeline``: persona + conversation + transport -> a Pipecat pipeline.

Full mode:

    transport.input -> interactions -> STT -> user aggregator (VAD + turn strategies)
      -> LLM (tools) -> reply guard -> sentence cut -> TTS -> secret fence
      -> transport.output -> interruption fence -> assistant aggregator

Echo mode (``pipeline_mode: echo``): no STT and no LLM; ``conversation.echo``
text is spoken by TTS and echo audio goes straight out:

    transport.input -> interactions -> TTS -> secret fence -> transport.output

The secret fence (``pipeline.secret_fence``) is the one place every message to the
client passes: RTVI errors made from a service's ``ErrorFrame`` and our app messages
leave it with the configuration's secrets hidden.

The interactions processor (Tavus Interactions Protocol) and its observer turn
app messages into actions and pipeline frames into events. The transcript is
recorded from the aggregators' events. The greeting is queued by
:meth:`PersonaPipeline.greet` when the participant joins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from config.app import AppConfig
from config.conversation import ConversationRequest
from config.options import ConversationOptions
from config.persona import Persona
from config.prompt import system_prompt_for
from config.redact import register_secrets
from conversation.transcript import Transcript
from pipeline.guardrails import GuardCheck, GuardrailGuard
from pipeline.idle_engagement import IdleEngagement, idle_timeout
from pipeline.interactions import InteractionHooks, InteractionsProcessor
from pipeline.interactions.budgets import MessageLimits, embedded_limits
from pipeline.interruption_fence import InterruptionFence
from pipeline.knowledge import KnowledgeContext, KnowledgeInjector, TranscriptPrefetch
from pipeline.objectives import ObjectiveFlow
from pipeline.perception import PerceptionInjector, PerceptionRunner, PerceptionTap
from pipeline.reply_guard import APOLOGY, ReplyGuard
from pipeline.secret_fence import SecretFence
from pipeline.sentence_cut import SentenceCut
from pipeline.tool_dispatch import ToolDispatcher
from pipeline.turn_taking import TurnController, turn_plan
from pipeline.wake_phrase import WakePhraseGate
from services import Services
from tools import ToolRegistry, build_registry

# A developer message: cloud LLMs read it as an instruction; the embedded model, which has no
# developer role, gets it as a note in its system message (services/llm.py system_notes), never
# as something the user said. Short and literal: a 135M model garbles "greet them in character".
# How long a user utterance waits for its voice analysis (perception), in an event handler
# off the pipeline: the LLM is not held by it.
VOICE_WAIT_SECS = 0.25

GREETING_INSTRUCTION = "The user just joined the call. Say hello and ask how you can help."


def message_limits(services) -> MessageLimits:
    """The size limits of app messages for this conversation's LLM: the embedded engine's
    from its context window (its prompt fitter's), a cloud LLM's the protocol's own."""
    fitter = getattr(services.llm, "prompt_fit", None)
    if fitter is not None:
        return embedded_limits(fitter)
    return MessageLimits()


def new_conversation_id() -> str:
    """A conversation id in Tavus's style (``c`` + hex)."""
    return "c" + uuid.uuid4().hex[:12]


@dataclass
class PersonaPipeline:
    """A built pipeline and the parts a session talks to."""

    pipeline: Any
    context: Any
    user_aggregator: Any
    assistant_aggregator: Any
    transcript: Transcript
    services: Services
    turns: TurnController | None
    persona: Persona
    conversation: ConversationRequest
    options: ConversationOptions
    conversation_id: str
    interactions: InteractionsProcessor
    tools: ToolDispatcher | None
    wake_gate: WakePhraseGate | None = None
    idle: IdleEngagement | None = None
    objectives: ObjectiveFlow | None = None
    guardrails: GuardrailGuard | None = None
    knowledge: KnowledgeContext | None = None
    perception: PerceptionRunner | None = None
    _greeted: bool = field(default=False, repr=False)

    @property
    def turn(self):
        """The current turn-taking plan (None in echo mode)."""
        return self.turns.plan if self.turns else None

    def aggregators(self) -> Any:
        """The context aggregators as a pair (``user()``, ``assistant()``), as Flows takes them."""
        from types import SimpleNamespace

        return SimpleNamespace(user=lambda: self.user_aggregator,
                               assistant=lambda: self.assistant_aggregator)

    def observers(self) -> list[Any]:
        """Observers the worker must run for this pipeline."""
        return [self.interactions.create_observer()]

    def greeting_frames(self) -> list[Any]:
        """Frames that greet the participant: the custom greeting verbatim, else an in-character LLM greeting."""
        from pipecat.frames.frames import LLMMessagesAppendFrame, TTSSpeakFrame

        if not self.options.greet:
            return []
        greeting = self.options.custom_greeting
        if greeting:
            # Spoken verbatim; the assistant aggregator records it in context and transcript.
            return [TTSSpeakFrame(greeting, append_to_context=True)]
        if self.options.echo or self.wake_gate is not None:
            return []  # echo mode says only what the app sends; a wake phrase means silence
        return [
            LLMMessagesAppendFrame(
                [{"role": "developer", "content": GREETING_INSTRUCTION}], run_llm=True
            )
        ]

    async def greet(self, worker: Any) -> None:
        """Queue the greeting once per conversation."""
        if self._greeted:
            return
        self._greeted = True
        if self.objectives is not None:
            await self.objectives.start()  # the first objective's task before the greeting
        frames = self.greeting_frames()
        if frames:
            await worker.queue_frames(frames)


def build_pipeline(
    app: AppConfig,
    transport: Any,
    services: Services,
    *,
    conversation_id: str | None = None,
    registry: ToolRegistry | None = None,
    renderer: Any = None,
    output: Any = None,
    also_known_as: tuple[str, ...] = (),
    replica_id: str | None = None,
    callbacks: Any = None,
    knowledge: Any = None,
    perception: Any = None,
) -> PersonaPipeline:
    """Assemble the persona's pipeline on ``transport``.

    ``renderer`` (e.g. Tavus's video service) goes between TTS and the output:
    it takes the TTS audio and emits the replica's audio and video instead.
    Without a transport (text mode) ``output`` (a processor that shows the
    replies) takes the place of TTS and the transport's output. ``also_known_as``: other ids
    a client may address the conversation by (a Tavus replica's conversation);
    ``replica_id``: the replica ``system.replica_joined`` names; ``callbacks``: the
    conversation's callback dispatcher (objective and guardrail events are recorded and
    their callbacks queued there); ``knowledge``: the conversation's documents and memories
    (:class:`knowledge.session.ConversationKnowledge`), if it has any; ``perception``: the
    conversation's :class:`perception.PerceptionPlan`, if it perceives.
    """
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )

    persona, conversation, options, settings = app.persona, app.conversation, app.options, app.settings
    register_secrets(app.secrets())  # logs, callbacks; the fence below hides them from clients
    conversation_id = conversation_id or new_conversation_id()
    echo = options.echo
    transcript = Transcript()
    live = {"conversation": conversation}

    def base_instruction() -> str:
        return system_prompt_for(persona, live["conversation"], services.plan.tts.engine)

    def update_context(mode: str, text: str) -> str:
        """conversation.overwrite/append_llm_context -> the new system instruction."""
        current = live["conversation"].conversational_context
        new = text if mode == "overwrite" or not current else f"{current}\n\n{text}"
        live["conversation"] = live["conversation"].model_copy(update={"conversational_context": new})
        # With objectives, the current objective's task stays in the instruction.
        return objectives.instruction() if objectives else base_instruction()

    turns = None
    tools = None
    flow = options.flow
    voice = transport is not None
    if not echo and voice:
        turns = TurnController(
            turn_plan(flow), flow.replica_interruptibility, speculative=options.speculative_inference,
            # Tavus: the custom greeting is not interruptible (the user's words are still
            # taken, and answered once it ends).
            first_speech_uninterruptible=bool(options.custom_greeting and options.greet),
        )
    hooks = InteractionHooks(
        pipeline_mode=options.pipeline_mode,
        update_context=update_context,
        apply_sensitivity=turns.apply_sensitivity if turns else None,
        user_text=lambda text: transcript.add("user", text),
        limits=message_limits(services),
        current_context=lambda: live["conversation"].conversational_context,
    )
    interactions = InteractionsProcessor(
        conversation_id, hooks, captions=options.closed_captions, also_known_as=also_known_as,
        replica_id=replica_id, local_tool_call_events=options.local_tool_call_events,
    )
    wake_gate = None
    if not echo and voice and flow.wake_phrase:
        wake_gate = WakePhraseGate(flow.wake_phrase)
        hooks.allow_reply = wake_gate.allow_next

        @wake_gate.event_handler("on_wake")
        async def _on_wake(_gate, _text):
            await interactions.wake_phrase_detected()

    if not echo:
        offered = list(options.tools)
        if offered and not getattr(services.llm, "calls_tools", True):
            names = ", ".join(t.function.name for t in offered)
            logger.warning(
                f"The embedded LLM cannot call tools, so {names} are not offered to it; "
                "use an LLM with function calling (OPENAI_API_KEY, or layers.llm.base_url "
                "with a server that supports tools, or LOCAL_LLM_GGUF with such a model)")
            offered = []
        tools = ToolDispatcher(
            offered,
            registry or build_registry(),
            conversation_id=conversation_id,
            data_dir=Path(settings.data_dir),
            announce=interactions.emit_tool_call,
            handler_timeout_secs=settings.tool_timeout_secs,
            client_timeout_secs=settings.client_tool_timeout_secs,
        )
        hooks.tool_result = tools.resolve
        hooks.late_tool_result = tools.late_result
        tools.register(services.llm)

    context = tools.new_context() if tools else LLMContext()
    objectives = None
    if not echo and app.policies.objectives and services.llm is not None:
        objectives = ObjectiveFlow(
            app.policies.objectives,
            path="function_calls" if getattr(services.llm, "calls_tools", True) else "extraction",
            llm=services.llm, base_instruction=base_instruction,
            persona_tools=tools.tools_schema() if tools else None,
            report=_objective_reporter(interactions, callbacks, conversation_id),
            context=context, perceives=bool(perception is not None and perception.visual and voice),
        )
        hooks.objective_confirm = objectives.confirm
        transcript.add_listener(lambda entry: (objectives.user_turn if entry.role == "user"
                                               else objectives.assistant_turn)(entry.content))
        logger.info(f"Objectives: {len(app.policies.objectives)}, completed by "
                    f"{'function calls' if objectives.path == 'function_calls' else 'constrained extraction'}")
    user_aggregator = assistant_aggregator = None
    idle = None
    seen: PerceptionRunner | None = None
    if not echo and not voice:  # text mode: typed turns, no VAD or turn detection
        user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    elif not echo:
        user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                vad_analyzer=turns.vad,
                user_turn_strategies=turns.strategies,
                user_idle_timeout=idle_timeout(flow.idle_engagement),
            ),
        )
        transcript.attach(user_aggregator, assistant_aggregator)
        turns.attach(user_aggregator, assistant_aggregator)
        if hasattr(services.stt, "follow_pauses"):  # local Whisper: the early transcript
            services.stt.follow_pauses(turns.vad)
        if idle_timeout(flow.idle_engagement):
            idle = IdleEngagement(
                flow.idle_engagement,
                allowed=lambda: wake_gate is None or wake_gate.awake,
            )
            idle.attach(user_aggregator)

        @user_aggregator.event_handler("on_user_turn_message_added")
        async def _on_user_turn(_aggregator, message):
            if seen is not None:  # the turn's voice analysis (a few ms, in a thread)
                await seen.voice_ready(VOICE_WAIT_SECS)
            await interactions.user_turn(message.content)

    guard = None
    if not echo and app.policies.verbal_guardrails and services.llm is not None:
        from services.structured import is_local

        guard = GuardrailGuard(
            GuardCheck(app.policies.verbal_guardrails, services.llm),
            _guardrail_reporter(interactions, callbacks, conversation_id),
            # The embedded server answers one request at a time: a hold would wait for
            # the whole reply and then the guard (seconds); there it judges afterwards.
            hold=not is_local(services.llm))
        transcript.add_listener(lambda entry: guard.user_turn(entry.content)
                                if entry.role == "user" else None)
        logger.info(f"Guardrails: {len(app.policies.verbal_guardrails)} "
                    f"{'enforced' if guard.hold else 'checked after each reply (embedded LLM)'}")

    kb = None
    if not echo and knowledge is not None and knowledge.active and services.llm is not None:
        kb = _knowledge_context(knowledge, services, settings, interactions, callbacks,
                                conversation_id)
        transcript.add_listener(lambda entry: kb.reply_done(entry.content)
                                if entry.role == "assistant" else None)
    if perception is not None and not voice:
        logger.info("Perception: off in text mode (no camera, screen or voice to perceive)")
    if perception is not None and voice and services.llm is not None:
        seen = _perception_runner(perception, services, settings, interactions, callbacks,
                                  conversation_id, registry, objectives, guard_report=(
                                      _guardrail_reporter(interactions, callbacks, conversation_id)))
        interactions.tracker.perceive = seen.utterance_fields
    processors = [
        transport.input() if voice else None,
        interactions,
        services.stt,
        PerceptionTap(seen) if seen is not None else None,
        TranscriptPrefetch(kb) if kb is not None and kb.retriever is not None and voice else None,
        user_aggregator,
        wake_gate,
        KnowledgeInjector(kb) if kb is not None else None,
        PerceptionInjector(seen, services.llm) if seen is not None else None,
        services.llm,
        # An LLM reply that failed or came back empty: logged, a system.error event, and in
        # a voice conversation a spoken apology (text mode prints that it did not answer).
        services.llm and ReplyGuard(apology=APOLOGY if voice else None,
                                    on_failure=interactions.reply_failed),
        services.llm and SentenceCut(drop_repeats=services.plan.llm.engine == "llama-local"),
        guard,
        services.tts,
        renderer,
        SecretFence(app.secrets()) if voice else None,
        transport.output() if voice else output,
        InterruptionFence() if voice and not echo else None,
        assistant_aggregator,
    ]
    pipeline = Pipeline([p for p in processors if p is not None])
    if turns:
        logger.debug(f"Pipeline for {persona.display_name}: turn-taking {turns.plan.describe()}")
    if tools and (tools.local_tools or tools.client_tools):
        logger.info(f"Tools: local {tools.local_tools}, client {tools.client_tools}")
    return PersonaPipeline(
        pipeline=pipeline,
        context=context,
        user_aggregator=user_aggregator,
        assistant_aggregator=assistant_aggregator,
        transcript=transcript,
        services=services,
        turns=turns,
        persona=persona,
        conversation=conversation,
        options=options,
        conversation_id=conversation_id,
        interactions=interactions,
        tools=tools,
        wake_gate=wake_gate,
        idle=idle,
        objectives=objectives,
        guardrails=guard,
        knowledge=kb,
        perception=seen,
    )


def _perception_runner(plan: Any, services: Services, settings: Any,
                       interactions: InteractionsProcessor, callbacks: Any, conversation_id: str,
                       registry: ToolRegistry | None, objectives: ObjectiveFlow | None,
                       guard_report: Any) -> PerceptionRunner:
    """The conversation's perception: observations, tools to the room and the record."""
    from perception.state import Observations
    from services.structured import is_local

    layer = plan.layer
    if plan.hears:
        from perception.audio import warm_up

        warm_up()  # VADER's lexicon (~30 ms, once a process) now, not in the first turn
    observations = Observations(
        stale_secs=plan.stale_secs,
        visual_queries=list(layer.visual_awareness_queries) if plan.visual else [],
        audio_queries=list(layer.audio_awareness_queries) if plan.hears else [])

    def record(event_type: str, properties: dict) -> None:
        if callbacks is not None:
            callbacks.emit(conversation_id, None, event_type, "conversation", properties)

    return PerceptionRunner(
        plan, observations, emit=interactions.emit, record=record,
        registry=registry or build_registry(), conversation_id=conversation_id,
        data_dir=settings.data_dir, guardrail_report=guard_report,
        objective_seen=objectives.visual_seen if objectives is not None else None,
        # The embedded model's 4k-token window: a short message.
        max_chars=500 if is_local(services.llm) else 1200)


def _knowledge_context(knowledge: Any, services: Services, settings: Any,
                       interactions: InteractionsProcessor, callbacks: Any,
                       conversation_id: str) -> KnowledgeContext:
    """The knowledge processors' shared state; ``conversation.rag.observability`` goes to
    the client and the record."""
    from services.structured import is_local

    async def emit(event_type: str, properties: dict) -> None:
        await interactions.emit(event_type, properties)
        if callbacks is not None:
            callbacks.emit(conversation_id, None, event_type, "conversation", properties)

    # The embedded model's 4k-token window holds the prompt, the history and the reply too.
    return KnowledgeContext(knowledge.retriever, knowledge.memories_text, llm=services.llm,
                            budget_secs=settings.knowledge_budget_secs,
                            max_chars=900 if is_local(services.llm) else 3000, emit=emit)


def _guardrail_reporter(interactions: InteractionsProcessor, callbacks: Any, conversation_id: str):
    """A triggered guardrail: the app message (``app_message``), the record, the callback."""

    async def report(guardrail: Any, reason: str, role: str) -> None:
        properties = {"guardrail": guardrail.guardrail_name,
                      "guardrail_uuid": guardrail.uuid or "", "reason": reason, "role": role}
        event_type = "conversation.guardrail_triggered"
        if guardrail.app_message:
            await interactions.emit(event_type, properties)
        if callbacks is None:
            return
        callbacks.emit(conversation_id, None, event_type, "conversation", properties)
        if guardrail.callback_url:
            callbacks.emit_payload(conversation_id, guardrail.callback_url, event_type, {
                "conversation_id": conversation_id,
                "properties": {"guardrail": guardrail.guardrail_name,
                               "guardrail_uuid": guardrail.uuid or ""}})

    return report


def _objective_reporter(interactions: InteractionsProcessor, callbacks: Any, conversation_id: str):
    """An objective's event: the app message, the record's event, the objective's callback."""

    async def report(event_type: str, objective: Any, values: dict[str, Any] | None) -> None:
        properties: dict[str, Any] = {"objective_name": objective.objective_name}
        if values is not None:
            properties["output_variables"] = dict(values)
        await interactions.emit(event_type, properties)
        if callbacks is None:
            return
        callbacks.emit(conversation_id, None, event_type, "conversation", properties)
        if event_type == "conversation.objective.completed" and objective.callback_url:
            callbacks.emit_payload(conversation_id, objective.callback_url, event_type, {
                "conversation_id": conversation_id, "objective_name": objective.objective_name,
                "output_variables": dict(values or {})})

    return report


def build_worker(built: PersonaPipeline, *, observers: list[Any] | None = None) -> Any:
    """A ``PipelineWorker`` for the pipeline with metrics and the protocol observer.

    Pipecat's idle timeout is off: the conversation's lifecycle decides when it ends
    (``max_call_duration``, the participant timeouts).
    """
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    return PipelineWorker(
        built.pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        idle_timeout_secs=None,
        observers=[*built.observers(), *(observers or [])],
    )
