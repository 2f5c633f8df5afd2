"""``bot.py`` as a user runs it: exit codes, clear errors, no tracebacks, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PERSONAS, ROOT

BOT = str(ROOT / "bot.py")


def run_bot(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base.update({"PERSONA_DOTENV": "0", "LOG_LEVEL": "INFO"})
    base.update(env or {})
    return subprocess.run(
        [sys.executable, BOT, *args], capture_output=True, text=True, env=base, cwd=ROOT,
        input=stdin, timeout=timeout,
    )


def test_check_default_persona():
    result = run_bot("--check")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Persona: Ava" in out
    assert "STT -> whisper" in out and "LLM -> llama-local" in out and "TTS -> piper" in out
    assert "TURN -> sparrow-1" in out
    effective = json.loads(out[out.index("{"): out.index("\nEngines:")])
    flow = effective["persona"]["layers"]["conversational_flow"]
    assert flow["turn_commitment"] == "medium"  # defaults applied


def test_check_stock_persona_with_local_flag():
    result = run_bot("--check", "--local", "--persona", str(PERSONAS / "customer_service_agent.json"))
    assert result.returncode == 0, result.stderr
    assert "--local: embedded Piper voice" in result.stdout
    assert "Migrated legacy fields:" in result.stdout


def test_explicit_engine_without_key_exits_2_naming_the_variable():
    result = run_bot("--check", "--persona", str(PERSONAS / "customer_service_agent.json"))
    assert result.returncode == 2
    assert "CARTESIA_API_KEY" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_persona_lists_problems_without_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pipeline_mode": "fast", "layers": {"conversational_flow": {
        "turn_taking_patience": "fast"}, "tts": {"api_key": 12345678}}}))
    result = run_bot("--check", "--persona", str(bad))
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    assert f"{bad}: 4 problems:" in err
    for line in ("  - pipeline_mode: must be one of 'full' or 'echo' (got \"fast\")",
                 "  - layers.conversational_flow.turn_taking_patience: must be one of",
                 "  - system_prompt: is required",
                 "  - layers.tts.api_key: must be a valid string (got \"***\")"):
        assert line in err, err
    assert "12345678" not in err


def test_secrets_never_printed(tmp_path):
    persona = tmp_path / "p.json"
    persona.write_text(json.dumps({"system_prompt": "x", "layers": {
        "llm": {"model": "gpt-4.1", "api_key": "sk-persona-SECRET-1",
                "headers": {"Authorization": "Bearer hdr-SECRET-2"}},
        "tts": {"tts_engine": "elevenlabs"}}}))
    result = run_bot("--check", "--persona", str(persona),
                     env={"ELEVENLABS_API_KEY": "el-env-SECRET-3", "OPENAI_API_KEY": "sk-env-SECRET-4"})
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    for secret in ("sk-persona-SECRET-1", "hdr-SECRET-2", "el-env-SECRET-3", "sk-env-SECRET-4"):
        assert secret not in both
    assert '"api_key": "***"' in result.stdout


def test_check_hides_extra_body_auth_url_credentials_and_callback_tokens(tmp_path):
    persona = tmp_path / "p.json"
    persona.write_text(json.dumps({"persona_name": "Ava", "system_prompt": "x", "layers": {"llm": {
        "model": "m", "api_key": "sk-test-SECRET-5",
        "base_url": "https://proxy:urlpw-SECRET-6@llm.example/v1?api-key=qk-SECRET-7",
        "extra_body": {"max_tokens": 50, "auth": {"token": "xb-SECRET-8"},
                       "metadata": {"note": "Bearer nest-SECRET-9"}}}}}))
    conversation = tmp_path / "c.json"
    conversation.write_text(json.dumps({"callback_url": "https://hooks.example/cb?token=cbtok-SECRET-10"}))
    result = run_bot("--check", "--persona", str(persona), "--conversation", str(conversation))
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    for secret in ("sk-test-SECRET-5", "urlpw-SECRET-6", "qk-SECRET-7", "xb-SECRET-8",
                   "nest-SECRET-9", "cbtok-SECRET-10"):
        assert secret not in both, both
    out = result.stdout
    effective = json.loads(out[out.index("{"): out.index("\nEngines:")])
    llm = effective["persona"]["layers"]["llm"]
    assert llm["base_url"] == "https://***@llm.example/v1?api-key=***"
    assert llm["extra_body"] == {"max_tokens": 50, "auth": "***", "metadata": {"note": "***"}}
    assert effective["conversation"]["callback_url"] == "https://hooks.example/cb?token=***"
    assert "openai-compatible" in out and "llm.example/v1" in out  # the engine's reason, redacted


def test_text_mode_conversation():
    result = run_bot("--text", "--no-greeting", stdin="Hello, who are you?\n")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("Ava: ")]
    assert len(lines) == 1 and len(lines[0]) > len("Ava: ") + 2


def test_text_mode_writes_transcript(tmp_path):
    out = tmp_path / "t.json"
    result = run_bot("--text", "--no-greeting", "--transcript", str(out), stdin="Hi there.\n")
    assert result.returncode == 0, result.stderr[-2000:]
    transcript = json.loads(out.read_text())
    assert [e["role"] for e in transcript] == ["user", "assistant"]
    assert transcript[0]["content"] == "Hi there."


def test_one_shot_missing_file_and_missing_output(tmp_path):
    result = run_bot("--audio-in", str(tmp_path / "nope.wav"), "--audio-out", str(tmp_path / "o.wav"))
    assert result.returncode == 2 and "file not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_bot("--audio-in", str(tmp_path / "nope.wav"))
    assert result.returncode == 2 and "--audio-out" in result.stderr


@pytest.mark.parametrize("bad", ["[1, 2]", "{\"system_prompt\": \"x\",}"])
def test_unreadable_persona_json(tmp_path, bad):
    path = tmp_path / "p.json"
    path.write_text(bad)
    result = run_bot("--check", "--persona", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_daily_without_key_fails_fast():
    result = run_bot("-t", "daily")
    assert result.returncode == 2
    assert "DAILY_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_text_mode_reports_an_unreachable_llm(tmp_path):
    persona = tmp_path / "p.json"
    persona.write_text(json.dumps({"persona_name": "Ava", "system_prompt": "x", "layers": {"llm": {
        "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-unreachable-SECRET"}}}))
    result = run_bot("--text", "--no-greeting", "--persona", str(persona), stdin="Hello?\n")
    assert result.returncode == 0
    assert "(Ava could not answer:" in result.stdout
    assert "sk-unreachable-SECRET" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- the error tree


def _one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]


def test_missing_local_model_is_one_line_and_exit_2(tmp_path):
    wav = tmp_path / "q.wav"
    from tests.speech import write_question_wav

    write_question_wav(wav, "Hello.", lead_secs=0.2, tail_secs=0.2)
    result = run_bot("--audio-in", str(wav), "--audio-out", str(tmp_path / "o.wav"),
                     env={"LOCAL_WHISPER_MODEL": str(tmp_path / "no-such-model"),
                          "PERSONA_DATA_DIR": str(tmp_path / "data")})
    _one_line_error(result, "LOCAL_WHISPER_MODEL")
    result = run_bot("--text", "--no-greeting", stdin="Hi\n",
                     env={"LOCAL_LLM_GGUF": str(tmp_path / "none.gguf"),
                          "PERSONA_DATA_DIR": str(tmp_path / "data")})
    _one_line_error(result, "LOCAL_LLM_GGUF")


def test_llm_server_that_will_not_start_is_one_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF model" * 100)
    for args in (["--text", "--no-greeting"], ["--port", "0"]):  # a mode, and the runner's start-up
        result = run_bot(*args, stdin="Hi\n", timeout=180,
                         env={"LOCAL_LLM_GGUF": str(broken), "PERSONA_DATA_DIR": str(tmp_path / "data")})
        _one_line_error(result, "LLM server")


def test_help_lists_our_flags_first_and_starts_nothing():
    result = run_bot("--help", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: python bot.py [--persona FILE|ID]")
    ours, _, theirs = out.partition("Pipecat development runner options:")
    assert "--text" in ours and "--debug" in ours and "--renderer" in ours
    assert "--transport" in theirs and "--port" in theirs  # the runner's, after ours
    assert "Starting local LLM server" not in result.stderr  # nothing was started
    assert "Pipecat" not in result.stderr  # not even its import banner at INFO


def test_quieted_messages_are_debug_and_others_keep_their_level():
    from loguru import logger

    from config import logging as our_logging

    def level_after(name: str, level: str, message: str) -> str:
        lv = logger.level(level)
        record = {"name": name, "message": message, "level": _Level(lv.name, lv.no, lv.icon)}
        our_logging._patch(record)
        return record["level"].name

    assert level_after("pipecat.services.stt_service", "WARNING",
                       "LocalWhisperSTTService#0: ttfs_p99_latency not set, using default 1.0s") == "DEBUG"
    assert level_after("pipecat.services.tts_service", "WARNING",
                       "PiperTTSService#0 audio context abc completed with no audio (1 in a row)") == "DEBUG"
    assert level_after("pipecat.services.tts_service", "WARNING",
                       "PiperTTSService#0 audio context abc completed with no audio (2 in a row)") == "WARNING"
    assert level_after("pipecat.services.stt_service", "ERROR", "something else broke") == "ERROR"
    assert level_after("session.owner", "WARNING",
                       "ttfs_p99_latency not set, using default") == "WARNING"  # not Pipecat's
    assert all(why for _, _, why in our_logging.QUIETED)  # each one says why


class _Level:
    def __init__(self, name, no, icon):
        self.name, self.no, self.icon = name, no, icon
