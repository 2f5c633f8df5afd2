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
``-t daily`` and ``--renderer transport`` run one conversation and exit. Each
conversation is owned by ``session.owner.ConversationSession``; what the flags
do is in ``session/launch.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import quote

from config.app import DEFAULT_PERSONA

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Our own flags (the runner adds its ``-t``, ``--host``, ``--port``, ... to the same parser)."""
    from services.tavus.plan import RENDERERS  # imports Pipecat: after logging is set up

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
    group.add_argument("--debug", action="store_true",
                       help="log everything (DEBUG); the default is INFO, or LOG_LEVEL")
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
    recs.add_argument("--json", action="store_true",
                      help="JSON output for the two above and the --list-* below")
    defs = parser.add_argument_group(
        "objectives and guardrails (stored in PERSONA_DATA_DIR/conversations.db)")
    defs.add_argument("--add-objectives", metavar="FILE",
                      help="store an objectives file ({\"data\": [...]}, Tavus's body); prints "
                      "its objectives_id")
    defs.add_argument("--list-objectives", action="store_true", help="list stored objectives")
    defs.add_argument("--show-objectives", metavar="ID", help="one stored objectives document (JSON)")
    defs.add_argument("--delete-objectives", metavar="ID", help="delete stored objectives")
    defs.add_argument("--add-guardrails", metavar="FILE",
                      help="store a guardrail ({\"guardrail_name\", ...}: prints its uuid) or a "
                      "legacy set ({\"name\", \"data\": [...]}: prints its guardrails_id)")
    defs.add_argument("--list-guardrails", action="store_true", help="list stored guardrails and sets")
    defs.add_argument("--show-guardrails", metavar="ID", help="one stored guardrail or set (JSON)")
    defs.add_argument("--delete-guardrails", metavar="ID", help="delete a stored guardrail or set")
    server = parser.add_argument_group("local server (python bot.py)")
    server.add_argument(
        "--insecure", action="store_true",
        help="allow --host beyond loopback without ACCESS_TOKEN (anyone who reaches the "
        "port can talk to the bot)",
    )
    modes = parser.add_argument_group("headless modes")
    modes.add_argument("--check", action="store_true", help="print the effective configuration and engines, then exit")
    modes.add_argument("--text", action="store_true", help="a terminal conversation (no STT/TTS)")
    modes.add_argument("--audio-in", metavar="WAV", help="one-shot: the spoken question")
    modes.add_argument("--audio-out", metavar="WAV", help="one-shot: where to write the reply audio")
    modes.add_argument("--transcript", metavar="JSON", help="one-shot / text: write the transcript here")
    return parser


async def bot(runner_args):
    """Pipecat development runner entry point: one conversation per session."""
    from session.launch import load_app
    from session.modes import run_runner_session

    args = getattr(runner_args, "cli_args", None) or add_arguments(
        argparse.ArgumentParser()).parse_args([])
    await run_runner_session(runner_args, load_app(args), force_local=args.local,
                             renderer=args.renderer)


DESCRIPTION = "A Tavus-style persona as a live Pipecat agent (offline by default)."


def print_help() -> None:
    """Our flags first, then the development runner's (nothing is started)."""
    import contextlib
    import io

    from pipecat.runner.run import main as runner_main

    ours = add_arguments(argparse.ArgumentParser(
        prog="python bot.py", description=DESCRIPTION, add_help=False,
        epilog="See README.md: the local page, -t daily, --renderer, --text, one-shot."))
    print(ours.format_help())
    theirs = argparse.ArgumentParser(prog="python bot.py", usage=argparse.SUPPRESS,
                                     add_help=False)
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [saved[0], "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            theirs.add_argument("-h", "--help", action="help", help="show this help and exit")
            runner_main(theirs)
    finally:
        sys.argv = saved
    text = out.getvalue().replace("options:", "Pipecat development runner options:", 1)
    print(text.strip())


def run(argv: list[str]) -> int:
    """Dispatch the flags: a report, a headless mode, one conversation, or the runner."""
    from session import launch

    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    known, rest = add_arguments(argparse.ArgumentParser(add_help=False)).parse_known_args(argv)
    stray_file_argument(rest)
    if known.list_conversations or known.show_conversation:
        return launch.run_records(known)
    if any(getattr(known, f"{verb}_{kind}") for verb in ("add", "list", "show", "delete")
           for kind in ("objectives", "guardrails")):
        return launch.run_policies(known)
    if known.check or known.text or known.audio_in or known.audio_out:
        return launch.run_headless(known)
    runner_flags = argparse.ArgumentParser(add_help=False)
    runner_flags.add_argument("-t", "--transport")
    runner_flags.add_argument("-d", "--direct", action="store_true")
    transport, _ = runner_flags.parse_known_args(argv)
    daily = transport.transport == "daily" or transport.direct
    if daily or known.renderer == "transport":
        return launch.run_conversation(known, daily)
    access_token = check_exposure(argv, known.insecure)  # before anything loads or binds
    app = launch.load_app(known)  # once: its warnings print once, a Tavus persona is fetched once
    summary = launch.prepare(app, known)
    from pipecat.runner.run import app as runner_app
    from pipecat.runner.run import main as runner_main

    from config.logging import add_stderr_sink
    from services.pipecat_seam import runner_app_without_docs, runner_banner, runner_logging
    from transports.guard import install_signalling_guard
    from web import mount_local_page

    settings = app.settings
    limit = max_conversations(app, known.local, settings)
    runner_app_without_docs(runner_app)
    mount_local_page(describe=lambda: app)
    install_signalling_guard(runner_app, offers_per_minute=settings.offers_per_minute,
                             access_token=access_token, max_conversations=limit)
    runner_logging(add_stderr_sink)  # the runner's sink at our level, not DEBUG

    def print_banner(runner_args: argparse.Namespace) -> None:
        host = "localhost" if runner_args.host in ("0.0.0.0", "::") else runner_args.host
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={quote(access_token)}" if access_token else ""
        url = (None if runner_args.transport == "daily"
               else f"http://{host}:{runner_args.port}/{query}")
        plural = "s" if limit != 1 else ""
        lines = [*summary, (f"At most {limit} conversation{plural} at once "
                            "(MAX_CONVERSATIONS); more are told to try again")]
        print(launch.banner(lines, url), flush=True)

    runner_banner(print_banner)
    launch.end_conversations_on_exit_signal()
    if transport.transport is None:  # only the WebRTC page's transport (not every one)
        argv = [*argv, "-t", "webrtc"]
    sys.argv = [sys.argv[0], *argv]
    try:
        runner_main(add_arguments(argparse.ArgumentParser(description=DESCRIPTION)))
    finally:
        from conversation.lifecycle import drain_callbacks

        drain_callbacks(settings, timeout=3)
    fast_exit(0)
    return 0


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def stray_file_argument(rest: list[str]) -> None:
    """A bare persona or conversation file (``python bot.py persona.json``) would be ignored
    (the runner takes its own flags only): say how to pass it instead."""
    from config.errors import AgentError

    for arg in rest:
        if not arg.startswith("-") and arg.lower().endswith((".json", ".yaml", ".yml")):
            raise AgentError(f"{arg!r}: a persona file goes after --persona (python bot.py "
                             f"--persona {arg}), a conversation file after --conversation")


def check_exposure(argv: list[str], insecure: bool) -> str | None:
    """A ``--host`` beyond loopback needs ``ACCESS_TOKEN`` (returned) or ``--insecure``.

    Checked before any model loads or the runner binds: a usage error (exit 2) otherwise.
    """
    from config.settings import Settings
    from session.errors import ModeError

    hosts = argparse.ArgumentParser(add_help=False)
    hosts.add_argument("--host", default="localhost")
    host = hosts.parse_known_args(argv)[0].host
    token = Settings.from_env().access_token
    if host in LOOPBACK_HOSTS or token or insecure:
        if host not in LOOPBACK_HOSTS and not token:
            print(f"WARNING: --insecure: anyone who can reach {host} can talk to the bot",
                  file=sys.stderr)
        return token
    raise ModeError(f"--host {host} is reachable from other machines: set ACCESS_TOKEN "
                    "(the page and signalling then require it) or pass --insecure")


def max_conversations(app, force_local: bool, settings) -> int:
    """MAX_CONVERSATIONS, or the machine's default for the engines that will run."""
    if settings.max_conversations:
        return settings.max_conversations
    from session.owner import plan_for
    from transports.capacity import default_max_conversations

    return default_max_conversations(plan_for(app, force_local))


def fast_exit(code: int) -> None:
    """Exit without the interpreter's slow finalization of the loaded models (seconds of
    garbage collection in native libraries after Ctrl-C). Our atexit handlers still run:
    the local LLM server is stopped, leftover Tavus conversations are ended."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run; anything a user can fix is one line on stderr and exit code 2."""
    from config.cli import load_env, run_command
    from config.logging import setup_logging

    if not load_env():  # the test suite: no .env, not even the one Pipecat's runner loads at import
        import dotenv

        dotenv.load_dotenv = lambda *args, **kwargs: False
    argv = sys.argv[1:] if argv is None else argv
    setup_logging(debug="--debug" in argv)
    return run_command(run, argv)


if __name__ == "__main__":
    sys.exit(main())
