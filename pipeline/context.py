"""Composition of the LLM system prompt, in one place.

The result is the LLM service's ``system_instruction`` (Pipecat's place for it
since 1.9); the context holds only the conversation.

Order: persona ``system_prompt``, persona ``context``, the objectives and
guardrails fetched from Tavus (if any), the conversation's
``conversational_context`` (which Tavus appends to the persona context), then
a language instruction when the conversation is not in English.
"""

from __future__ import annotations

from config.conversation import ConversationRequest
from config.persona import Persona


def compose_system_prompt(persona: Persona, conversation: ConversationRequest | None) -> str:
    """The system message for this persona and conversation."""
    parts = [persona.system_prompt, persona.context, persona.policy_prompt]
    if conversation is not None:
        parts.append(conversation.conversational_context)
        language = conversation.properties.language
        if language == "multilingual":
            parts.append("Reply in the language the user speaks.")
        elif language != "english":
            parts.append(f"Always reply in {language.capitalize()}.")
    return "\n\n".join(p.strip() for p in parts if p and p.strip())
