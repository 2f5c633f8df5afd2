"""Start-up warms the embedded models (session/warmup.py): the first turn is not the slow one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config import Settings, conversation_from_dict, persona_from_dict
from config.app import AppConfig
from session import warmup
from session.owner import plan_for

ROOT = Path(__file__).resolve().parent.parent


def _app(tmp_path) -> AppConfig:
    persona = persona_from_dict(json.loads((ROOT / "personas" / "default.json").read_text())).value
    return AppConfig.of(persona, conversation_from_dict({}).value,
                        Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path)}))


async def test_every_embedded_model_is_run_once_and_the_prompt_is_then_cached(tmp_path):
    from services.llm import local_llm_server

    app = _app(tmp_path)
    plan = plan_for(app, True)
    server = local_llm_server(app.settings)
    await server.wait_ready()
    took = warmup.warm_up(app, plan, server)
    assert set(took) == {"whisper", "piper", "smart turn", "llm"}, took
    again = warmup.warm_up(app, plan, server)
    # The server kept the system prompt evaluated: one token on it again is no full prompt.
    assert again["llm"] < took["llm"] or again["llm"] < 0.1, (took, again)


def test_a_part_that_fails_is_logged_and_the_rest_still_warm(tmp_path, monkeypatch, caplog):
    from loguru import logger

    app = _app(tmp_path)
    plan = plan_for(app, True)

    def broken(*_args):
        raise RuntimeError("no voice today")

    monkeypatch.setattr(warmup, "_piper", broken)
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    try:
        took = warmup.warm_up(app, plan, None)
    finally:
        logger.remove(sink)
    assert "piper" not in took and {"whisper", "smart turn"} <= set(took)
    assert any("Could not warm piper up: RuntimeError: no voice today" in line for line in seen)


def test_cloud_engines_warm_nothing(tmp_path):
    import dataclasses

    from services.selection import EngineChoice

    app = _app(tmp_path)
    plan = plan_for(app, True)
    cloud = dataclasses.replace(plan, stt=EngineChoice("stt", "deepgram", "key"),
                                tts=EngineChoice("tts", "cartesia", "key"))
    app.options = dataclasses.replace(app.options, flow=dataclasses.replace(
        app.options.flow, turn_detection_model="time-based"))
    assert warmup.warm_up(app, cloud, None) == {}
