"""What ``bot.py``'s flags do: load the configuration, then run a mode or a report.

Every function here raises :class:`config.errors.AgentError` for what a user
can fix; ``bot.py`` prints it (one line, secrets scrubbed) and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any

from loguru import logger

from config.app import AppConfig
from config.errors import ConfigError, Problem
from config.files import output_problem
from config.logging import register_secrets
from config.redact import redact_text
from config.settings import Settings
from conversation.lifecycle import drain_callbacks, records
from conversation.records import data_dir_problem
from services.selection import EngineSelectionError
from services.tavus.api import TavusError
from session.errors import ModeError
from session.owner import plan_for, renderer_plan_for

# Personas, objectives and guardrails fetched from Tavus, once per process.
_FETCHED: dict[str, tuple] = {}


def clear_fetched() -> None:
    """Forget what was fetched from Tavus (the next load fetches again)."""
    _FETCHED.clear()


def _run_async(coro):
    """Run ``coro`` to completion from sync code, even when an event loop is running here."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def load_app(args: argparse.Namespace) -> AppConfig:
    """Load persona (a file, or a Tavus persona id), conversation and settings.

    Prints warnings and notes. Objectives and guardrails referenced by id are
    fetched from Tavus when TAVUS_API_KEY is set.
    """
    from services.tavus.personas import (
        fetch_persona,
        fetch_policies_by_ids,
        looks_like_persona_id,
        policy_prompt,
    )

    settings = Settings.from_env()
    register_secrets(settings.secrets())
    persona_arg = str(args.persona)
    greet = not getattr(args, "no_greeting", False)
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
        app = AppConfig.load(None, args.conversation, persona_data=data,
                             persona_source=f"Tavus persona {persona_arg}", greet=greet)
        logger.info(f"Fetched persona {persona_arg} from Tavus ({app.persona.display_name})")
        policies = (objectives, guardrails, fetch_warnings)
    else:
        app = AppConfig.load(persona_arg, args.conversation, greet=greet)
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


# --------------------------------------------------------------------------- reports


def render_check(app: AppConfig, force_local: bool, renderer: str = "auto") -> tuple[str, bool]:
    """The ``--check`` report: effective config (redacted), then each layer's engine and why.

    Returns the report and whether the persona can start. The records are not opened: a
    ``PERSONA_DATA_DIR`` that cannot hold them is a warning here (the modes refuse to start).
    Nothing secret is in it: the effective configuration is redacted
    (``AppConfig.effective``: keys, headers, credential values in ``extra_body``, userinfo
    and query tokens in ``base_url`` and ``callback_url``), and the whole report then goes
    through
    :func:`config.redact.redact_text` with the configuration's secrets (an engine's reason
    quotes ``base_url``; a warning may quote a value).
    """
    from pipeline.turn_taking import turn_plan

    options = app.options
    lines = [f"Persona: {options.persona_name} ({app.persona_source})", ""]
    lines.append("Effective configuration (secrets redacted):")
    lines.append(json.dumps(app.effective(), indent=2, ensure_ascii=False))
    lines.append("")
    lines.append("Engines:")
    ok = True
    try:
        lines += [f"  {choice.describe()}" for choice in plan_for(app, force_local).choices()]
    except EngineSelectionError as exc:
        ok = False
        lines += [f"  cannot start: {line}" for line in str(exc).splitlines()]
    lines.append(f"  TURN -> {turn_plan(options.flow).describe()}")
    lines.append(f"  FLOW -> {options.flow.describe()}")
    lines.append(f"  LANGUAGE -> {options.language}")
    try:
        lines.append(f"  {renderer_plan_for(app, renderer).describe()}")
    except TavusError as exc:
        ok = False
        lines.append(f"  cannot start: {exc}")
    warnings = list(app.warnings)
    records_problem = data_dir_problem(app.settings.data_dir)  # --check writes nothing there
    if records_problem:
        warnings.append(f"{records_problem}; every mode but --check refuses to start")
    if warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in warnings]
    if app.notes:
        lines += ["", "Migrated legacy fields:"] + [f"  - {n}" for n in app.notes]
    return redact_text("\n".join(lines), app.secrets()), ok


def run_records(args: argparse.Namespace) -> int:
    """``--list-conversations`` / ``--show-conversation ID``."""
    from conversation.records import render_conversation, render_list

    settings = Settings.from_env()
    store, callbacks = records(settings)  # also closes what a dead process left active
    if args.show_conversation:
        record = store.run(store.verbose, args.show_conversation)
        if record is None:
            raise ModeError(f"no conversation {args.show_conversation!r} in {store.path}")
        print(json.dumps(record, indent=2, ensure_ascii=False) if args.json
              else render_conversation(record))
    else:
        listing = store.run(store.list, status=args.status, limit=args.limit)
        print(json.dumps(listing, indent=2, ensure_ascii=False) if args.json
              else render_list(listing, store.path))
    callbacks.drain(timeout=settings.callback_timeout_secs)
    return 0


# --------------------------------------------------------------------------- modes


def prepare(app: AppConfig, args: argparse.Namespace, *, daily: bool = False) -> list[str]:
    """Check engines, renderer and keys; warm the embedded models (fail fast, before anyone joins).

    Returns the banner's summary lines (the persona and what runs each layer).
    """
    from services.llm import local_llm_server

    if daily and not app.settings.daily_api_key:
        raise ModeError(
            "-t daily needs DAILY_API_KEY (the bot creates a Daily room with it); "
            "set it in the environment or .env, or run without -t daily for the local page"
        )
    plan = plan_for(app, args.local)
    for choice in plan.choices():
        logger.info(choice.describe())
    rplan = renderer_plan_for(app, args.renderer)
    logger.info(rplan.describe())
    records(app.settings)  # recover what a dead process left; retry its pending callbacks
    if rplan.mode != "none":
        _run_async(_check_replica(app, rplan.replica_id or ""))
    server = local_llm_server(app.settings) if plan.llm.engine == "llama-local" else None
    if plan.stt.engine == "whisper":  # loads while the LLM server starts
        from services.local.models import whisper_model_dir
        from services.stt import load_whisper_model

        load_whisper_model(whisper_model_dir(app.settings.local_whisper_model))
    if server is not None:  # nobody can talk before it answers: a server that fails, fails now
        _run_async(server.wait_ready())
    return summary_lines(app, plan, rplan)


def summary_lines(app: AppConfig, plan: Any, rplan: Any) -> list[str]:
    """Who the user talks to and what runs each layer, for the start-up banner."""
    def engine(choice) -> str:
        return choice.model or choice.engine

    face = ("no replica video (audio only)" if rplan.mode == "none"
            else f"Tavus replica {rplan.replica_id}")
    return [f"Persona: {app.options.persona_name} ({app.persona_source})",
            f"STT {engine(plan.stt)} · LLM {engine(plan.llm)} · TTS {engine(plan.tts)} · {face}"]


def banner(lines: list[str], url: str | None = None) -> str:
    """The one start-up banner: the summary, where to go, how to leave."""
    body = list(lines)
    if url:
        body += ["", f"Open {url} in a browser, allow the microphone, press Connect,",
                 "and wait for the greeting before you speak."]
    body += ["Ctrl-C stops the bot."]
    width = max(len(line) for line in body)
    rule = "─" * (width + 2)
    return "\n".join(["", f"╭{rule}╮", *(f"│ {line.ljust(width)} │" for line in body), f"╰{rule}╯", ""])


async def _check_replica(app: AppConfig, replica_id: str) -> None:
    """A bad TAVUS_API_KEY or replica id is an error now, not when someone joins."""
    import aiohttp

    from services.tavus.api import TavusAPI

    async with aiohttp.ClientSession() as http:
        replica = await TavusAPI(app.settings.tavus_api_key or "", app.settings.tavus_api_url,
                                 http).get_replica(replica_id)
    status = (replica or {}).get("status")
    if status and status not in ("completed", "ready", "active"):
        logger.warning(f"Tavus replica {replica_id} is {status!r}; it may not render yet")


def run_headless(args: argparse.Namespace) -> int:
    """``--check``, ``--text`` and one-shot modes."""
    from session.modes import run_oneshot, run_text

    app = load_app(args)
    if args.check:
        report, ok = render_check(app, args.local, args.renderer)
        print(report)  # redacted by render_check
        return 0 if ok else 2
    for flag, path in (("--audio-out", args.audio_out), ("--transcript", args.transcript)):
        problem = output_problem(path) if path else None
        if problem:  # now, not after the conversation
            raise ModeError(f"{flag} {path}: {problem}")
    try:
        if args.text:
            transcript = asyncio.run(run_text(app, force_local=args.local))
            if args.transcript:
                out = Path(args.transcript)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(transcript.to_list(), indent=2) + "\n")
            return 0
        if not (args.audio_in and args.audio_out):
            raise ModeError("one-shot mode needs both --audio-in WAV and --audio-out WAV")
        result = asyncio.run(
            run_oneshot(app, args.audio_in, args.audio_out, args.transcript, force_local=args.local)
        )
        print(f"Heard: {' '.join(result['heard'])}")
        print(f"{result['persona']}: {' '.join(result['said'])}")
        print(f"Voice-to-voice: {result['timing']['voice_to_voice_secs']}s; reply in {args.audio_out}")
        return 0
    finally:
        drain_callbacks(app.settings, app.settings.callback_timeout_secs)


def run_conversation(args: argparse.Namespace, daily: bool) -> int:
    """``-t daily`` (a new Daily room) or ``--renderer transport`` (the Tavus room): one conversation."""
    from session.modes import run_daily_session, run_tavus_transport_session

    app = load_app(args)
    try:
        if daily and args.renderer == "transport":
            raise ModeError("-t daily and --renderer transport exclude each other: with "
                            "TavusTransport the user joins the room Tavus creates")
        prepare(app, args, daily=daily)

        def announce(line: str) -> None:
            print(f"\n  {line}\n", flush=True)
            logger.info(line)

        if daily:
            asyncio.run(run_daily_session(app, force_local=args.local, renderer=args.renderer,
                                          announce=announce))
        else:
            asyncio.run(run_tavus_transport_session(app, force_local=args.local, announce=announce))
        return 0
    finally:
        drain_callbacks(app.settings, app.settings.callback_timeout_secs)


def end_conversations_on_exit_signal() -> None:
    """Ctrl-C / SIGTERM of the local server ends every live conversation at once.

    Uvicorn (under Pipecat's runner) answers the first signal by waiting for
    its running requests, and a conversation runs inside one until the peer's
    WebRTC connection times out (20-40 s). Its ``Server.handle_exit`` is wrapped
    so the first signal also cancels every running conversation
    (:func:`session.owner.interrupt_all`); the second still forces the exit.
    """
    import uvicorn.server

    from session.owner import interrupt_all

    server_cls = uvicorn.server.Server
    if getattr(server_cls.handle_exit, "_ends_conversations", False):
        return
    original = server_cls.handle_exit

    def handle_exit(self, sig, frame):
        if not self.should_exit:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                logger.info("Stopping: ending the conversations in progress")
                loop.call_soon_threadsafe(lambda: loop.create_task(interrupt_all()))
        return original(self, sig, frame)

    handle_exit._ends_conversations = True
    server_cls.handle_exit = handle_exit
