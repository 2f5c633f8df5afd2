"""The Tavus persona schema as pydantic models.

The newest schema (Tavus's Create Persona API reference) is the model; legacy
fields from the older API pages (Tavus's earlier persona API pages) are migrated to their new
homes at load time, each migration recorded as a note:

| legacy field | new home |
| --- | --- |
| ``layers.stt.smart_turn_detection`` | ``layers.conversational_flow.turn_detection_model`` (true: sparrow-0, false: time-based) |
| ``layers.stt.participant_pause_sensitivity`` | ``layers.conversational_flow.turn_taking_patience`` (inverted: high -> low) |
| ``layers.stt.participant_interrupt_sensitivity`` | ``layers.conversational_flow.replica_interruptibility`` (inverted: low -> high) |
| ``layers.perception.ambient_awareness_queries`` | ``layers.perception.visual_awareness_queries`` |
| ``layers.perception.perception_tool_prompt`` / ``tool_prompt`` | ``layers.perception.visual_tool_prompt`` |
| ``layers.perception.perception_tools`` | ``layers.perception.visual_tools`` |
| ``layers.tts.voice_id`` | ``layers.tts.external_voice_id`` |
| ``layers.document_ids`` / ``layers.document_tags`` | top-level ``document_ids`` / ``document_tags`` |
| ``layers.tts.tts_engine: playht``, ``playht_user_id`` | dropped (PlayHT is gone); the engine is chosen automatically |

The inversion of the two sensitivities follows the migration guide of spec
003 (Troubleshooting, "Conversational Flow vs STT").
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from config.base import ConfigModel, LocalToolCallEvents, check_url, note
from config.errors import FieldProblem, FieldProblems, Problem
from config.tool_schema import schema_problems

Level = Literal["low", "medium", "high"]

STTEngine = Literal[
    "tavus-auto",
    "tavus-parakeet",
    "tavus-soniox",
    "tavus-whisper",
    "tavus-deepgram-medical",
    "tavus-advanced",
    "tavus-turbo",
    "whisper",
    "deepgram",
    "openai",
]
TTSEngine = Literal["cartesia", "elevenlabs", "piper", "openai", "deepgram"]
CartesiaSpeedName = Literal["slowest", "slow", "normal", "fast", "fastest"]

def _move_legacy(
    src: dict[str, Any], old: str, dst: dict[str, Any], new: str, info: ValidationInfo, where: str
) -> None:
    """Move a legacy field ``src[old]`` to ``dst[new]`` unless the new field is already set."""
    if old not in src:
        return
    value = src.pop(old)
    if value in (None, "", []):
        return  # stock personas carry empty legacy fields; nothing to move
    if dst.get(new) in (None, "", []):
        dst[new] = value
        note(info, f"{where}{old} (legacy) migrated to {new}")
    else:
        note(info, f"{where}{old} (legacy) ignored: {new} is set")


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INVERT = {"low": "high", "medium": "medium", "high": "low"}


# --------------------------------------------------------------------------- tools


class ToolFunction(ConfigModel):
    """An OpenAI-style function declaration."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("tool names are 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        kind = value.get("type", "object")
        if kind != "object":
            raise ValueError("parameters must be a JSON schema with type 'object'")
        props = value.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError("parameters.properties must be an object")
        required = value.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("parameters.required must be a list of property names")
        unknown = [r for r in required if r not in props]
        if unknown:
            raise ValueError(f"parameters.required names undefined properties: {unknown}")
        # The schema is data from the persona, evaluated later against the LLM's arguments:
        # bounded, local references only, no endless recursion, RE2 patterns
        # (config/tool_schema.py says why and how).
        problems = schema_problems(value)
        if problems:
            raise FieldProblems(problems)
        return value


class Tool(ConfigModel):
    """A tool the LLM (or perception) may call."""

    type: Literal["function"] = "function"
    function: ToolFunction

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data: Any) -> Any:
        # Spec 002 documents perception tools as {name, description}; accept that form too.
        if isinstance(data, dict) and "function" not in data and "name" in data:
            data = dict(data)
            fn = {k: data.pop(k) for k in ("name", "description", "parameters") if k in data}
            data["function"] = fn
        return data


def _unique_tool_names(tools: list[Tool]) -> list[Tool]:
    names = [t.function.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tool names must be unique; repeated: {dupes}")
    return tools


# --------------------------------------------------------------------------- layers


class LLMLayer(ConfigModel):
    """``layers.llm``: any OpenAI-compatible model."""

    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    speculative_inference: bool = True
    tools: list[Tool] = Field(default_factory=list)
    # Our addition (Tavus runs no tool in the bot): how a call of a tool the bot runs itself
    # (tools/) is announced to the room. "local": as conversation.local_tool_call (default);
    # "tool_call": as conversation.tool_call, Tavus's shape, for front ends that only show
    # calls (one that executes every tool_call would repeat the side effect); "none": not at all.
    local_tool_call_events: LocalToolCallEvents | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    default_query: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return check_url(value, "base_url")

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[Tool]) -> list[Tool]:
        return _unique_tool_names(value)

    @property
    def is_tavus_model(self) -> bool:
        """True for Tavus-hosted model names (``tavus-*``), which we cannot call."""
        return bool(self.model) and self.model.startswith("tavus-")


class VoiceSettings(ConfigModel):
    """``layers.tts.voice_settings`` (Tavus docs, TTS layer)."""

    speed: float | CartesiaSpeedName | None = None
    emotion: list[str] | None = None
    stability: float | None = Field(default=None, ge=0.0, le=1.0)
    similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    style: float | None = Field(default=None, ge=0.0, le=1.0)
    use_speaker_boost: bool | None = None

    @field_validator("emotion")
    @classmethod
    def _emotion(cls, value: list[str] | None) -> list[str] | None:
        for tag in value or []:
            if not re.match(r"^[a-z_]+(:(lowest|low|high|highest))?$", tag):
                raise ValueError(
                    f"emotion tags look like 'positivity:high' or 'curiosity'; bad tag {tag!r}"
                )
        return value


class TTSLayer(ConfigModel):
    """``layers.tts``."""

    api_key: str | None = None
    tts_engine: TTSEngine | None = None
    external_voice_id: str | None = None
    voice_settings: VoiceSettings | None = None
    tts_emotion_control: bool = True
    tts_model_name: str | None = None
    pronunciation_dictionary_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        _move_legacy(data, "voice_id", data, "external_voice_id", info, "layers.tts.")
        if data.get("tts_engine") == "playht":
            data.pop("tts_engine")
            note(
                info,
                "layers.tts.tts_engine 'playht' is no longer supported; "
                "the TTS engine will be chosen automatically",
            )
        if "playht_user_id" in data:
            data.pop("playht_user_id")
            note(info, "layers.tts.playht_user_id (legacy PlayHT setting) ignored")
        return data

    @model_validator(mode="after")
    def _engine_ranges(self) -> TTSLayer:
        vs = self.voice_settings
        if vs is None:
            return self
        speed = vs.speed
        if self.tts_engine == "elevenlabs":
            if isinstance(speed, float) and not 0.7 <= speed <= 1.2:
                raise FieldProblem(
                    "voice_settings.speed", "for elevenlabs must be 0.7-1.2", speed
                )
            if isinstance(speed, str) and speed != "normal":
                raise FieldProblem(
                    "voice_settings.speed", "for elevenlabs must be a number 0.7-1.2 or 'normal'", speed
                )
        elif isinstance(speed, float) and not -1.0 <= speed <= 1.0:
            raise FieldProblem(
                "voice_settings.speed",
                "must be -1.0 to 1.0 (negative slower, positive faster) "
                "or one of slowest|slow|normal|fast|fastest",
                speed,
            )
        return self


class STTLayer(ConfigModel):
    """``layers.stt``. Turn-taking fields are legacy and migrate to conversational_flow."""

    stt_engine: STTEngine | None = None
    hotwords: str | None = None


# Tavus's documented defaults of a conversational_flow layer (also when it is absent:
# config.options.FlowOptions takes them from here).
FLOW_DEFAULTS = {
    "turn_detection_model": "sparrow-1",
    "turn_taking_patience": "medium",
    "turn_commitment": "medium",
    "replica_interruptibility": "medium",
    "voice_isolation": "near",
    "idle_engagement": "off",
}


class ConversationalFlowLayer(ConfigModel):
    """``layers.conversational_flow``.

    All fields are optional; when any is given the others get the documented
    defaults (Tavus docs, Conversational Flow, "Default Behavior").
    """

    turn_detection_model: Literal["sparrow-1", "sparrow-0", "time-based"] | None = None
    turn_taking_patience: Level | None = None
    turn_commitment: Level | None = None
    replica_interruptibility: Literal["verylow", "low", "medium", "high"] | None = None
    voice_isolation: Literal["off", "near"] | None = None
    wake_phrase: str | None = None
    idle_engagement: Literal["off", "patient", "eager"] | None = None

    @field_validator("wake_phrase")
    @classmethod
    def _wake(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("wake_phrase must not be empty (omit it to disable)")
        return value.strip() if value else value

    @model_validator(mode="after")
    def _defaults(self) -> ConversationalFlowLayer:
        if any(getattr(self, name) is not None for name in type(self).model_fields):
            for name, default in FLOW_DEFAULTS.items():
                if getattr(self, name) is None:
                    setattr(self, name, default)
        return self


class PerceptionLayer(ConfigModel):
    """``layers.perception`` (Raven)."""

    perception_model: Literal["raven-1", "raven-0", "off"] = "raven-1"
    visual_awareness_queries: list[str] = Field(default_factory=list)
    visual_tool_prompt: str | None = None
    visual_tools: list[Tool] = Field(default_factory=list)
    audio_awareness_queries: list[str] = Field(default_factory=list)
    audio_tool_prompt: str | None = None
    audio_tools: list[Tool] = Field(default_factory=list)
    # Answered from the call's observations at its end (Tavus documents it for raven-0; here
    # every visual model), into the application.perception_analysis callback.
    perception_analysis_queries: list[str] = Field(default_factory=list)
    # Our additions: a vision-capable OpenAI-compatible model (image input) that answers the
    # queries and decides the visual tools instead of the local detectors; the environment's
    # PERCEPTION_VISION_* are used when these are unset.
    vision_model: str | None = None
    vision_base_url: str | None = None
    vision_api_key: str | None = None

    @field_validator("visual_awareness_queries", "audio_awareness_queries",
                     "perception_analysis_queries")
    @classmethod
    def _queries(cls, value: list[str]) -> list[str]:
        if len(value) > 20:
            raise ValueError("at most 20 queries")
        long = [q[:40] for q in value if len(q) > 500]
        if long:
            raise ValueError(f"a query is at most 500 characters: {long}")
        return [q.strip() for q in value if q.strip()]

    @field_validator("vision_base_url")
    @classmethod
    def _vision_url(cls, value: str | None) -> str | None:
        return check_url(value, "vision_base_url")

    @property
    def visual(self) -> bool:
        """Whether the camera and the screen are perceived (raven-0 and raven-1)."""
        return self.perception_model != "off"

    @property
    def hears(self) -> bool:
        """Whether the user's voice is perceived (raven-1 only, as on Tavus)."""
        return self.perception_model == "raven-1"

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        moves = (
            ("ambient_awareness_queries", "visual_awareness_queries"),
            ("perception_tool_prompt", "visual_tool_prompt"),
            ("tool_prompt", "visual_tool_prompt"),
            ("perception_tools", "visual_tools"),
        )
        for old, new in moves:
            _move_legacy(data, old, data, new, info, "layers.perception.")
        if "ambient_awareness" in data:
            data.pop("ambient_awareness")
            note(
                info,
                "layers.perception.ambient_awareness (legacy) ignored; "
                "use visual_awareness_queries",
            )
        return data

    @field_validator("visual_tools", "audio_tools")
    @classmethod
    def _tools(cls, value: list[Tool]) -> list[Tool]:
        return _unique_tool_names(value)


class Layers(ConfigModel):
    """``layers``: one object per pipeline layer."""

    perception: PerceptionLayer | None = None
    stt: STTLayer = Field(default_factory=STTLayer)
    conversational_flow: ConversationalFlowLayer | None = None
    llm: LLMLayer = Field(default_factory=LLMLayer)
    tts: TTSLayer = Field(default_factory=TTSLayer)

    @model_validator(mode="before")
    @classmethod
    def _legacy_turn_taking(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("stt"), dict):
            return data
        data = dict(data)
        stt = dict(data["stt"])
        legacy = {
            key: stt.pop(key)
            for key in (
                "smart_turn_detection",
                "participant_pause_sensitivity",
                "participant_interrupt_sensitivity",
            )
            if key in stt
        }
        if not legacy:
            return data
        data["stt"] = stt
        flow = data.get("conversational_flow")
        flow = dict(flow) if isinstance(flow, dict) else {}
        # A conversational_flow layer that selects sparrow-1 overrides legacy STT settings.
        overrides = flow.get("turn_detection_model") == "sparrow-1"
        mapped: dict[str, Any] = {}
        if "smart_turn_detection" in legacy:
            std = legacy["smart_turn_detection"]
            if isinstance(std, str) and std.lower() in ("true", "false"):
                std = std.lower() == "true"
            if isinstance(std, bool):
                mapped["turn_detection_model"] = "sparrow-0" if std else "time-based"
            else:
                mapped["turn_detection_model"] = std  # let validation report the bad value
        for old, new in (
            ("participant_pause_sensitivity", "turn_taking_patience"),
            ("participant_interrupt_sensitivity", "replica_interruptibility"),
        ):
            if old in legacy:
                value = legacy[old]
                mapped[new] = _INVERT.get(value, value) if isinstance(value, str) else value
        for key, value in mapped.items():
            if key in flow and (overrides or flow[key] is not None):
                note(info, f"legacy layers.stt setting for {key} ignored: conversational_flow sets it")
                continue
            flow[key] = value
            note(info, f"legacy layers.stt turn-taking migrated to layers.conversational_flow.{key}={value!r}")
        data["conversational_flow"] = flow
        return data


# --------------------------------------------------------------------------- persona


class Persona(ConfigModel):
    """A Tavus persona: who the replica is and how each layer behaves."""

    persona_id: str | None = None
    persona_name: str | None = None
    system_prompt: str | None = None
    pipeline_mode: Literal["full", "echo"] = "full"
    context: str | None = None
    default_replica_id: str | None = None
    document_ids: list[str] = Field(default_factory=list)
    document_tags: list[str] = Field(default_factory=list)
    objectives_id: str | None = None
    guardrail_ids: list[str] = Field(default_factory=list, max_length=50)
    guardrail_tags: list[str] = Field(default_factory=list, max_length=50)
    guardrails_id: str | None = None
    layers: Layers = Field(default_factory=Layers)
    created_at: str | None = None
    updated_at: str | None = None
    # Objectives and guardrails fetched from Tavus by id, rendered for the system prompt.
    _policy_prompt: str = PrivateAttr(default="")

    @property
    def policy_prompt(self) -> str:
        """The fetched objectives and guardrails as prompt text ('' when none)."""
        return self._policy_prompt

    def set_policy_prompt(self, text: str) -> None:
        self._policy_prompt = text

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        layers = data.get("layers")
        if isinstance(layers, dict):
            layers = dict(layers)
            for key in ("document_ids", "document_tags"):
                _move_legacy(layers, key, data, key, info, "layers.")
            data["layers"] = layers
        return data

    @model_validator(mode="after")
    def _requirements(self) -> Persona:
        if self.pipeline_mode == "full" and not (self.system_prompt or "").strip():
            raise FieldProblem(
                "system_prompt", "is required (a non-empty string) unless pipeline_mode is 'echo'"
            )
        return self

    @classmethod
    def raw_problems(cls, data: dict[str, Any]) -> list[Problem]:
        """Problems judged on the raw document when field validation already failed."""
        mode = data.get("pipeline_mode", "full")
        prompt = data.get("system_prompt")
        if mode != "echo" and (prompt is None or (isinstance(prompt, str) and not prompt.strip())):
            return [Problem("system_prompt", "is required (a non-empty string) unless "
                            "pipeline_mode is 'echo'")]
        return []

    @property
    def display_name(self) -> str:
        """The name the bot shows in a room."""
        return self.persona_name or "Persona"
