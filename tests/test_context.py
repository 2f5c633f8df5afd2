"""System prompt composition."""

from config import conversation_from_dict, persona_from_dict
from config.prompt import compose_system_prompt


def test_prompt_order_and_conversational_context():
    persona = persona_from_dict({"system_prompt": "You are Ava.", "context": "Ctx."}).value
    conv = conversation_from_dict({"conversational_context": "The user is Bob."}).value
    assert compose_system_prompt(persona, conv) == "You are Ava.\n\nCtx.\n\nThe user is Bob."
    assert compose_system_prompt(persona, None) == "You are Ava.\n\nCtx."


def test_language_instruction():
    persona = persona_from_dict({"system_prompt": "You are Ava."}).value
    spanish = conversation_from_dict({"properties": {"language": "spanish"}}).value
    multi = conversation_from_dict({"properties": {"language": "multilingual"}}).value
    assert compose_system_prompt(persona, spanish).endswith("Always reply in Spanish.")
    assert compose_system_prompt(persona, multi).endswith("Reply in the language the user speaks.")


def test_echo_persona_without_prompt_composes_empty():
    persona = persona_from_dict({"pipeline_mode": "echo"}).value
    assert compose_system_prompt(persona, None) == ""


def test_tts_emotion_control_prompts_for_emotion_tags_with_cartesia_only():
    from config.prompt import EMOTION_TAGS_INSTRUCTION, emotion_tags_enabled

    on = persona_from_dict({"system_prompt": "You are Ava.",
                            "layers": {"tts": {"tts_engine": "cartesia", "tts_emotion_control": True}}}).value
    off = persona_from_dict({"system_prompt": "You are Ava.",
                             "layers": {"tts": {"tts_engine": "cartesia", "tts_emotion_control": False}}}).value
    assert emotion_tags_enabled(on, "cartesia") and not emotion_tags_enabled(on, "piper")
    assert not emotion_tags_enabled(off, "cartesia")
    prompt = compose_system_prompt(on, None, emotion_tags=True)
    assert prompt.endswith(EMOTION_TAGS_INSTRUCTION) and '<emotion value="excited" />' in prompt
