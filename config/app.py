"""Everything one run of the bot is configured by: persona, conversation, environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.conversation import ConversationRequest
from config.loader import load_conversation, load_persona, persona_from_dict
from config.options import ConversationOptions
from config.persona import Persona
from config.policies import Policies
from config.redact import (
    credential_values,
    header_secrets,
    is_secret_key,
    looks_like_credential,
    redact,
    url_secrets,
)
from config.settings import Settings

DEFAULT_PERSONA = Path(__file__).resolve().parent.parent / "personas" / "default.json"


@dataclass
class AppConfig:
    """A validated persona, conversation request and settings, plus what to tell the user."""

    persona: Persona
    conversation: ConversationRequest
    settings: Settings
    persona_source: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    greet: bool = True
    #: The objectives and guardrails the conversation runs with (resolved by
    #: ``conversation/policies.py`` from the persona's and conversation's ids; none by default).
    policies: Policies = field(default_factory=Policies)
    #: The persona's effective behaviour, every default applied (resolved once, here).
    options: ConversationOptions = field(init=False)

    def __post_init__(self) -> None:
        self.options = ConversationOptions.resolve(self.persona, self.conversation, greet=self.greet)

    @classmethod
    def of(cls, persona: Persona, conversation: ConversationRequest | None = None,
           settings: Settings | None = None, *, source: str = "persona",
           greet: bool = True) -> AppConfig:
        """An ``AppConfig`` from models already validated (tests, benchmarks)."""
        return cls(persona=persona, conversation=conversation or ConversationRequest(),
                   settings=settings or Settings.from_env({}), persona_source=source, greet=greet)

    @classmethod
    def load(
        cls,
        persona_path: str | Path | None = None,
        conversation_path: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        persona_data: dict | None = None,
        persona_source: str | None = None,
        greet: bool = True,
    ) -> AppConfig:
        """Load and validate; raises :class:`~config.errors.ConfigError` on bad input.

        ``persona_data`` (with ``persona_source`` naming where it came from, e.g. a
        Tavus persona id) replaces reading ``persona_path``.
        """
        if persona_data is not None:
            persona_path = persona_source or "persona"
            persona = persona_from_dict(persona_data, str(persona_path))
        else:
            persona_path = Path(persona_path) if persona_path else DEFAULT_PERSONA
            persona = load_persona(persona_path)
        warnings = [f"{persona_path}: {w}" for w in persona.warnings]
        notes = [f"{persona_path}: {n}" for n in persona.notes]
        if conversation_path:
            conv = load_conversation(conversation_path)
            conversation = conv.value
            warnings += [f"{conversation_path}: {w}" for w in conv.warnings]
        else:
            conversation = ConversationRequest()
        return cls(
            persona=persona.value,
            conversation=conversation,
            settings=Settings.from_env(environ),
            persona_source=str(persona_path),
            warnings=warnings,
            notes=notes,
            greet=greet,
        )

    def secrets(self) -> list[str]:
        """Every secret value in the environment settings, the persona and the conversation.

        The keys; every header value (and the token of ``Bearer <token>``); ``default_query``
        values named or shaped like a secret; credential values in ``extra_body``; the
        userinfo and query tokens of ``base_url`` and ``callback_url``.
        """
        llm, tts = self.persona.layers.llm, self.persona.layers.tts
        values = [*self.settings.secrets(), llm.api_key, tts.api_key, *header_secrets(llm.headers)]
        values += [v for k, v in llm.default_query.items()
                   if is_secret_key(k) or looks_like_credential(v, loose=True)]
        values += credential_values(llm.extra_body)
        values += url_secrets(llm.base_url)
        perception = self.persona.layers.perception
        if perception is not None:
            values += [perception.vision_api_key, *url_secrets(perception.vision_base_url)]
        values += url_secrets(self.conversation.callback_url, any_query=True)
        return list(dict.fromkeys(v for v in values if v))

    def effective(self) -> dict[str, Any]:
        """The effective configuration (defaults applied), secrets redacted."""
        return redact(
            {
                "persona": self.persona.model_dump(mode="json"),
                "conversation": self.conversation.model_dump(mode="json"),
            }
        )
