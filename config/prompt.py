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


# Cartesia sonic-3 reads SSML emotion tags in the text (Pipecat strips them from captions).
EMOTION_TAGS_INSTRUCTION = (
    "Your voice can show emotion: where it fits, begin a sentence with a tag such as "
    '<emotion value="excited" />, with one of neutral, content, happy, excited, curious, '
    "surprised, sad, angry, scared, peaceful. Use them sparingly; never mention the tags."
)


def emotion_tags_enabled(persona: Persona, tts_engine: str | None) -> bool:
    """``tts_emotion_control`` takes effect with Cartesia, the engine that reads emotion tags."""
    return bool(persona.layers.tts.tts_emotion_control) and tts_engine == "cartesia"


def compose_system_prompt(
    persona: Persona, conversation: ConversationRequest | None, *, emotion_tags: bool = False
) -> str:
    """The system message for this persona and conversation.

    ``emotion_tags``: the TTS reads emotion tags (see :func:`emotion_tags_enabled`).
    """
    parts = [persona.system_prompt, persona.context, persona.policy_prompt]
    if emotion_tags:
        parts.append(EMOTION_TAGS_INSTRUCTION)
    if conversation is not None:
        parts.append(conversation.conversational_context)
        language = conversation.properties.language
        if language == "multilingual":
            parts.append("Reply in the language the user speaks.")
        elif language != "english":
            parts.append(f"Always reply in {language.capitalize()}.")
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def system_prompt_for(persona: Persona, conversation: ConversationRequest | None,
                      tts_engine: str | None) -> str:
    """The system prompt as the LLM gets it, with the TTS engine chosen for this conversation."""
    return compose_system_prompt(
        persona, conversation, emotion_tags=emotion_tags_enabled(persona, tts_engine)
    )
