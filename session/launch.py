"""What ``bot.py``'s flags do: load the configuration, then run a mode or a report.

Every function here raises :class:`config.errors.AgentError` for what a user
can fix; ``bot.py`` prints it (one line, secrets scrubbed) and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
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
    """Load persona (a file, or a Tavus persona id), conversation and settings, and resolve
    the objectives and guardrails they name (:func:`attach_policies`).

    Prints warnings and notes. A Tavus persona, and objectives and guardrails the local
    store lacks, are fetched from Tavus (when TAVUS_API_KEY is set) once per process.
    """
    from services.tavus.personas import fetch_persona_document, looks_like_persona_id

    settings = Settings.from_env()
    register_secrets(settings.secrets())
    persona_arg = str(args.persona)
    greet = not getattr(args, "no_greeting", False)
    if looks_like_persona_id(persona_arg):
        if not settings.tavus_api_key:
            raise ConfigError(persona_arg, [Problem(
                path="", message="no such file; to fetch it as a Tavus persona id set TAVUS_API_KEY"
            )])
        if persona_arg not in _FETCHED:
            _FETCHED[persona_arg] = (_run_async(fetch_persona_document(
                settings.tavus_api_key, settings.tavus_api_url, persona_arg)),)
        (data,) = _FETCHED[persona_arg]
        app = AppConfig.load(None, args.conversation, persona_data=data,
                             persona_source=f"Tavus persona {persona_arg}", greet=greet)
        logger.info(f"Fetched persona {persona_arg} from Tavus ({app.persona.display_name})")
    else:
        app = AppConfig.load(persona_arg, args.conversation, greet=greet)
    attach_policies(app)
    register_secrets(app.secrets())
    for warning in app.warnings:
        logger.warning(warning)
    for note in app.notes:
        logger.info(note)
    return app


def _fetch_cached(settings: Settings):
    """Tavus fetches of objectives and guardrails, once per process (None without a key)."""
    if not settings.tavus_api_key:
        return None
    from conversation.policies import tavus_fetch

    fetch = tavus_fetch(settings)

    def cached(kind: str, item_id: str) -> Any:
        key = f"{kind}:{settings.tavus_api_url}:{item_id}"
        if key not in _FETCHED:
            _FETCHED[key] = (fetch(kind, item_id),)
        return _FETCHED[key][0]

    return cached


def attach_policies(app: AppConfig) -> None:
    """Resolve the persona's and conversation's objectives and guardrails into
    ``app.policies`` (:func:`conversation.policies.resolve_policies`): the guardrails go
    into the system prompt; the objectives do not (the objectives flow gives the LLM one
    at a time). Visual ones are a warning when the conversation does not perceive video."""
    from conversation.policies import guardrails_prompt, perception_warning, resolve_policies

    warnings: list[str] = []
    policies = resolve_policies(app.persona, app.conversation, app.settings,
                                fetch=_fetch_cached(app.settings), warnings=warnings)
    app.policies = policies
    app.persona.set_policy_prompt(guardrails_prompt(policies))
    app.warnings += warnings
    from perception import plan_for as perception_plan

    perceived = perception_plan(app)
    waiting = perception_warning(policies, perceives=bool(perceived and perceived.visual))
    if waiting:
        app.warnings.append(waiting)
    if policies:
        origins = [o for o, suffix in (("Tavus", "from Tavus"), ("the local store", "local store"))
                   if any(s.endswith(suffix) for s in policies.sources)]
        logger.info(f"Objectives: {len(policies.objectives)}, guardrails: "
                    f"{len(policies.guardrails)} (from {' and '.join(origins)})")


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
    plan = None
    try:
        plan = plan_for(app, force_local)
        lines += [f"  {choice.describe()}" for choice in plan.choices()]
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
    from conversation.policies import describe_policies, objective_path

    lines += ["", "Objectives and guardrails:"]
    path = objective_path(plan, app.settings) if plan is not None else None
    lines += describe_policies(app.policies, path)
    from knowledge.session import describe_knowledge

    warnings = list(app.warnings)
    lines += ["", "Knowledge base and memories:"] + describe_knowledge(app, warnings)
    from perception import plan_for as perception_plan

    perceived = perception_plan(app)
    lines += ["", "Perception:"] + [f"  {line}" for line in (
        perceived.describe() if perceived is not None else
        ["off (no layers.perception, perception_model off, or echo mode): no video is "
         "captured and no detector is loaded"])]
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


def run_policies(args: argparse.Namespace) -> int:
    """``--add-/--list-/--show-/--delete-objectives`` and ``...-guardrails``: the local store.

    One command per run (the first given, in that order). A bad file lists every problem
    (its JSON path) before anything is opened; an unknown id is one line.
    """
    from config.loader import read_json
    from conversation.policies import (
        PolicyStore,
        render_list,
        validate_guardrails,
        validate_objectives,
    )
    from conversation.records import ConversationStore

    settings = Settings.from_env()
    for kind in ("objectives", "guardrails"):
        path = getattr(args, f"add_{kind}")
        if path:  # validated before the store is opened (a bad file changes nothing)
            body = read_json(path)
            validate = validate_objectives if kind == "objectives" else validate_guardrails
            validate(body, str(path))
    store = ConversationStore(settings.data_dir)
    try:
        policies = PolicyStore(store)
        for kind in ("objectives", "guardrails"):
            noun = "objectives" if kind == "objectives" else "guardrail or guardrails set"
            path = getattr(args, f"add_{kind}")
            if path:
                add = policies.add_objectives if kind == "objectives" else policies.add_guardrails
                record, warnings = add(read_json(path), str(path))
                for warning in warnings:
                    print(f"warning: {path}: {warning}", file=sys.stderr)
                key = next(k for k in ("objectives_id", "guardrails_id", "uuid") if k in record)
                print(record[key])
                return 0
            if getattr(args, f"list_{kind}"):
                items = policies.list_objectives() if kind == "objectives" else policies.list_guardrails()
                print(json.dumps({"data": items, "total_count": len(items)}, indent=2,
                                 ensure_ascii=False) if args.json
                      else render_list(kind, items, store.path))
                return 0
            item_id = getattr(args, f"show_{kind}")
            if item_id:
                record = policies.objectives(item_id) if kind == "objectives" \
                    else policies.guardrails(item_id)
                if record is None:
                    raise ModeError(f"no {noun} {item_id!r} in {store.path}")
                print(json.dumps(record, indent=2, ensure_ascii=False))
                return 0
            item_id = getattr(args, f"delete_{kind}")
            if item_id:
                deleted = policies.delete_objectives(item_id) if kind == "objectives" \
                    else policies.delete_guardrails(item_id)
                if not deleted:
                    raise ModeError(f"no {noun} {item_id!r} in {store.path}")
                print(f"Deleted {kind} {item_id}")
                return 0
        return 0
    finally:
        store.close()


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
    from session.warmup import warm_up

    warm_up(app, plan, server)  # the first turn is then no slower than the others
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
