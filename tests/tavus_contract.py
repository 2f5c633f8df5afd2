"""Tavus's own client code as test oracles (tests/test_tavus_clients.py).

* :func:`typecheck` — ``@tavus/cvi-ui``'s types of the CVI app messages, checked by ``tsc``.
  The types live, unexported, in the hooks template its CLI copies into a user's app
  (``src/templates/tsx/hooks/cvi-events-hooks.json``: ``content`` is the ``.tsx`` source).
  The check file is that source as installed, verbatim, after a tiny ambient ``.d.ts`` for
  the two modules it imports (only what it uses), followed by generated checks: each
  outbound event assigned to the member of ``AppMessage<T>['data']`` with its
  ``event_type``, each inbound message to the member of ``SendAppMessageProps``; and for
  the event types cvi-ui has no member for, a check that it really has none (so cvi-ui
  gaining one is noticed). ``tsc --noEmit --strict`` errors come back mapped to the check
  (and the JSON) they are about.
* :func:`load_tavus_cli` / :class:`FakeDaily` — ``tavus-cli``'s ``DailyConversationSession``
  imported straight from its wheel (without its CLI's dependencies), on a fake
  ``daily-python`` bridged to a running :class:`~tests.harness.Harness`.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "tests" / "browser" / "node_modules"
CVI_UI = NODE_MODULES / "@tavus" / "cvi-ui"
CVI_UI_HOOKS = CVI_UI / "src" / "templates" / "tsx" / "hooks" / "cvi-events-hooks.json"
TSC = NODE_MODULES / ".bin" / "tsc"
TAVUS_CLI_VERSION = "0.11.0"
TAVUS_CLI_WHEEL_NAME = f"tavus_cli-{TAVUS_CLI_VERSION}-py3-none-any.whl"

# Only what cvi-events-hooks.tsx uses of its two imports.
AMBIENT_STUBS = """\
declare module "react" {
  export function useCallback<T extends (...args: any[]) => any>(
    callback: T, deps: readonly unknown[]): T;
}
declare module "@daily-co/daily-react" {
  export function useAppMessage(): (data: unknown, to?: string) => void;
  export function useDailyEvent<E>(event: string, callback: (event: E) => void): void;
}
"""

OUTBOUND_UNION = "AppMessage<unknown>['data']"  # what useObservableEvent hands the app
INBOUND_UNION = "SendAppMessageProps"  # what useSendAppMessage accepts


def required() -> bool:
    """In CI (``CI=true``, or ``REQUIRE_BROWSER=1`` as scripts/test.sh sets it) a missing
    client package fails the test instead of skipping it."""
    return os.environ.get("CI") == "true" or os.environ.get("REQUIRE_BROWSER") == "1"


# --------------------------------------------------------------------------- cvi-ui + tsc


def cvi_ui_missing() -> str | None:
    """Why the cvi-ui check cannot run here (None: it can)."""
    if not CVI_UI_HOOKS.is_file():
        return f"@tavus/cvi-ui is not installed ({CVI_UI_HOOKS} missing; npm ci in tests/browser)"
    if not TSC.exists():
        return f"typescript is not installed ({TSC} missing; npm ci in tests/browser)"
    try:
        subprocess.run(["node", "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "node is not installed"
    return None


def cvi_ui_version() -> str:
    return json.loads((CVI_UI / "package.json").read_text())["version"]


def cvi_ui_source() -> str:
    """The hooks source as the cvi-ui CLI writes it into an app."""
    return json.loads(CVI_UI_HOOKS.read_text())["content"]


@dataclass
class Check:
    """One generated check: ``label`` names it in an error, ``shown`` is the JSON checked."""

    label: str
    code: str
    shown: str = ""
    kind: str = ""  # what the summary groups it under (the event type)
    first_line: int = 0
    last_line: int = 0


@dataclass
class TypecheckResult:
    checks: list[Check]
    errors: dict[str, list[str]] = field(default_factory=dict)  # label -> tsc's messages
    unmapped: list[str] = field(default_factory=list)  # errors outside the checks (the source)
    source_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.unmapped

    def __repr__(self) -> str:  # the report says it all; pytest need not print every check
        return f"<tsc: {len(self.errors)} of {len(self.checks)} checks fail>"

    def report(self) -> str:
        lines = [(f"tsc --strict: {len(self.errors)} of {len(self.checks)} checks fail "
                  f"against @tavus/cvi-ui {cvi_ui_version()}'s types ({self.source_path}):")]
        by_label = {c.label: c for c in self.checks}
        kinds: dict[str, int] = {}
        for label in self.errors:
            kinds[by_label[label].kind] = kinds.get(by_label[label].kind, 0) + 1
        lines.append("  " + ", ".join(f"{kind} x{n}" for kind, n in kinds.items()))
        for label, messages in self.errors.items():
            lines.append(f"\n* {label}")
            if by_label[label].shown:
                lines.append(f"  sent: {by_label[label].shown}")
            lines.extend("  " + (m if len(m) <= 300 else m[:300] + " ...") for m in messages)
        if self.unmapped:
            lines.append("\n* errors outside the generated checks:")
            lines.extend("  " + m for m in self.unmapped)
        return "\n".join(lines)


def _ts_string(value: str) -> str:
    return json.dumps(value)


def _member(union: str, event_type: str) -> str:
    return f"Extract<{union}, {{ event_type: {_ts_string(event_type)} }}>"


def _short(message: dict) -> str:
    text = json.dumps(message, ensure_ascii=False)
    return text if len(text) <= 400 else text[:400] + f"... ({len(text)} chars)"


def message_checks(messages: list[dict], *, direction: str, no_member: dict[str, str]) -> list[Check]:
    """A check per message whose event type cvi-ui has a member for (``no_member``: the
    types it has none for, with why; they are checked by :func:`absence_checks`)."""
    union = OUTBOUND_UNION if direction == "outbound" else INBOUND_UNION
    checks = []
    for index, message in enumerate(messages):
        event_type = message.get("event_type")
        if event_type in no_member:
            continue
        n = f"{direction[:2]}{index}"
        literal = json.dumps(message, ensure_ascii=False, indent=None)
        code = (f"const m_{n} = {literal} as const;\n"
                f"const c_{n}: {_member(union, str(event_type))} = m_{n};\n")
        where = f"seq {message['seq']}" if "seq" in message else f"#{index + 1}"
        checks.append(Check(f"{direction} {event_type} ({where}) vs cvi-ui's {union} member",
                            code, _short(message), f"{direction} {event_type}"))
    return checks


def _member_checks(event_types: list[str], *, direction: str, member: bool,
                   message: Any) -> list[Check]:
    """One tsc check per event type: cvi-ui's union has (``member``) or has no member for it."""
    union = OUTBOUND_UNION if direction == "outbound" else INBOUND_UNION
    name, yes, no = ("present", "false", "true") if member else ("absent", "true", "false")
    checks = []
    for index, event_type in enumerate(event_types):
        n = f"{direction[:2]}{index}"
        code = (f"const {name}_{n}: [{_member(union, event_type)}] extends [never] "
                f"? {yes} : {no} = true;\n")
        what, kind = message(event_type, union)
        checks.append(Check(what, code, kind=f"{direction} {event_type} {kind}"))
    return checks


def absence_checks(no_member: dict[str, str], *, direction: str) -> list[Check]:
    """For each type listed as having no cvi-ui member: tsc agrees (the member is never)."""
    return _member_checks(sorted(no_member), direction=direction, member=False, message=lambda t, u: (
        (f"{direction} {t} is listed as having no member in {u} ({no_member[t]}), but cvi-ui "
         "has one now: check against it"), "(listed)"))


def presence_checks(event_types: list[str], *, direction: str, no_member: dict[str, str]) -> list[Check]:
    """Every event type we know (sent in the run or not) has a cvi-ui member or is listed."""
    return _member_checks(sorted(set(event_types) - set(no_member)), direction=direction,
                          member=True, message=lambda t, u: (
        f"{direction} {t} has no member in cvi-ui's {u}: list it (with why) or fix the name",
        "(no member)"))


def typecheck(checks: list[Check], workdir: Path, *, timeout: float = 120) -> TypecheckResult:
    """Write the cvi-ui source plus ``checks`` to ``workdir`` and run ``tsc --noEmit --strict``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cvi-ui-imports.d.ts").write_text(AMBIENT_STUBS)
    header = (f"// @tavus/cvi-ui {cvi_ui_version()}: {CVI_UI_HOOKS.relative_to(NODE_MODULES)}"
              f" 'content', verbatim\n")
    parts = [header, cvi_ui_source().rstrip("\n") + "\n",
             "\n// ------------------------------------------------ generated checks\n"]
    line = sum(p.count("\n") for p in parts) + 1
    for check in checks:
        parts.append(f"// {check.label}\n")
        line += 1
        check.first_line = line
        parts.append(check.code)
        line += check.code.count("\n")
        check.last_line = line - 1
    source = workdir / "cvi-events-contract.ts"
    source.write_text("".join(parts))
    proc = subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2020", "--module", "esnext",
         "--moduleResolution", "bundler", "--typeRoots", str(workdir), "--lib", "es2020",
         "--pretty", "false", "--noErrorTruncation", "cvi-ui-imports.d.ts", source.name],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    result = TypecheckResult(checks, source_path=source)
    current: list[str] | None = None
    for raw in (proc.stdout + proc.stderr).splitlines():
        if not raw.strip():
            continue
        if "): error TS" in raw:  # file(line,col): error TSnnnn: message
            current = None
            where, message = raw.split("): ", 1)
            name, _, position = where.rpartition("(")
            if name != source.name:
                result.unmapped.append(raw)
                continue
            number = int(position.split(",")[0])
            owner = next((c for c in checks if c.first_line <= number <= c.last_line), None)
            if owner is None:
                result.unmapped.append(f"{source.name} line {number}: {message}")
                continue
            current = result.errors.setdefault(owner.label, [])
            current.append(message)
        elif current is not None and raw.startswith(" "):  # tsc's elaboration of that error
            current.append(raw.strip())
        else:
            current = None
            result.unmapped.append(raw)
    if proc.returncode != 0 and result.ok:
        result.unmapped.append(f"tsc exited {proc.returncode} without a parsable error")
    return result


# --------------------------------------------------------------------------- tavus-cli


def tavus_cli_wheel() -> Path | None:
    """The wheel scripts/test.sh downloads (``TAVUS_CLI_WHEEL``, relative to the repo root,
    or the main checkout's ``.venv/test-packages`` for a worktree)."""
    candidates = []
    if os.environ.get("TAVUS_CLI_WHEEL"):
        given = Path(os.environ["TAVUS_CLI_WHEEL"])
        candidates.append(given if given.is_absolute() else ROOT / given)
    candidates.append(ROOT / ".venv" / "test-packages" / TAVUS_CLI_WHEEL_NAME)
    candidates.append(Path(sys.prefix) / "test-packages" / TAVUS_CLI_WHEEL_NAME)
    return next((c for c in candidates if c.is_file()), None)


def load_tavus_cli(wheel: Path) -> types.ModuleType:
    """``tavus_mcp.sdk.daily_transport`` from the wheel, as a zip import.

    ``tavus_mcp/sdk/__init__.py`` imports the CLI's HTTP client and config (keyring, httpx
    ...), which the transport does not need: ``tavus_mcp.sdk`` is registered as a bare
    package whose ``__path__`` points into the wheel, so only the transport module and what
    it imports itself (``tavus_mcp.sdk.errors``) are loaded. Their code is not modified.
    """
    import importlib

    existing = sys.modules.get("tavus_mcp.sdk.daily_transport")
    if existing is not None:
        return existing
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert "tavus_mcp/sdk/daily_transport.py" in names, f"{wheel} has no daily_transport.py"
    if str(wheel) not in sys.path:
        sys.path.append(str(wheel))
    importlib.import_module("tavus_mcp")  # its __init__ only sets __version__
    sdk = types.ModuleType("tavus_mcp.sdk")
    sdk.__path__ = [f"{wheel}/tavus_mcp/sdk"]  # zipimport resolves paths inside the archive
    sdk.__package__ = "tavus_mcp.sdk"
    sys.modules["tavus_mcp.sdk"] = sdk
    module = importlib.import_module("tavus_mcp.sdk.daily_transport")
    assert module.__file__ and module.__file__.startswith(str(wheel)), module.__file__
    return module


class FakeDaily:
    """A stand-in for ``daily-python`` (``CallClient``, ``Daily``, ``EventHandler``) whose one
    room holds the harness's bot.

    * ``CallClient.send_app_message(message)`` (tavus-cli calls it from a worker thread):
      the bot receives the message (JSON round-tripped, as on the wire) from this client's
      participant id, on the harness's event loop.
    * Every app message the bot sends after this client joined (as in a Daily room: nothing
      sent before the join is delivered) reaches ``event_handler.on_app_message(message,
      sender)`` on the fake's own callback thread, as daily-python delivers callbacks.
    * ``join()`` tells the bot's transport a participant joined (``on_client_connected``,
      what Pipecat's Daily transport reports); it does not fire the client's own
      ``on_participant_joined``: the bot was in the room already, and daily-python reports
      only participants joining after the client.
    """

    BOT_ID = "bot-participant"

    def __init__(self, harness: Any, loop: asyncio.AbstractEventLoop):
        self.harness = harness
        self.loop = loop
        self.clients: list[Any] = []
        self.inited = False
        fake = self

        class EventHandler:
            def __init__(self) -> None:
                pass

        class Daily:
            @staticmethod
            def init(*_args: Any, **_kwargs: Any) -> None:
                fake.inited = True

        class CallClient:
            _count = 0

            def __init__(self, event_handler: Any = None) -> None:
                CallClient._count += 1
                self.participant_id = f"tavus-cli-{CallClient._count}"
                self.handler = event_handler
                self.joined_url: str | None = None
                self.sent: list[dict] = []  # app messages it sent (as the bot got them)
                self.delivered: list[dict] = []  # app messages the bot sent it
                self._outbox: queue.Queue = queue.Queue()
                self._thread: threading.Thread | None = None
                fake.clients.append(self)

            # daily-python's CallClient API, as tavus-cli uses it
            def join(self, meeting_url: str, *args: Any, completion: Any = None, **kwargs: Any):
                self.joined_url = meeting_url
                self._thread = threading.Thread(target=self._deliver, daemon=True,
                                                name=f"fake-daily-{self.participant_id}")
                self._thread.start()
                transport = fake.harness.transport
                transport.message_listeners.append(self._outbox.put)
                fake._run(transport.client_connected({"id": self.participant_id}))
                if completion:
                    completion(None, None)

            def send_app_message(self, message: Any, participant: Any = None,
                                 completion: Any = None) -> None:
                if self.joined_url is None:
                    raise RuntimeError("send_app_message before join")
                wire = json.loads(json.dumps(message))
                self.sent.append(wire)
                fake._run(fake.harness.transport.receive_message(wire, self.participant_id))
                if completion:
                    completion(None)

            def leave(self, completion: Any = None) -> None:
                transport = fake.harness.transport
                if self._outbox.put in transport.message_listeners:
                    transport.message_listeners.remove(self._outbox.put)
                    fake._run(transport.client_disconnected({"id": self.participant_id}))
                self._outbox.put(None)
                if completion:
                    completion(None)

            def release(self) -> None:
                pass

            def _deliver(self) -> None:
                while True:
                    message = self._outbox.get()
                    if message is None:
                        return
                    wire = json.loads(json.dumps(message))
                    self.delivered.append(wire)
                    self.handler.on_app_message(wire, fake.BOT_ID)

        self.EventHandler = EventHandler
        self.Daily = Daily
        self.CallClient = CallClient

    def _run(self, coroutine: Any) -> None:
        """Run on the harness's loop; wait for it when called from another thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.loop.create_task(coroutine)
            return
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def load(self) -> tuple[Any, Any, Any]:
        """What ``daily_transport._load_daily()`` returns."""
        return self.CallClient, self.Daily, self.EventHandler
