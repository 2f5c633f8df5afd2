"""The cloud paths against the real services. Run with ``pytest -m live``; each test skips
when its key is not in the environment (a .env file is not read by the tests)."""

from __future__ import annotations

import pytest

from config import Settings, persona_from_dict
from services import build_services, select_engines
from tests.conftest import LIVE_ENV

pytestmark = pytest.mark.live


def needs(var: str):
    return pytest.mark.skipif(not LIVE_ENV.get(var), reason=f"{var} is not set")


def services(layers: dict, env: dict, **which):
    persona = persona_from_dict({"system_prompt": "Answer in one short sentence.",
                                 "layers": layers}).value
    settings = Settings.from_env(env)
    plan = select_engines(persona, settings)
    return build_services(plan, persona, None, settings, system_instruction=persona.system_prompt,
                          **which)


@needs("OPENAI_API_KEY")
async def test_openai_llm_answers():
    from pipecat.frames.frames import LLMContextFrame, LLMTextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.tests.utils import run_test

    llm = services({}, {"OPENAI_API_KEY": LIVE_ENV["OPENAI_API_KEY"]}, stt=False, tts=False).llm
    context = LLMContext()
    context.add_message({"role": "user", "content": "What is the capital of France?"})
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)], start_timeout=10)
    assert "paris" in "".join(f.text for f in down if isinstance(f, LLMTextFrame)).lower()


@pytest.mark.parametrize("engine,var", [("cartesia", "CARTESIA_API_KEY"),
                                        ("elevenlabs", "ELEVENLABS_API_KEY"),
                                        ("openai", "OPENAI_API_KEY"),
                                        ("deepgram", "DEEPGRAM_API_KEY")])
async def test_cloud_tts_speaks(engine, var):
    if not LIVE_ENV.get(var):
        pytest.skip(f"{var} is not set")
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.tests.utils import run_test

    tts = services({"tts": {"tts_engine": engine}}, {var: LIVE_ENV[var]}, stt=False, llm=False).tts
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame("Hello there.")], start_timeout=10)
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert len(audio) > 4800
