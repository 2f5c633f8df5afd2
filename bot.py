#!/usr/bin/env python3
"""A Tavus-style persona as a live Pipecat agent.

Run it:

    python bot.py                          # local page at http://localhost:7860 (offline)
    python bot.py -t daily                 # a new Daily room (needs DAILY_API_KEY)
    python bot.py --renderer transport     # the bot joins the Tavus room; open its URL
    python bot.py --persona p123abc        # a persona fetched from Tavus (TAVUS_API_KEY)
    python bot.py --check --persona FILE   # effective config and engine choices
    python bot.py --text                   # a terminal conversation
    python bot.py --audio-in q.wav --audio-out reply.wav --transcript out.json

The development runner calls :func:`bot` once per session (local page);
``-t daily`` and ``--renderer transport`` run one conversation and exit.
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
from services.rest import ApiError
from services.selection import EngineSelectionError
from services.tavus import RENDERERS, TavusError

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Our own flags (the runner adds its ``-t``, ``--host``, ``--port``, ... to the same parser)."""
    group = parser.add_argument_group("persona")
    group.add_argument(
        "--persona", default=str(DEFAULT_PERSONA), metavar="FILE|ID",
        help="persona JSON file in the Tavus schema, or a Tavus persona_id to fetch "
        "(needs TAVUS_API_KEY) (default: personas/default.json)",
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
    group.add_argument(
        "--renderer", default="auto", choices=RENDERERS,
        help="the replica: auto (Tavus video when TAVUS_API_KEY and a replica are known), "
        "video (TavusVideoService), transport (TavusTransport: join the Tavus room's URL), "
        "none (audio only)",
    )
    recs = parser.add_argument_group("conversation records (PERSONA_DATA_DIR/conversations.db)")
    recs.add_argument("--list-conversations", action="store_true",
                      help="list conversations, newest first, then exit")
    recs.add_argument("--status", choices=["active", "ended"], help="with --list-conversations")
    recs.add_argument("--limit", type=int, default=20, help="with --list-conversations (default 20)")
    recs.add_argument("--show-conversation", metavar="ID",
                      help="one conversation with its transcript, events and callbacks, then exit")
    recs.add_argument("--json", action="store_true", help="JSON output for the two above")
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


# Personas, objectives and guardrails fetched from Tavus, once per process.
_FETCHED: dict[str, tuple] = {}


def _run_async(coro):
    """Run ``coro`` to completion from sync code, even when an event loop is running here."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def load_app(args: argparse.Namespace) -> AppConfig:
    """Load persona (a file, or a Tavus persona id), conversation and settings.

    Prints warnings and notes. Objectives and guardrails referenced by id are
    fetched from Tavus when TAVUS_API_KEY is set.
    """
    from config.errors import Problem
    from config.settings import Settings
    from services.tavus_personas import (
        fetch_persona,
        fetch_policies_by_ids,
        looks_like_persona_id,
        policy_prompt,
    )

    settings = Settings.from_env()
    register_secrets(settings.secrets())
    persona_arg = str(args.persona)
    policies: tuple[list, list, list[str]] | None = None
    if looks_like_persona_id(persona_arg):
        if not settings.tavus_api_key:
            raise ConfigError(persona_arg, [Problem(
                path="", message="no such file; to fetch it as a Tavus persona id set TAVUS_API_KEY"
            )])
        if persona_arg not in _FETCHED:
            _FETCHED[persona_arg] = _run_async(
                fetch_persona(settings.tavus_api_key, settings.tavus_api_url, persona_arg)
            )
        data, objectives, guardrails, fetch_warnings = _FETCHED[persona_arg]
        app = AppConfig.load(
            None, args.conversation, persona_data=data, persona_source=f"Tavus persona {persona_arg}"
        )
        logger.info(f"Fetched persona {persona_arg} from Tavus ({app.persona.display_name})")
        policies = (objectives, guardrails, fetch_warnings)
    else:
        app = AppConfig.load(persona_arg, args.conversation)
        persona = app.persona
        if persona.objectives_id or persona.guardrail_ids or persona.guardrails_id:
            if settings.tavus_api_key:
                key = f"policies:{persona.objectives_id}:{persona.guardrail_ids}:{persona.guardrails_id}"
                if key not in _FETCHED:
                    _FETCHED[key] = _run_async(fetch_policies_by_ids(
                        settings.tavus_api_key, settings.tavus_api_url, persona.model_dump()
                    ))
                policies = _FETCHED[key]
            else:
                app.warnings.append(
                    f"{persona_arg}: objectives_id/guardrail_ids name objects stored on Tavus; "
                    "set TAVUS_API_KEY to fetch them (ignored now)"
                )
    if policies:
        objectives, guardrails, fetch_warnings = policies
        app.persona.set_policy_prompt(policy_prompt(objectives, guardrails))
        app.warnings += fetch_warnings
        if objectives or guardrails:
            logger.info(f"Objectives: {len(objectives)}, guardrails: {len(guardrails)} (from Tavus)")
    register_secrets(app.secrets())
    for warning in app.warnings:
        logger.warning(warning)
    for note in app.notes:
        logger.info(note)
    return app


def render_check(app: AppConfig, force_local: bool, renderer: str = "auto") -> tuple[str, bool]:
    """The ``--check`` report: effective config (redacted), then each layer's engine and why.

    Returns the report and whether the persona can start.
    """
    from pipeline.session import plan_for, renderer_plan_for
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
    try:
        lines.append(f"  {renderer_plan_for(app, renderer).describe()}")
    except TavusError as exc:
        ok = False
        lines.append(f"  cannot start: {exc}")
    if app.warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in app.warnings]
    if app.notes:
        lines += ["", "Migrated legacy fields:"] + [f"  - {n}" for n in app.notes]
    return "\n".join(lines), ok


def run_records(args: argparse.Namespace) -> int:
    """``--list-conversations`` / ``--show-conversation ID``."""
    from config.settings import Settings
    from pipeline.lifecycle import records
    from pipeline.records import render_conversation, render_list

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(exc.render())
    store, callbacks = records(settings)  # also closes what a dead process left active
    if args.show_conversation:
        record = store._run(store.verbose, args.show_conversation).result(30)
        if record is None:
            return _fail(f"error: no conversation {args.show_conversation!r} in {store.path}")
        print(json.dumps(record, indent=2, ensure_ascii=False) if args.json
              else render_conversation(record))
    else:
        listing = store._run(lambda: store.list(status=args.status, limit=args.limit)).result(30)
        print(json.dumps(listing, indent=2, ensure_ascii=False) if args.json
              else render_list(listing, store.path))
    callbacks.drain(timeout=settings.callback_timeout_secs)
    return 0


def _drain_callbacks(app: AppConfig | None) -> None:
    """Give queued callbacks a moment to go out before the process exits (the rest: next start)."""
    from pipeline.lifecycle import drain_callbacks

    if app is not None:
        drain_callbacks(app.settings, app.settings.callback_timeout_secs)


def run_headless(args: argparse.Namespace) -> int:
    """``--check``, ``--text`` and one-shot modes. Returns the exit code."""
    from pipeline.file_transport import AudioFileError
    from pipeline.session import ModeError, OneShotError, run_oneshot, run_text

    app: AppConfig | None = None
    try:
        app = load_app(args)
        if args.check:
            report, ok = render_check(app, args.local, args.renderer)
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
    except (EngineSelectionError, AudioFileError, OneShotError, ModeError, ApiError, TavusError) as exc:
        return _fail(f"error: {exc}", app)
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.check:
            _drain_callbacks(app)


def run_conversation(args: argparse.Namespace, daily: bool) -> int:
    """``-t daily`` (a new Daily room) or ``--renderer transport`` (the Tavus room): one conversation."""
    from pipeline.session import (
        ModeError,
        SessionError,
        run_daily_session,
        run_tavus_transport_session,
    )

    app: AppConfig | None = None
    try:
        app = load_app(args)
        if daily and args.renderer == "transport":
            return _fail("error: -t daily and --renderer transport exclude each other: with "
                         "TavusTransport the user joins the room Tavus creates")
        code = _prepare(app, args, daily=daily)
        if code:
            return code

        def announce(line: str) -> None:
            print(f"\n  {line}\n", flush=True)
            logger.info(line)

        greet = not args.no_greeting
        if daily:
            asyncio.run(run_daily_session(app, force_local=args.local, greet=greet,
                                          renderer=args.renderer, announce=announce))
        else:
            asyncio.run(run_tavus_transport_session(app, force_local=args.local, greet=greet,
                                                    announce=announce))
        return 0
    except ConfigError as exc:
        return _fail(exc.render(), app)
    except (EngineSelectionError, ModeError, ApiError, TavusError, SessionError) as exc:
        return _fail(f"error: {exc}", app)
    except KeyboardInterrupt:
        return 130
    finally:
        _drain_callbacks(app)


async def bot(runner_args):
    """Pipecat development runner entry point: one conversation per session."""
    from pipeline.session import run_runner_session

    args = getattr(runner_args, "cli_args", None) or argparse.Namespace(
        persona=str(DEFAULT_PERSONA), conversation=None, local=False, no_greeting=False,
        renderer="auto",
    )
    app = load_app(args)
    await run_runner_session(runner_args, app, force_local=args.local, greet=not args.no_greeting,
                             renderer=getattr(args, "renderer", "auto"))


def _prepare(app: AppConfig, args: argparse.Namespace, *, daily: bool = False) -> int:
    """Check engines, renderer and keys; warm the embedded models (fail fast, before anyone joins).

    Raises the configuration errors; returns an exit code for the others.
    """
    from pipeline.session import plan_for, renderer_plan_for
    from services.llm import local_llm_server

    if daily and not app.settings.daily_api_key:
        return _fail(
            "error: -t daily needs DAILY_API_KEY (the bot creates a Daily room with it); "
            "set it in the environment or .env, or run without -t daily for the local page"
        )
    plan = plan_for(app, args.local)
    for choice in plan.choices():
        logger.info(choice.describe())
    rplan = renderer_plan_for(app, args.renderer)
    logger.info(rplan.describe())
    from pipeline.lifecycle import records

    records(app.settings)  # recover what a dead process left; retry its pending callbacks
    if rplan.mode != "none":
        _run_async(_check_replica(app, rplan.replica_id or ""))
    if plan.llm.engine == "llama-local":
        local_llm_server(app.settings)  # starts now; sessions wait for its health check
    if plan.stt.engine == "whisper":
        from services.local.models import whisper_model_dir
        from services.stt import load_whisper_model

        load_whisper_model(whisper_model_dir(app.settings.local_whisper_model))
    return 0


async def _check_replica(app: AppConfig, replica_id: str) -> None:
    """A bad TAVUS_API_KEY or replica id is an error now, not when someone joins."""
    import aiohttp

    from services.tavus import TavusAPI

    async with aiohttp.ClientSession() as http:
        replica = await TavusAPI(app.settings.tavus_api_key or "", app.settings.tavus_api_url,
                                 http).get_replica(replica_id)
    status = (replica or {}).get("status")
    if status and status not in ("completed", "ready", "active"):
        logger.warning(f"Tavus replica {replica_id} is {status!r}; it may not render yet")


def _prepare_server(args: argparse.Namespace) -> int:
    """Validate config and warm the embedded models before the server starts (fail fast)."""
    from pipeline.session import ModeError

    app: AppConfig | None = None
    try:
        app = load_app(args)
        return _prepare(app, args)
    except ConfigError as exc:
        return _fail(exc.render(), app)
    except (EngineSelectionError, ApiError, TavusError, ModeError) as exc:
        return _fail(f"error: {exc}", app)


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
    if known.list_conversations or known.show_conversation:
        return run_records(known)
    if known.check or known.text or known.audio_in or known.audio_out:
        return run_headless(known)

    runner_flags = argparse.ArgumentParser(add_help=False)
    runner_flags.add_argument("-t", "--transport")
    runner_flags.add_argument("-d", "--direct", action="store_true")
    transport, _ = runner_flags.parse_known_args(argv)
    daily = transport.transport == "daily" or transport.direct
    if daily or known.renderer == "transport":
        return run_conversation(known, daily)
    code = _prepare_server(known)
    if code:
        return code
    from pipecat.runner.run import main as runner_main

    from web import mount_local_page

    mount_local_page()
    parser = add_arguments(argparse.ArgumentParser(description="Persona-driven Pipecat agent"))
    sys.argv = [sys.argv[0], *argv]
    try:
        runner_main(parser)
    finally:
        from config.settings import Settings
        from pipeline.lifecycle import drain_callbacks

        drain_callbacks(Settings.from_env(), timeout=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
