"""The persona's effective behaviour, resolved once: :class:`ConversationOptions`.

A persona leaves most fields out, and a conversation request adds its own.
Every default is applied here, once, at load; the rest of the code reads the
resolved value and never re-derives a default. Where each option is realised:

| option | persona / conversation field | realised in |
| --- | --- | --- |
| ``pipeline_mode`` | ``pipeline_mode`` | ``session/builder.py`` (full chain or echo) |
| ``flow.turn_detection_model`` | ``layers.conversational_flow.turn_detection_model`` (sparrow-1) | ``pipeline/turn_taking.py`` |
| ``flow.turn_taking_patience`` | ``...turn_taking_patience`` (medium) | ``pipeline/turn_taking.py`` |
| ``flow.replica_interruptibility`` | ``...replica_interruptibility`` (medium) | ``pipeline/turn_taking.py`` |
| ``flow.turn_commitment`` | ``...turn_commitment`` (medium) | shown by ``--check``; no effect of its own |
| ``flow.wake_phrase`` | ``...wake_phrase`` (none) | ``pipeline/wake_phrase.py`` |
| ``flow.idle_engagement`` | ``...idle_engagement`` (off) | ``pipeline/idle_engagement.py`` |
| ``flow.voice_isolation`` | ``...voice_isolation`` (near) | ``services/voice_isolation.py`` |
| ``speculative_inference`` | ``layers.llm.speculative_inference`` (true) | ``pipeline/turn_taking.py`` |
| ``tools`` | ``layers.llm.tools`` | ``pipeline/tool_dispatch.py`` |
| ``custom_greeting`` / ``greet`` | conversation ``custom_greeting``; ``--no-greeting`` | ``session/builder.py`` (``greeting_frames``) |
| ``language`` | conversation ``properties.language`` (english) | ``services/language.py`` and the STT/TTS factories |
| ``closed_captions`` | conversation ``properties.enable_closed_captions`` | ``pipeline/interactions/`` |
| ``local_tool_call_events`` | conversation ``properties.local_tool_call_events``, else ``layers.llm.local_tool_call_events`` (local) | ``pipeline/interactions/processor.py`` |

Fields with no default to resolve (the request model's own defaults are final), or that
configure an engine or the prompt, are read where they act, not copied here:

| persona / conversation field | realised in |
| --- | --- |
| conversation ``properties.max_call_duration``, ``participant_left_timeout``, ``participant_absent_timeout``, ``callback_url`` | ``conversation/lifecycle.py`` (callbacks: ``conversation/callbacks.py``) |
| conversation ``audio_only`` | ``services/tavus/plan.py`` (no renderer) |
| ``system_prompt``, ``context``, conversation ``conversational_context`` | ``config/prompt.py`` |
| ``layers.llm`` ``model``, ``base_url``, ``api_key``, ``headers``, ``extra_body``, ``default_query`` | ``services/llm.py`` (which engine: ``services/selection.py``) |
| ``layers.tts`` (engine, voice, model, ``voice_settings``, ``tts_emotion_control``) | ``services/tts.py``, ``services/voice_settings.py`` |
| ``layers.stt`` ``stt_engine``, ``hotwords`` | ``services/stt.py`` |
| ``default_replica_id``, conversation ``replica_id`` | ``services/tavus/plan.py`` |
| ``objectives_id``, ``guardrail_ids``, ``guardrails_id`` (from Tavus, into the prompt) | ``services/tavus/personas.py`` |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.conversation import ConversationRequest
from config.persona import FLOW_DEFAULTS, Persona, Tool


@dataclass(frozen=True)
class FlowOptions:
    """``layers.conversational_flow`` with Tavus's defaults (Tavus docs, Conversational Flow)."""

    turn_detection_model: str = FLOW_DEFAULTS["turn_detection_model"]
    turn_taking_patience: str = FLOW_DEFAULTS["turn_taking_patience"]
    turn_commitment: str = FLOW_DEFAULTS["turn_commitment"]
    replica_interruptibility: str = FLOW_DEFAULTS["replica_interruptibility"]
    wake_phrase: str | None = None
    idle_engagement: str = FLOW_DEFAULTS["idle_engagement"]
    voice_isolation: str = FLOW_DEFAULTS["voice_isolation"]

    def describe(self) -> str:
        """One line for ``--check``."""
        isolation = self.voice_isolation + (" (RNNoise)" if self.voice_isolation == "near" else "")
        return (
            f"interruptibility {self.replica_interruptibility}, "
            f"wake phrase {self.wake_phrase or 'none'}, "
            f"idle engagement {self.idle_engagement}, voice isolation {isolation}"
        )


@dataclass(frozen=True)
class ConversationOptions:
    """Everything a conversation does differently because of its persona and request."""

    persona_name: str = "Persona"
    pipeline_mode: str = "full"
    flow: FlowOptions = field(default_factory=FlowOptions)
    speculative_inference: bool = True
    tools: tuple[Tool, ...] = ()
    custom_greeting: str | None = None
    greet: bool = True
    language: str = "english"
    closed_captions: bool = False
    local_tool_call_events: str = "local"

    @property
    def echo(self) -> bool:
        """Echo mode: no STT and no LLM; the app says what the replica speaks."""
        return self.pipeline_mode == "echo"

    @classmethod
    def resolve(
        cls, persona: Persona, conversation: ConversationRequest | None = None, *, greet: bool = True
    ) -> ConversationOptions:
        """Apply every default once (``greet`` is the ``--no-greeting`` flag inverted)."""
        conversation = conversation or ConversationRequest()
        layer = persona.layers.conversational_flow
        flow = FlowOptions()
        if layer is not None:
            given = {k: v for k, v in layer.model_dump().items() if v is not None}
            flow = FlowOptions(**{k: v for k, v in given.items() if k in FlowOptions.__dataclass_fields__})
        props = conversation.properties
        return cls(
            persona_name=persona.display_name,
            pipeline_mode=persona.pipeline_mode,
            flow=flow,
            speculative_inference=bool(persona.layers.llm.speculative_inference),
            tools=tuple(persona.layers.llm.tools),
            custom_greeting=conversation.custom_greeting or None,
            greet=greet,
            language=props.language,
            closed_captions=props.enable_closed_captions,
            local_tool_call_events=(props.local_tool_call_events
                                    or persona.layers.llm.local_tool_call_events or "local"),
        )
