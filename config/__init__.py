"""Typed configuration: the Tavus persona, the conversation request, environment settings."""

from config.conversation import ConversationProperties, ConversationRequest
from config.errors import ConfigError, Problem
from config.loader import (
    Loaded,
    conversation_from_dict,
    load_conversation,
    load_persona,
    persona_from_dict,
)
from config.persona import Persona
from config.redact import redact
from config.settings import Settings

__all__ = [
    "ConfigError",
    "ConversationProperties",
    "ConversationRequest",
    "Loaded",
    "Persona",
    "Problem",
    "Settings",
    "conversation_from_dict",
    "load_conversation",
    "load_persona",
    "persona_from_dict",
    "redact",
]
