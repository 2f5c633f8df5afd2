"""The conversation request: Tavus create-conversation fields (Tavus's Create Conversation API)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from config.base import ConfigModel, LocalToolCallEvents, check_url

# Full language names accepted by Tavus (Tavus docs, Language Support) -> ISO 639-1 code.
LANGUAGES: dict[str, str] = {
    "english": "en",
    "french": "fr",
    "german": "de",
    "spanish": "es",
    "portuguese": "pt",
    "chinese": "zh",
    "japanese": "ja",
    "hindi": "hi",
    "italian": "it",
    "korean": "ko",
    "dutch": "nl",
    "polish": "pl",
    "russian": "ru",
    "swedish": "sv",
    "turkish": "tr",
    "indonesian": "id",
    "filipino": "tl",
    "bulgarian": "bg",
    "romanian": "ro",
    "arabic": "ar",
    "czech": "cs",
    "greek": "el",
    "finnish": "fi",
    "croatian": "hr",
    "malay": "ms",
    "slovak": "sk",
    "danish": "da",
    "tamil": "ta",
    "ukrainian": "uk",
    "hungarian": "hu",
    "norwegian": "no",
    "vietnamese": "vi",
}
MULTILINGUAL = "multilingual"


class ConversationProperties(ConfigModel):
    """``properties`` of a create-conversation request."""

    max_call_duration: int = Field(default=3600, ge=1)
    participant_left_timeout: int = Field(default=0, ge=0)
    participant_absent_timeout: int = Field(default=300, ge=0)
    enable_recording: bool = False
    enable_closed_captions: bool = False
    apply_greenscreen: bool = False
    language: str = "english"
    recording_s3_bucket_name: str | None = None
    recording_s3_bucket_region: str | None = None
    aws_assume_role_arn: str | None = None
    # Our addition: overrides the persona's layers.llm.local_tool_call_events for this call.
    local_tool_call_events: LocalToolCallEvents | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        name = value.strip().lower()
        if name != MULTILINGUAL and name not in LANGUAGES:
            allowed = ", ".join(sorted(LANGUAGES)) + f", {MULTILINGUAL}"
            raise ValueError(f"must be a full language name: one of {allowed}")
        return name

    @property
    def language_code(self) -> str | None:
        """ISO code of the language, or None for ``multilingual``."""
        return LANGUAGES.get(self.language)


class ConversationRequest(ConfigModel):
    """A create-conversation request as Tavus defines it; our bot runs one per session."""

    persona_id: str | None = None
    replica_id: str | None = None
    conversation_name: str | None = None
    conversational_context: str | None = None
    custom_greeting: str | None = None
    callback_url: str | None = None
    audio_only: bool = False
    document_ids: list[str] = Field(default_factory=list)
    document_tags: list[str] = Field(default_factory=list)
    document_retrieval_strategy: Literal["speed", "balanced", "quality"] = "balanced"
    memory_stores: list[str] = Field(default_factory=list)
    # This conversation's objectives (overrides the persona's objectives_id).
    objectives_id: str | None = None
    require_auth: bool = False
    max_participants: int | None = Field(default=None, ge=2)
    test_mode: bool = False
    properties: ConversationProperties = Field(default_factory=ConversationProperties)

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        return check_url(value, "callback_url")
