"""The bot process against loopback fakes of Tavus and Daily, as a user runs it.

Daily's media connection cannot be reached offline: joins fail after
daily-python gives up (~20 s), which is itself the "cannot join" path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT, wait_until
from tests.fake_rest import FakeDaily, FakeTavus


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PERSONA_DOTENV="0", **extra)
    return env


class Bot:
    """``python bot.py ARGS`` with its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed; output:\n{self.output[-4000:]}")

    def finish(self, timeout: float = 90) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5)
        return code


# --------------------------------------------------------------------------- TavusTransport


@pytest.mark.e2e
def test_tavus_transport_prints_the_url_and_ctrl_c_ends_the_conversation():
    with FakeTavus() as fake:
        bot = Bot(["--renderer", "transport"], _env(
            TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url, TAVUS_REPLICA_ID="r-test"))
        line = bot.wait_for("Join the conversation: ")
        (cid,) = fake.conversations
        assert line.strip().endswith(f"https://tavus.daily.co/{cid}")
        bot.wait_for("Joining https://tavus.daily.co/")
        bot.proc.send_signal(signal.SIGINT)
        assert wait_until(lambda: fake.ended() == [cid]), bot.output[-3000:]
        bot.finish()
    create = fake.calls("POST", "/v2/conversations")[0]
    assert create.body["replica_id"] == "r-test" and create.body["persona_id"] == "pipecat0"
    assert fake.requests[0].path == "/v2/replicas/r-test"  # checked before anything is created
    assert fake.api_key not in bot.output


@pytest.mark.e2e
def test_tavus_transport_that_cannot_join_ends_the_conversation_and_says_why():
    with FakeTavus() as fake:
        bot = Bot(["--renderer", "transport", "--no-greeting"], _env(
            TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url, TAVUS_REPLICA_ID="r-test"))
        code = bot.finish(timeout=120)
    assert code == 2
    (cid,) = fake.conversations
    assert fake.ended() == [cid]
    assert f"error: Tavus conversation {cid}: could not join the Tavus room" in bot.output


def test_tavus_bad_key_or_replica_fails_before_creating_a_conversation():
    with FakeTavus() as fake:
        bot = Bot(["--renderer", "transport"], _env(
            TAVUS_API_KEY="wrong-key-123", TAVUS_API_URL=fake.base_url, TAVUS_REPLICA_ID="r-test"))
        assert bot.finish() == 2
        assert "Tavus rejected the API key (401 Invalid access token): check TAVUS_API_KEY" in bot.output
        assert "wrong-key-123" not in bot.output
        bot = Bot(["--renderer", "video", "--port", "1"], _env(
            TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url, TAVUS_REPLICA_ID="r-nope"))
        assert bot.finish() == 2
        assert "Tavus: replica 'r-nope': not found (404" in bot.output
    assert fake.calls("POST", "/v2/conversations") == []


def test_renderer_without_a_replica_is_a_clear_error():
    bot = Bot(["--renderer", "transport"], _env(TAVUS_API_KEY="k"))
    assert bot.finish() == 2
    assert "no Tavus replica: set replica_id in the --conversation file, default_replica_id" in bot.output


# --------------------------------------------------------------------------- Daily rooms


@pytest.mark.e2e
def test_daily_room_with_the_conversation_limits_and_a_private_token(tmp_path):
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps({
        "require_auth": True, "max_participants": 3,
        "properties": {"max_call_duration": 600, "participant_absent_timeout": 120},
    }))
    with FakeDaily() as fake:
        started = time.time()
        bot = Bot(["-t", "daily", "--conversation", str(conversation)],
                  _env(DAILY_API_KEY=fake.api_key, DAILY_API_URL=fake.base_url))
        line = bot.wait_for("Join the conversation: ")
        (name,) = fake.rooms
        bot_token, user_token = fake.tokens
        assert line.strip().endswith(f"https://fake.daily.co/{name}?t=tok-2-{name}")
        # As on Tavus: the room is named after the conversation id (printed too), and the
        # bot is the participant whose user_id contains "tavus-replica" (cvi-ui's
        # useReplicaIDs); the user's token has no such id.
        assert bot.wait_for("Conversation id: ").strip().endswith(f"Conversation id: {name}")
        assert name.startswith("c") and len(name) == 13
        assert bot_token["user_id"] == f"tavus-replica-{name}" and len(bot_token["user_id"]) <= 36
        assert bot_token["user_name"] and "user_id" not in user_token
        bot.wait_for(f"Joining https://fake.daily.co/{name}")
        bot.proc.send_signal(signal.SIGINT)
        bot.finish()
        assert fake.rooms == {}  # deleted on the way out
    room = fake.calls("POST", "/v1/rooms")[0]
    assert room.headers["Authorization"] == f"Bearer {fake.api_key}"
    assert room.body["privacy"] == "private"
    props = room.body["properties"]
    assert props["max_participants"] == 3 and props["eject_at_room_exp"] is True
    assert started + 600 - 5 <= props["exp"] <= time.time() + 600 + 5
    assert bot_token["is_owner"] is True and bot_token["exp"] == props["exp"]
    assert user_token["is_owner"] is False and started + 120 - 5 <= user_token["exp"] <= time.time() + 120 + 5
    assert fake.calls("DELETE", f"/v1/rooms/{name}")


def test_daily_wrong_key_is_a_clear_error():
    with FakeDaily() as fake:
        bot = Bot(["-t", "daily"], _env(DAILY_API_KEY="bad-daily-key", DAILY_API_URL=fake.base_url))
        assert bot.finish() == 2
    assert "Daily rejected the API key (401 authentication-error; the API key is not valid): check DAILY_API_KEY" in bot.output
    assert "bad-daily-key" not in bot.output


# --------------------------------------------------------------------------- personas from Tavus

REMOTE = {
    "persona_name": "Remote Rita",
    "system_prompt": "You are Rita, a travel agent.",
    "objectives_id": "o1",
    "guardrail_ids": ["g1"],
    "layers": {"llm": {"model": "tavus-gpt-oss"}},
    "created_at": "2025-01-01T00:00:00Z",
}


def _remote_fake() -> FakeTavus:
    return FakeTavus(
        personas={"p-remote": REMOTE},
        objectives={"o1": {"data": [{"objective_name": "ask_destination",
                                     "objective_prompt": "Ask where they want to go"}]}},
        guardrails={"g1": {"guardrail_name": "no_prices", "guardrail_prompt": "Never quote prices"}},
    )


def test_persona_fetched_from_tavus_runs_on_our_pipeline():
    with _remote_fake() as fake:
        bot = Bot(["--persona", "p-remote", "--check"],
                  _env(TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url))
        assert bot.finish() == 0, bot.output
    assert "Persona: Remote Rita (Tavus persona p-remote)" in bot.output
    assert "Objectives: 1, guardrails: 1 (from Tavus)" in bot.output
    assert [r.path for r in fake.requests] == [
        "/v2/personas/p-remote", "/v2/objectives/o1", "/v2/guardrails/g1"]
    assert fake.requests[0].headers["x-api-key"] == fake.api_key


def test_fetched_objectives_and_guardrails_reach_the_conversation(monkeypatch):
    import argparse

    from config.prompt import compose_system_prompt
    from session import launch

    with _remote_fake() as fake:
        monkeypatch.setenv("TAVUS_API_KEY", fake.api_key)
        monkeypatch.setenv("TAVUS_API_URL", fake.base_url)
        launch.clear_fetched()
        app = launch.load_app(argparse.Namespace(persona="p-remote", conversation=None))
    prompt = compose_system_prompt(app.persona, app.conversation)
    assert prompt.startswith("You are Rita, a travel agent.")
    # Objectives are the objectives flow's (one at a time), not pasted into the prompt.
    assert "ask_destination" not in prompt
    assert [o.objective_name for o in app.policies.objectives] == ["ask_destination"]
    assert "- Never quote prices" in prompt
    assert [g.guardrail_name for g in app.policies.guardrails] == ["no_prices"]


@pytest.mark.parametrize(
    ("persona", "fail", "expected"),
    [
        ("p-missing", (), "Tavus: persona 'p-missing': not found (404, Persona not found)"),
        ("p-remote", (429, 429, 429, 429), "Tavus: persona 'p-remote' was rate limited (429) 4 times"),
        ("p-remote", (502, 502, 502, 502), "failed with a server error (502 scripted failure 502) after 4 attempts"),
    ],
)
def test_persona_fetch_errors(persona, fail, expected):
    with _remote_fake() as fake:
        fake.fail_next("GET /v2/personas/{id}", *fail)
        bot = Bot(["--persona", persona, "--check"],
                  _env(TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url))
        assert bot.finish() == 2
    assert expected in bot.output
    assert "Traceback" not in bot.output


def test_persona_fetch_retries_through_a_transient_error():
    with _remote_fake() as fake:
        fake.fail_next("GET /v2/personas/{id}", 503, 429)
        bot = Bot(["--persona", "p-remote", "--check"],
                  _env(TAVUS_API_KEY=fake.api_key, TAVUS_API_URL=fake.base_url))
        assert bot.finish() == 0, bot.output
    assert len(fake.calls("GET", "/v2/personas/p-remote")) == 3
    assert "retry 1/3" in bot.output


def test_persona_id_without_a_key_is_a_clear_error():
    bot = Bot(["--persona", "p-remote", "--check"], _env())
    assert bot.finish() == 2
    assert "error: p-remote: no such file" in bot.output
    assert "no such file; to fetch it as a Tavus persona id set TAVUS_API_KEY" in bot.output
