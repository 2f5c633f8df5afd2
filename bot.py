#!/usr/bin/env python3
"""A Tavus-style persona as a live Pipecat agent.

Run it:

    python bot.py                          # local page at http://localhost:7860 (offline)
    python bot.py -t daily                 # a Daily room (needs DAILY_API_KEY)
    python bot.py --check --persona FILE   # effective config and engine choices
    python bot.py --text                   # a terminal conversation
    python bot.py --audio-in q.wav --audio-out reply.wav --transcript out.json

The development runner calls :func:`bot` once per session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from dotenv import load_dotenv
from loguru import logger

from config.app import DEFAULT_PERSONA, AppConfig
from config.errors import ConfigError
from config.logging import register_secrets, setup_logging
from config.redact import redact_text
from services.selection import EngineSelectionError

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Our own flags (the runner adds its ``-t``, ``--host``, ``--port``, ... to the same parser)."""
    group = parser.add_argument_group("persona")
    group.add_argument(
        "--persona", default=str(DEFAULT_PERSONA), metavar="FILE",
        help="persona JSON file in the Tavus schema (default: personas/default.json)",
    )
    group.add_argument(
        "--conversation", default=None, metavar="FILE",
        help="conversation request JSON (Tavus create-conversation fields)",
    )
    group.add_argument(
        "--local", action="store_true",
        help="run every layer on the embedded models, ignoring cloud engines and keys",
    )
    group.add_argument("--no-greeting", action="store_true", help="do not greet on join")
    modes = parser.add_argument_group("headless modes")
    modes.add_argument("--check", action="store_true", help="print the effective configuration and engines, then exit")
    modes.add_argument("--text", action="store_true", help="a terminal conversation (no STT/TTS)")
    modes.add_argument("--audio-in", metavar="WAV", help="one-shot: the spoken question")
    modes.add_argument("--audio-out", metavar="WAV", help="one-shot: where to write the reply audio")
    modes.add_argument("--transcript", metavar="JSON", help="one-shot / text: write the transcript here")
    return parser


def _fail(message: str, app: AppConfig | None = None) -> int:
    secrets = app.secrets() if app else []
    print(redact_text(message, secrets), file=sys.stderr)
    return EXIT_USAGE


def load_app(args: argparse.Namespace) -> AppConfig:
    """Load persona, conversation and settings; print warnings and notes."""
    app = AppConfig.load(args.persona, args.conversation)
    register_secrets(app.secrets())
    for warning in app.warnings:
        logger.warning(warning)
    for note in app.notes:
        logger.info(note)
    return app


def render_check(app: AppConfig, force_local: bool) -> tuple[str, bool]:
    """The ``--check`` report: effective config (redacted), then each layer's engine and why.

    Returns the report and whether the persona can start.
    """
    from pipeline.session import plan_for
    from pipeline.turn_taking import turn_plan
    from services.voice_isolation import voice_isolation

    lines = [f"Persona: {app.persona.display_name} ({app.persona_source})", ""]
    lines.append("Effective configuration (secrets redacted):")
    lines.append(json.dumps(app.effective(), indent=2, ensure_ascii=False))
    lines.append("")
    lines.append("Engines:")
    ok = True
    try:
        plan = plan_for(app, force_local)
        lines += [f"  {choice.describe()}" for choice in plan.choices()]
    except EngineSelectionError as exc:
        ok = False
        lines += [f"  cannot start: {line}" for line in str(exc).splitlines()]
    flow = app.persona.layers.conversational_flow
    lines.append(f"  TURN -> {turn_plan(flow).describe()}")
    lines.append(
        "  FLOW -> interruptibility "
        f"{(flow.replica_interruptibility if flow else None) or 'medium'}, "
        f"wake phrase {(flow.wake_phrase if flow else None) or 'none'}, "
        f"idle engagement {(flow.idle_engagement if flow else None) or 'off'}, "
        f"voice isolation {voice_isolation(app.persona)}"
        f"{' (RNNoise)' if voice_isolation(app.persona) == 'near' else ''}"
    )
    lines.append(f"  LANGUAGE -> {app.conversation.properties.language}")
    if app.warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in app.warnings]
    if app.notes:
        lines += ["", "Migrated legacy fields:"] + [f"  - {n}" for n in app.notes]
    return "\n".join(lines), ok


def run_headless(args: argparse.Namespace) -> int:
    """``--check``, ``--text`` and one-shot modes. Returns the exit code."""
    from pipeline.file_transport import AudioFileError
    from pipeline.session import ModeError, OneShotError, run_oneshot, run_text

    app: AppConfig | None = None
    try:
        app = load_app(args)
        if args.check:
            report, ok = render_check(app, args.local)
            print(redact_text(report, app.secrets()))
            return 0 if ok else EXIT_USAGE
        if args.text:
            transcript = asyncio.run(run_text(app, force_local=args.local, greet=not args.no_greeting))
            if args.transcript:
                Path(args.transcript).write_text(json.dumps(transcript.to_list(), indent=2) + "\n")
            return 0
        if not (args.audio_in and args.audio_out):
            return _fail("one-shot mode needs both --audio-in WAV and --audio-out WAV")
        result = asyncio.run(
            run_oneshot(app, args.audio_in, args.audio_out, args.transcript, force_local=args.local)
        )
        print(f"Heard: {' '.join(result['heard'])}")
        print(f"{result['persona']}: {' '.join(result['said'])}")
        print(f"Voice-to-voice: {result['timing']['voice_to_voice_secs']}s; reply in {args.audio_out}")
        return 0
    except ConfigError as exc:
        return _fail(exc.render(), app)
    except (EngineSelectionError, AudioFileError, OneShotError, ModeError) as exc:
        return _fail(f"error: {exc}", app)
    except KeyboardInterrupt:
        return 130


async def bot(runner_args):
    """Pipecat development runner entry point: one conversation per session."""
    from pipeline.session import run_runner_session

    args = getattr(runner_args, "cli_args", None) or argparse.Namespace(
        persona=str(DEFAULT_PERSONA), conversation=None, local=False, no_greeting=False
    )
    app = load_app(args)
    await run_runner_session(runner_args, app, force_local=args.local, greet=not args.no_greeting)


def _prepare_server(args: argparse.Namespace, *, daily: bool = False) -> int:
    """Validate config and warm the embedded models before the server starts (fail fast)."""
    from pipeline.session import plan_for
    from services.llm import local_llm_server

    app: AppConfig | None = None
    try:
        app = load_app(args)
        if daily and not app.settings.daily_api_key:
            return _fail(
                "error: -t daily needs DAILY_API_KEY (the runner creates a Daily room with it); "
                "set it in the environment or .env, or run without -t daily for the local page"
            )
        plan = plan_for(app, args.local)
        for choice in plan.choices():
            logger.info(choice.describe())
        if plan.llm.engine == "llama-local":
            local_llm_server(app.settings)  # starts now; sessions wait for its health check
        if plan.stt.engine == "whisper":
            from services.local.models import whisper_model_dir
            from services.stt import load_whisper_model

            load_whisper_model(whisper_model_dir(app.settings.local_whisper_model))
    except ConfigError as exc:
        return _fail(exc.render(), app)
    except EngineSelectionError as exc:
        return _fail(f"error: {exc}", app)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags; run a headless mode or the development runner."""
    if os.environ.get("PERSONA_DOTENV", "1") != "0":
        load_dotenv()
    else:  # the test suite: no .env, not even the one Pipecat's runner loads at import
        import dotenv

        dotenv.load_dotenv = lambda *args, **kwargs: False
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    ours = add_arguments(argparse.ArgumentParser(add_help=False))
    known, _ = ours.parse_known_args(argv)
    if known.check or known.text or known.audio_in or known.audio_out:
        return run_headless(known)

    runner_flags = argparse.ArgumentParser(add_help=False)
    runner_flags.add_argument("-t", "--transport")
    runner_flags.add_argument("-d", "--direct", action="store_true")
    transport, _ = runner_flags.parse_known_args(argv)
    code = _prepare_server(known, daily=transport.transport == "daily" or transport.direct)
    if code:
        return code
    from pipecat.runner.run import main as runner_main

    from web import mount_local_page

    mount_local_page()
    parser = add_arguments(argparse.ArgumentParser(description="Persona-driven Pipecat agent"))
    sys.argv = [sys.argv[0], *argv]
    runner_main(parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
