"""Shared fixtures. A developer's .env and shell keys never reach the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PERSONAS = ROOT / "personas"
OUTPUT = ROOT / "tests" / "output"

_KEY_VARS = [Settings.env_name(f) for f in Settings._ENV]
# Captured before the autouse fixture clears them: only `-m live` tests may use real keys.
LIVE_ENV = {var: os.environ.get(var, "") for var in _KEY_VARS}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in _KEY_VARS + ["LOG_LEVEL", "DAILY_ROOM_URL"]:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def default_persona() -> dict:
    return json.loads((PERSONAS / "default.json").read_text())


@pytest.fixture
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
