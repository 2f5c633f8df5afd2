"""``build_pipeline``: persona + conversation + transport -> a Pipecat pipeline.

    transport.input -> STT -> user aggregator (VAD + turn strategies) -> LLM
      -> TTS -> transport.output -> assistant aggregator

The transcript is recorded from the aggregators' events. The greeting is
queued by :meth:`PersonaPipeline.greet` when the participant joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from config.conversation import ConversationRequest
from config.persona import Persona
from pipeline.transcript import Transcript
from pipeline.turn_taking import TurnPlan, build_turn_strategies, build_vad, turn_plan
from services import Services

GREETING_INSTRUCTION = (
    "The participant has just joined the call. Greet them in character, in one short sentence."
)


@dataclass
class PersonaPipeline:
    """A built pipeline and the parts a session talks to."""

    pipeline: Any
    context: Any
    user_aggregator: Any
    assistant_aggregator: Any
    transcript: Transcript
    services: Services
    turn: TurnPlan
    persona: Persona
    conversation: ConversationRequest | None
    _greeted: bool = field(default=False, repr=False)

    def greeting_frames(self) -> list[Any]:
        """Frames that greet the participant: the custom greeting verbatim, else an in-character LLM greeting."""
        from pipecat.frames.frames import LLMMessagesAppendFrame, TTSSpeakFrame

        greeting = self.conversation.custom_greeting if self.conversation else None
        if greeting:
            # Spoken verbatim; the assistant aggregator records it in context and transcript.
            return [TTSSpeakFrame(greeting, append_to_context=True)]
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
        await worker.queue_frames(self.greeting_frames())


def build_pipeline(
    persona: Persona,
    conversation: ConversationRequest | None,
    transport: Any,
    services: Services,
) -> PersonaPipeline:
    """Assemble the persona's voice pipeline on ``transport``."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )

    context = LLMContext()
    plan = turn_plan(persona.layers.conversational_flow)
    mute = []
    if conversation is not None and conversation.custom_greeting:
        # Tavus: the custom greeting is not interruptible.
        from pipecat.turns.user_mute import FirstSpeechUserMuteStrategy

        mute.append(FirstSpeechUserMuteStrategy())
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=build_vad(),
            user_turn_strategies=build_turn_strategies(plan),
            user_mute_strategies=mute,
        ),
    )
    transcript = Transcript()
    transcript.attach(user_aggregator, assistant_aggregator)

    processors = [
        transport.input(),
        services.stt,
        user_aggregator,
        services.llm,
        services.tts,
        transport.output(),
        assistant_aggregator,
    ]
    pipeline = Pipeline([p for p in processors if p is not None])
    logger.debug(f"Pipeline for {persona.display_name}: turn-taking {plan.describe()}")
    return PersonaPipeline(
        pipeline=pipeline,
        context=context,
        user_aggregator=user_aggregator,
        assistant_aggregator=assistant_aggregator,
        transcript=transcript,
        services=services,
        turn=plan,
        persona=persona,
        conversation=conversation,
    )


def build_worker(
    built: PersonaPipeline,
    *,
    idle_timeout_secs: float | None = 300.0,
    observers: list[Any] | None = None,
) -> Any:
    """A ``PipelineWorker`` for the pipeline with metrics on."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    return PipelineWorker(
        built.pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        idle_timeout_secs=idle_timeout_secs,
        observers=observers or [],
    )
