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


# --------------------------------------------------------------------------- files and paths


def _just_one_line(result: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 2, no traceback, and stderr is exactly the one ``error:`` line containing ``expected``."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], \
        result.stderr[-2000:]


def test_persona_from_a_device_is_refused_unread():
    _just_one_line(run_bot("--check", "--persona", "/dev/zero", timeout=60),
                   "/dev/zero: is a device, not a regular file")


def test_persona_from_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "persona.json"
    os.mkfifo(fifo)  # nobody ever writes to it: reading it would block forever
    _just_one_line(run_bot("--check", "--persona", str(fifo), timeout=60),
                   f"{fifo}: is a named pipe (FIFO), not a regular file")


def test_conversation_from_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "conversation.json"
    os.mkfifo(fifo)
    _just_one_line(run_bot("--check", "--conversation", str(fifo), timeout=60),
                   f"{fifo}: is a named pipe (FIFO), not a regular file")


def test_persona_that_is_a_directory_or_missing(tmp_path):
    _just_one_line(run_bot("--check", "--persona", str(tmp_path)), f"{tmp_path}: is a directory")
    missing = tmp_path / "nope.json"
    _just_one_line(run_bot("--check", "--persona", str(missing)), f"{missing}: file not found")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; "
                    "test_config.test_an_unreadable_file_is_one_line covers the error")
def test_persona_without_read_permission(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"system_prompt": "x"}')
    path.chmod(0)
    _just_one_line(run_bot("--check", "--persona", str(path)),
                   f"{path}: cannot read it: permission denied")


def test_persona_too_large_or_not_utf8(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"system_prompt": "x" * (1024 * 1024)}))
    _just_one_line(run_bot("--check", "--persona", str(big)), "is larger than 1 MiB")
    utf16 = tmp_path / "utf16.json"
    utf16.write_text(json.dumps({"system_prompt": "x"}), encoding="utf-16")
    _just_one_line(run_bot("--check", "--persona", str(utf16)), "is UTF-16 encoded; save it as UTF-8")


def test_deeply_nested_persona_and_conversation(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    _just_one_line(run_bot("--check", "--persona", str(deep)), f"{deep}: is nested too deeply")
    _just_one_line(run_bot("--check", "--conversation", str(deep)), f"{deep}: is nested too deeply")


def test_lone_surrogate_in_persona_name_is_refused_at_load(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"persona_name": "\\ud800", "system_prompt": "x"}')
    for mode in (["--check"], ["--text", "--no-greeting"]):
        result = run_bot(*mode, "--persona", str(path), stdin="Hi\n",
                         env={"PERSONA_DATA_DIR": str(tmp_path / "data")})
        assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [
            f"{path}: 1 problem:",
            "  - persona_name: has a lone surrogate escape (\\ud800 without its pair), which is not text",
        ]


@pytest.mark.parametrize("mode", [
    ["--list-conversations"], ["--show-conversation", "c-nope"], ["--text", "--no-greeting"],
    ["--audio-in", "QUESTION", "--audio-out", "REPLY"], ["--port", "0"],
], ids=["list", "show", "text", "one-shot", "server"])
def test_data_dir_that_is_a_file_is_one_line_in_every_mode(tmp_path, mode):
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    question = tmp_path / "q.wav"
    if "QUESTION" in mode:
        from tests.speech import write_question_wav

        write_question_wav(question, "Hello.", lead_secs=0.2, tail_secs=0.2)
    args = [{"QUESTION": str(question), "REPLY": str(tmp_path / "r.wav")}.get(a, a) for a in mode]
    result = run_bot(*args, stdin="Hi\n", env={"PERSONA_DATA_DIR": str(a_file)})
    _one_line_error(result, f"PERSONA_DATA_DIR {a_file}: is a file, not a directory")
    assert not (tmp_path / "r.wav").exists()


def test_data_dir_unwritable_or_under_a_file_is_one_line(tmp_path):
    from tests.conftest import unwritable_dir

    ro = unwritable_dir(tmp_path)
    _just_one_line(run_bot("--list-conversations", env={"PERSONA_DATA_DIR": str(ro)}),
                   f"PERSONA_DATA_DIR {ro}: is not writable")
    under = tmp_path / "afile" / "data"
    under.parent.write_text("x")
    _just_one_line(run_bot("--text", "--no-greeting", stdin="Hi\n",
                           env={"PERSONA_DATA_DIR": str(under)}),
                   f"PERSONA_DATA_DIR {under}: cannot be created: {under.parent} is a file")


def test_check_needs_no_data_dir_and_warns_about_a_bad_one(tmp_path):
    missing = tmp_path / "not" / "yet"
    result = run_bot("--check", env={"PERSONA_DATA_DIR": str(missing)})
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "not").exists()  # --check creates nothing
    assert "PERSONA_DATA_DIR" not in result.stdout
    a_file = tmp_path / "data"
    a_file.write_text("x")
    result = run_bot("--check", env={"PERSONA_DATA_DIR": str(a_file)})
    assert result.returncode == 0, result.stderr
    assert (f"  - PERSONA_DATA_DIR {a_file}: is a file, not a directory (conversations.db is kept "
            "in it); every mode but --check refuses to start") in result.stdout


def test_audio_in_that_is_not_a_regular_file_is_one_line(tmp_path):
    fifo = tmp_path / "q.wav"
    os.mkfifo(fifo)  # wave.open would wait for a writer forever
    data = {"PERSONA_DATA_DIR": str(tmp_path / "data")}
    for audio_in, problem in ((fifo, "is a named pipe (FIFO), not a regular file"),
                              (tmp_path, "is a directory, not a file")):
        result = run_bot("--audio-in", str(audio_in), "--audio-out", str(tmp_path / "o.wav"),
                         env=data, timeout=60)
        _one_line_error(result, f"{audio_in}: {problem}")


def test_outputs_are_checked_before_the_conversation(tmp_path):
    from tests.speech import write_question_wav

    question = tmp_path / "q.wav"
    write_question_wav(question, "Hello.", lead_secs=0.2, tail_secs=0.2)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    data = {"PERSONA_DATA_DIR": str(tmp_path / "data")}
    _just_one_line(run_bot("--audio-in", str(question), "--audio-out", str(tmp_path), env=data),
                   f"--audio-out {tmp_path}: is a directory, not a file")
    _just_one_line(run_bot("--audio-in", str(question), "--audio-out", str(tmp_path / "o.wav"),
                           "--transcript", str(a_file / "t.json"), env=data),
                   f"--transcript {a_file / 't.json'}: cannot be created: {a_file} is a file")
    _just_one_line(run_bot("--text", "--no-greeting", "--transcript", str(a_file / "t.json"),
                           stdin="Hi\n", env=data),
                   f"--transcript {a_file / 't.json'}: cannot be created: {a_file} is a file")
    assert not (tmp_path / "data").exists()  # refused before a conversation was recorded


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_host_beyond_loopback_needs_a_token_or_insecure_before_anything_starts(host):
    result = run_bot("--host", host, "--port", "9", timeout=60)  # port 9: nothing binds
    _just_one_line(result, f"--host {host} is reachable from other machines: set ACCESS_TOKEN")
    assert "--insecure" in result.stderr
    assert "Loading" not in result.stdout + result.stderr  # no model was warmed


def test_exposure_check_accepts_loopback_a_token_or_insecure(monkeypatch):
    import bot
    from session.errors import ModeError

    for host in ("localhost", "127.0.0.1", "::1"):
        assert bot.check_exposure(["--host", host], insecure=False) is None
    assert bot.check_exposure([], insecure=False) is None
    with pytest.raises(ModeError, match="ACCESS_TOKEN"):
        bot.check_exposure(["--host", "0.0.0.0"], insecure=False)
    assert bot.check_exposure(["--host", "0.0.0.0"], insecure=True) is None
    monkeypatch.setenv("ACCESS_TOKEN", "tok-123")
    assert bot.check_exposure(["--host=0.0.0.0"], insecure=False) == "tok-123"


def test_a_bare_persona_file_is_an_error_not_ignored(tmp_path):
    persona = tmp_path / "persona.json"
    persona.write_text(json.dumps({"persona_name": "Mine", "system_prompt": "x"}))
    result = run_bot(str(persona), "--check")
    assert result.returncode == 2
    assert f"--persona {persona}" in result.stderr and "Traceback" not in result.stderr
