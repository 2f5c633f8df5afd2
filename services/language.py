"""Conversation language -> what each engine understands."""

from __future__ import annotations

from dataclasses import dataclass

from pipecat.transcriptions.language import Language

from config.conversation import ConversationRequest


@dataclass(frozen=True)
class LanguageChoice:
    """The conversation's language as engines need it."""

    name: str  # "english", ..., or "multilingual"
    code: str | None  # ISO 639-1, None for multilingual

    @property
    def multilingual(self) -> bool:
        """True when the language is detected per utterance."""
        return self.code is None

    @property
    def pipecat(self) -> Language | None:
        """Pipecat's ``Language`` enum value, or None for multilingual."""
        return Language(self.code) if self.code else None


def conversation_language(conversation: ConversationRequest | None) -> LanguageChoice:
    """The language requested by the conversation (English by default)."""
    if conversation is None:
        return LanguageChoice("english", "en")
    props = conversation.properties
    return LanguageChoice(props.language, props.language_code)
