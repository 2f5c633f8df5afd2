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


@needs("DEEPGRAM_API_KEY")
async def test_deepgram_stt_transcribes(tmp_path):
    await _stt_transcribes("deepgram", {"DEEPGRAM_API_KEY": LIVE_ENV["DEEPGRAM_API_KEY"]}, tmp_path)


@needs("OPENAI_API_KEY")
async def test_openai_stt_transcribes(tmp_path):
    await _stt_transcribes("openai", {"OPENAI_API_KEY": LIVE_ENV["OPENAI_API_KEY"]}, tmp_path)


async def _stt_transcribes(engine: str, env: dict, tmp_path) -> None:
    """A Piper-spoken question streamed in real time through the cloud STT, with VAD frames."""
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.tests.utils import run_test

    from transports.file import read_wav_mono16
    from tests.speech import write_question_wav

    wav = write_question_wav(tmp_path / "q.wav", "What is the capital of France?",
                             lead_secs=0.2, tail_secs=1.0)
    pcm = read_wav_mono16(wav, 16000)
    chunk = 640  # 20 ms
    frames = [VADUserStartedSpeakingFrame()]
    frames += [InputAudioRawFrame(audio=pcm[i:i + chunk], sample_rate=16000, num_channels=1)
               for i in range(0, len(pcm), chunk)]
    frames += [VADUserStoppedSpeakingFrame()]
    stt = services({"stt": {"stt_engine": engine}}, env, llm=False, tts=False).stt

    down, _ = await run_test(stt, frames_to_send=frames, start_timeout=10, send_end_frame=True)
    text = " ".join(f.text for f in down if isinstance(f, TranscriptionFrame)).lower()
    assert "capital" in text and "france" in text


@needs("TAVUS_API_KEY")
async def test_tavus_replica_conversation_create_and_end():
    """Creates a real Tavus conversation in test_mode (the replica does not join, nothing is
    rendered) and ends it."""
    import aiohttp

    from services.tavus.api import TavusAPI

    replica = LIVE_ENV.get("TAVUS_REPLICA_ID")
    if not replica:
        pytest.skip("TAVUS_REPLICA_ID is not set")
    url = LIVE_ENV.get("TAVUS_API_URL") or Settings().tavus_api_url
    async with aiohttp.ClientSession() as http:
        api = TavusAPI(LIVE_ENV["TAVUS_API_KEY"], url, http)
        await api.get_replica(replica)
        conv = await api.create_conversation({"replica_id": replica, "persona_id": "pipecat0",
                                              "test_mode": True})
        assert conv["conversation_url"].startswith("https://")
        await api.end_conversation(conv["conversation_id"])


@needs("DAILY_API_KEY")
async def test_daily_room_create_and_delete():
    import aiohttp

    from config import conversation_from_dict
    from transports.daily_rooms import DailyRooms

    url = LIVE_ENV.get("DAILY_API_URL") or Settings().daily_api_url
    conversation = conversation_from_dict({"require_auth": True, "max_participants": 2,
                                           "properties": {"max_call_duration": 120}}).value
    async with aiohttp.ClientSession() as http:
        rooms = DailyRooms(LIVE_ENV["DAILY_API_KEY"], url, http)
        room = await rooms.create(conversation, "Live test bot")
        assert room.join_url.startswith("https://") and "?t=" in room.join_url
        await rooms.delete(room)
