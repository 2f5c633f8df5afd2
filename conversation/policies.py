"""Objectives and guardrails we own: a local store of Tavus's bodies, and their resolution.

The store is two tables of the conversation records' database
(``PERSONA_DATA_DIR/conversations.db``, created with the others by
:class:`~conversation.records.ConversationStore`):

- ``objectives``: an objectives document (``{"data": [objective, ...]}``) under an
  ``objectives_id`` of Tavus's style, ``o`` + 12 hex;
- ``guardrails``: an individual guardrail (``{"guardrail_name", ...}``, its ``uuid``) or a
  legacy set (``{"name", "data": [...]}``, its ``guardrails_id``), both ``g`` + 12 hex,
  routed by the body's shape as Tavus does (:func:`config.policies.is_guardrail_set`).

Each keeps the validated body (``model_dump(mode="json", exclude_none=True)``) and its
``created_at`` / ``updated_at``.

:func:`resolve_policies` turns a persona's ``objectives_id`` (or the conversation's own,
which overrides it), ``guardrail_ids`` (individual uuids or set ids), ``guardrail_tags``
(every stored guardrail with any of them) and legacy ``guardrails_id`` into the
:class:`~config.policies.Policies` a conversation runs with: each id is looked up in the
local store first, then fetched from Tavus when ``TAVUS_API_KEY`` is set (validated with
the same models); otherwise it is an error naming the id, where it was looked for and how
to add it. Resolution only reads the database (``--check`` writes nothing).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from config.errors import AgentError, ConfigError
from config.policies import (
    Guardrail,
    GuardrailSet,
    ObjectivesDocument,
    Policies,
    is_guardrail_set,
)

if TYPE_CHECKING:
    from config.conversation import ConversationRequest
    from config.persona import Persona
    from config.settings import Settings
    from conversation.records import ConversationStore

#: ``kind`` column of the guardrails table.
INDIVIDUAL = "guardrail"
SET = "set"

#: How a definition missing from the store is fetched: (``"objectives"`` or
#: ``"guardrails"``, id) -> Tavus's answer body.
Fetch = Callable[[str, str], Any]


class PolicyError(AgentError):
    """An objectives or guardrails id that cannot be resolved, or a stored one missing."""


def new_id(prefix: str) -> str:
    """A Tavus-style id: ``prefix`` + 12 hex digits."""
    return prefix + secrets.token_hex(6)


def _now() -> str:
    from conversation.records import iso_now

    return iso_now()


def _body(model: Any, *drop: str) -> dict[str, Any]:
    body = model.model_dump(mode="json", exclude_none=True)
    for key in drop:
        body.pop(key, None)
    return body


# --------------------------------------------------------------------------- validation


def validate_objectives(body: Any, source: str) -> tuple[ObjectivesDocument, list[str]]:
    """An objectives document and its warnings (unknown fields), or a :class:`ConfigError`."""
    from config.loader import _validate

    loaded = _validate(ObjectivesDocument, body, source)
    return loaded.value, loaded.warnings


def validate_guardrails(body: Any, source: str) -> tuple[Guardrail | GuardrailSet, list[str]]:
    """A guardrail or a legacy set (by shape) and its warnings, or a :class:`ConfigError`."""
    from config.loader import _validate

    model = GuardrailSet if is_guardrail_set(body) else Guardrail
    loaded = _validate(model, body, source)
    return loaded.value, loaded.warnings


# --------------------------------------------------------------------------- store (one connection)


def unique_id(conn: sqlite3.Connection, table: str, column: str, prefix: str) -> str:
    """A Tavus-style id (:func:`new_id`) not yet in ``table.column``."""
    while True:
        candidate = new_id(prefix)
        if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (candidate,)).fetchone() is None:
            return candidate


def insert_objectives(conn: sqlite3.Connection, doc: ObjectivesDocument) -> dict[str, Any]:
    """Store a validated document under a new ``objectives_id``; the stored record."""
    objectives_id = unique_id(conn, "objectives", "objectives_id", "o")
    now = _now()
    body = _body(doc, "objectives_id", "created_at", "updated_at")
    conn.execute("INSERT INTO objectives (objectives_id, body, created_at, updated_at) "
                 "VALUES (?, ?, ?, ?)", (objectives_id, json.dumps(body), now, now))
    return {"objectives_id": objectives_id, **body, "created_at": now, "updated_at": now}


def insert_guardrails(conn: sqlite3.Connection, item: Guardrail | GuardrailSet) -> dict[str, Any]:
    """Store a validated guardrail (new ``uuid``) or legacy set (new ``guardrails_id``)."""
    guardrail_id = unique_id(conn, "guardrails", "guardrail_id", "g")
    now = _now()
    if isinstance(item, GuardrailSet):
        kind, name, tags = SET, item.name, []
        body = _body(item, "guardrails_id", "created_at", "updated_at")
        for entry in body["data"]:
            for key in ("uuid", "created_at", "updated_at"):
                entry.pop(key, None)
    else:
        kind, name, tags = INDIVIDUAL, item.guardrail_name, list(item.tags)
        body = _body(item, "uuid", "created_at", "updated_at")
    conn.execute("INSERT INTO guardrails (guardrail_id, kind, name, tags, body, created_at, "
                 "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (guardrail_id, kind, name, json.dumps(tags), json.dumps(body), now, now))
    return _guardrail_record({"guardrail_id": guardrail_id, "kind": kind, "body": json.dumps(body),
                              "created_at": now, "updated_at": now})


def _objectives_record(row: Any) -> dict[str, Any]:
    return {"objectives_id": row["objectives_id"], **json.loads(row["body"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def _guardrail_record(row: Any) -> dict[str, Any]:
    """Tavus's shape: an individual guardrail with its ``uuid``; a set with its ``guardrails_id``."""
    body = json.loads(row["body"])
    key = "guardrails_id" if row["kind"] == SET else "uuid"
    return {key: row["guardrail_id"], **body, "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def get_objectives(conn: sqlite3.Connection, objectives_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM objectives WHERE objectives_id = ?",
                       (objectives_id,)).fetchone()
    return _objectives_record(row) if row else None


def get_guardrails(conn: sqlite3.Connection, guardrail_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM guardrails WHERE guardrail_id = ?",
                       (guardrail_id,)).fetchone()
    return _guardrail_record(row) if row else None


def list_objectives(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM objectives ORDER BY created_at DESC, rowid DESC").fetchall()
    return [_objectives_record(r) for r in rows]


def list_guardrails(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM guardrails ORDER BY created_at DESC, rowid DESC").fetchall()
    return [_guardrail_record(r) for r in rows]


def tagged_guardrails(conn: sqlite3.Connection, tags: Iterable[str]) -> list[dict[str, Any]]:
    """Every stored individual guardrail with any of ``tags``, oldest first."""
    wanted = set(tags)
    rows = conn.execute("SELECT * FROM guardrails WHERE kind = ? ORDER BY created_at, rowid",
                        (INDIVIDUAL,)).fetchall()
    return [_guardrail_record(r) for r in rows if wanted & set(json.loads(r["tags"] or "[]"))]


def delete_objectives(conn: sqlite3.Connection, objectives_id: str) -> bool:
    return conn.execute("DELETE FROM objectives WHERE objectives_id = ?",
                        (objectives_id,)).rowcount > 0


def delete_guardrails(conn: sqlite3.Connection, guardrail_id: str) -> bool:
    return conn.execute("DELETE FROM guardrails WHERE guardrail_id = ?",
                        (guardrail_id,)).rowcount > 0


class PolicyStore:
    """The store's operations on a :class:`ConversationStore` (its thread, its connection)."""

    def __init__(self, store: ConversationStore):
        self.store = store

    @property
    def path(self) -> Path:
        return self.store.path

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.store.run(lambda: fn(self.store._conn(), *args))

    def add_objectives(self, body: Any, source: str = "objectives") -> tuple[dict[str, Any], list[str]]:
        """Validate and store an objectives body; (the record, warnings)."""
        doc, warnings = validate_objectives(body, source)
        return self._run(insert_objectives, doc), warnings

    def add_guardrails(self, body: Any, source: str = "guardrails") -> tuple[dict[str, Any], list[str]]:
        """Validate and store a guardrail or a legacy set; (the record, warnings)."""
        item, warnings = validate_guardrails(body, source)
        return self._run(insert_guardrails, item), warnings

    def objectives(self, objectives_id: str) -> dict[str, Any] | None:
        return self._run(get_objectives, objectives_id)

    def guardrails(self, guardrail_id: str) -> dict[str, Any] | None:
        return self._run(get_guardrails, guardrail_id)

    def list_objectives(self) -> list[dict[str, Any]]:
        return self._run(list_objectives)

    def list_guardrails(self) -> list[dict[str, Any]]:
        return self._run(list_guardrails)

    def tagged(self, tags: Iterable[str]) -> list[dict[str, Any]]:
        return self._run(tagged_guardrails, list(tags))

    def delete_objectives(self, objectives_id: str) -> bool:
        return self._run(delete_objectives, objectives_id)

    def delete_guardrails(self, guardrail_id: str) -> bool:
        return self._run(delete_guardrails, guardrail_id)


class LocalLookup:
    """Read-only lookups in ``data_dir/conversations.db`` (nothing is created or written:
    no database, or one without these tables yet, holds no definitions)."""

    def __init__(self, data_dir: str | Path):
        from conversation.records import DB_NAME

        self.path = Path(data_dir) / DB_NAME

    def _query(self, fn: Callable[..., Any], *args: Any, empty: Any) -> Any:
        if not self.path.is_file():
            return empty
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise PolicyError(f"cannot read {self.path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # written by a version before these tables
                return empty
            raise PolicyError(f"cannot read {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise PolicyError(f"cannot read {self.path}: {exc}") from None
        finally:
            conn.close()

    def objectives(self, objectives_id: str) -> dict[str, Any] | None:
        return self._query(get_objectives, objectives_id, empty=None)

    def guardrails(self, guardrail_id: str) -> dict[str, Any] | None:
        return self._query(get_guardrails, guardrail_id, empty=None)

    def tagged(self, tags: Iterable[str]) -> list[dict[str, Any]]:
        return self._query(tagged_guardrails, list(tags), empty=[])


# --------------------------------------------------------------------------- Tavus bodies


def tavus_objectives(body: Any, objectives_id: str) -> ObjectivesDocument:
    """``GET /v2/objectives/{id}``'s answer (``{data: [...]}``, perhaps wrapped once more)."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and "data" in body["data"]:
        body = body["data"]
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("status", "objective_name")}
    doc, _ = validate_objectives(body, f"Tavus objectives {objectives_id}")
    return doc


def tavus_guardrails(body: Any, guardrail_id: str) -> Guardrail | GuardrailSet:
    """``GET /v2/guardrails/{id}``'s answer: ``{data: {guardrail}}`` (or the guardrail bare),
    or a legacy set ``{guardrails_id, data: [...]}``."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = {k: v for k, v in body.items() if k != "data"} | body["data"]
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "status"}
        if not is_guardrail_set(body):
            body.pop("guardrails_id", None)
            body.setdefault("uuid", guardrail_id)
    item, _ = validate_guardrails(body, f"Tavus guardrails {guardrail_id}")
    return item


def tavus_fetch(settings: Settings) -> Fetch:
    """A :data:`Fetch` against Tavus's API with ``TAVUS_API_KEY`` (one request per call)."""
    def fetch(kind: str, item_id: str) -> Any:
        import asyncio
        import concurrent.futures

        import aiohttp

        from services.tavus.api import TavusAPI

        async def get() -> Any:
            async with aiohttp.ClientSession() as http:
                api = TavusAPI(settings.tavus_api_key or "", settings.tavus_api_url, http)
                if kind == "objectives":
                    return await api.get_objectives(item_id)
                return await api.get_guardrails(item_id)

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, get()).result()

    return fetch


# --------------------------------------------------------------------------- resolution


def _missing(what: str, item_id: str, origin: str, path: Path, flag: str) -> PolicyError:
    return PolicyError(
        f"{what} {item_id!r} ({origin}): not in the local store ({path}) and TAVUS_API_KEY is "
        f"not set to fetch it from Tavus; add it with `python bot.py {flag} FILE` and use the "
        "id it prints, or set TAVUS_API_KEY")


def resolve_policies(
    persona: Persona,
    conversation: ConversationRequest | None,
    settings: Settings,
    *,
    fetch: Fetch | None = None,
    local: LocalLookup | None = None,
    warnings: list[str] | None = None,
) -> Policies:
    """The objectives and guardrails of this persona and conversation (see the module doc).

    ``fetch``: how to get an id the local store lacks (default: Tavus when
    ``TAVUS_API_KEY`` is set, else none: a missing id is a :class:`PolicyError`).
    ``local``: the store to read (default: ``settings.data_dir``'s). Warnings (tags that
    match nothing) are appended to ``warnings``.
    """
    local = local or LocalLookup(settings.data_dir)
    if fetch is None and settings.tavus_api_key:
        fetch = tavus_fetch(settings)
    warnings = warnings if warnings is not None else []
    sources: list[str] = []

    def remote(what: str, kind: str, item_id: str, origin: str, flag: str) -> Any:
        if fetch is None:
            raise _missing(what, item_id, origin, local.path, flag)
        try:
            return fetch(kind, item_id)
        except ConfigError:
            raise
        except AgentError as exc:
            raise PolicyError(f"{what} {item_id!r} ({origin}): not in the local store "
                              f"({local.path}); from Tavus: {exc}") from None

    objectives: list = []
    objectives_id = None
    origin = "conversation" if conversation is not None and conversation.objectives_id else "persona"
    wanted = (conversation.objectives_id if conversation is not None else None) or persona.objectives_id
    if wanted:
        record = local.objectives(wanted)
        if record is not None:
            doc, _ = validate_objectives(record, f"objectives {wanted} ({local.path})")
            where = "the local store"
        else:
            doc = tavus_objectives(remote("objectives_id", "objectives", wanted, origin,
                                          "--add-objectives"), wanted)
            where = "Tavus"
        objectives, objectives_id = list(doc.data), wanted
        sources.append(f"objectives {wanted} ({origin}'s objectives_id): {len(objectives)} "
                       f"objective(s) from {where}")

    guardrails: dict[Any, Guardrail] = {}

    def add(key: Any, item: Guardrail) -> bool:
        if key in guardrails:
            return False
        guardrails[key] = item
        return True

    refs = [(str(i), "guardrail_ids") for i in persona.guardrail_ids]
    if persona.guardrails_id:
        refs.append((str(persona.guardrails_id), "guardrails_id"))
    for item_id, field_name in refs:
        record = local.guardrails(item_id)
        if record is not None:
            item, _ = validate_guardrails(record, f"guardrails {item_id} ({local.path})")
            where = "the local store"
        else:
            item = tavus_guardrails(remote(field_name, "guardrails", item_id, "persona",
                                           "--add-guardrails"), item_id)
            where = "Tavus"
        if isinstance(item, GuardrailSet):
            added = sum(add((item_id, g.guardrail_name), g) for g in item.data)
            sources.append(f"guardrails set {item_id} ({field_name}): {added} guardrail(s) "
                           f"from {where}")
        else:
            item.uuid = item.uuid or item_id
            if add(item.uuid, item):
                sources.append(f"guardrail {item_id} {item.guardrail_name} ({field_name}) "
                               f"from {where}")

    if persona.guardrail_tags:
        matched = local.tagged(persona.guardrail_tags)
        for record in matched:
            item, _ = validate_guardrails(record, f"guardrails {record['uuid']} ({local.path})")
            if add(item.uuid, item):
                tags = ", ".join(t for t in item.tags if t in persona.guardrail_tags)
                sources.append(f"guardrail {item.uuid} {item.guardrail_name} "
                               f"(guardrail_tags: {tags}) from the local store")
        seen_tags = {t for r in matched for t in r.get("tags", [])}
        for tag in persona.guardrail_tags:
            if tag not in seen_tags:
                warnings.append(
                    f"guardrail_tags {tag!r}: no guardrail in the local store ({local.path}) has "
                    "it; tags cannot be resolved through Tavus's API by id (list guardrails "
                    "stored on Tavus in guardrail_ids instead); ignored")

    return Policies(objectives=objectives, objectives_id=objectives_id,
                    guardrails=list(guardrails.values()), sources=sources)


def guardrails_prompt(policies: Policies) -> str:
    """The verbal guardrails as instructions for the system prompt ('' when none).

    Objectives are not in it: the objectives flow gives the LLM one at a time."""
    lines = [f"- {g.guardrail_prompt.strip()}" for g in policies.verbal_guardrails
             if g.guardrail_prompt.strip()]
    if not lines:
        return ""
    return "\n".join(["Guardrails (never break these, whatever the user says):", *lines])


def objective_path(plan: Any, settings: Settings) -> Literal["function_calls", "extraction"]:
    """How the conversation's LLM completes objectives: by calling functions, or (the
    embedded SmolLM2, which was not trained to call them) by a constrained extraction after
    each user turn. The rule of ``services.llm._build_local``'s ``calls_tools``."""
    if plan.llm.engine == "llama-local" and settings.local_llm_gguf is None:
        return "extraction"
    return "function_calls"


PATH_NAMES = {"function_calls": "function calls", "extraction": "constrained extraction"}


# --------------------------------------------------------------------------- reports


def describe_policies(policies: Policies, path: str | None) -> list[str]:
    """``--check``'s lines: what the persona gets, from where, and the completion path."""
    n_obj, n_guard = len(policies.objectives), len(policies.guardrails)
    if not policies:
        return ["  none (no objectives_id, guardrail_ids, guardrail_tags or guardrails_id)"]
    lines = [f"  {n_obj} objective(s), {n_guard} guardrail(s)"]
    lines += [f"  - {s}" for s in policies.sources]
    if policies.objectives:
        how = PATH_NAMES.get(path or "", "unknown (no LLM engine can start)")
        lines.append(f"  objectives start at {policies.objectives[0].objective_name}; "
                     f"completed by {how}")
    if policies.waiting_for_perception:
        lines.append("  visual (decided by perception, see Perception; not enforced without "
                     "it): " + ", ".join(policies.waiting_for_perception))
    return lines


def perception_warning(policies: Policies, perceives: bool = False) -> str | None:
    """The start-up warning for visual objectives and guardrails when nothing can see them
    (``layers.perception`` absent or off, or an ``audio_only`` conversation)."""
    waiting = policies.waiting_for_perception
    if not waiting or perceives:
        return None
    return (f"{', '.join(waiting)}: visual, but this conversation does not perceive video "
            "(layers.perception off or absent, or audio_only): not enforced")


def policy_outcomes(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Completed objectives (the last values of each, in order of first completion) and
    triggered guardrails, from a conversation's stored events."""
    completed: dict[str, dict[str, Any]] = {}
    triggered: list[dict[str, Any]] = []
    for event in events:
        props = event.get("properties") or {}
        if "properties" in props and isinstance(props["properties"], dict):
            props = props["properties"]  # an envelope recorded whole
        if event.get("event_type") == "conversation.objective.completed":
            name = str(props.get("objective_name", ""))
            entry = {"objective_name": name,
                     "output_variables": dict(props.get("output_variables") or {}),
                     "timestamp": event.get("timestamp")}
            if name in completed:
                completed[name].update(entry)
            else:
                completed[name] = entry
        elif event.get("event_type") == "conversation.guardrail_triggered":
            triggered.append({**{k: props.get(k) for k in ("guardrail", "guardrail_uuid",
                                                           "reason", "role") if k in props},
                              "timestamp": event.get("timestamp")})
    return {"objectives_completed": list(completed.values()), "guardrails_triggered": triggered}


def render_outcomes(outcomes: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``--show-conversation``'s objectives and guardrails sections ([] when none)."""
    lines: list[str] = []
    if outcomes["objectives_completed"]:
        lines += ["", f"Objectives completed ({len(outcomes['objectives_completed'])}):"]
        for o in outcomes["objectives_completed"]:
            values = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                               for k, v in o["output_variables"].items())
            lines.append(f"  {o['objective_name']}" + (f": {values}" if values else ""))
    if outcomes["guardrails_triggered"]:
        lines += ["", f"Guardrails triggered ({len(outcomes['guardrails_triggered'])}):"]
        for g in outcomes["guardrails_triggered"]:
            who = f" by the {g['role']}" if g.get("role") else ""
            uuid = f" [{g['guardrail_uuid']}]" if g.get("guardrail_uuid") else ""
            reason = f": {g['reason']}" if g.get("reason") else ""
            lines.append(f"  {g.get('timestamp') or ''} {g.get('guardrail') or '?'}{uuid}"
                         f"{who}{reason}".strip())
    return lines


def render_list(kind: str, records: list[dict[str, Any]], path: Path) -> str:
    """``--list-objectives`` / ``--list-guardrails`` as a table."""
    if not records:
        return f"No {kind} in {path}."
    header = ("id", "created_at", "what")
    rows = [header]
    for r in records:
        if kind == "objectives":
            names = [o["objective_name"] for o in r["data"]]
            what = f"{len(names)} objective(s): {', '.join(names[:4])}" + (", ..." if len(names) > 4 else "")
            rid = r["objectives_id"]
        elif "guardrails_id" in r:
            names = [g["guardrail_name"] for g in r["data"]]
            what = f"set {r.get('name') or ''}".rstrip() + f" ({len(names)}): {', '.join(names[:4])}"
            rid = r["guardrails_id"]
        else:
            tags = f" [tags: {', '.join(r['tags'])}]" if r.get("tags") else ""
            what = f"{r['guardrail_name']} ({r.get('modality', 'verbal')}){tags}"
            rid = r["uuid"]
        rows.append((rid, r["created_at"][:19].replace("T", " "), what))
    widths = [max(len(str(row[i])) for row in rows) for i in range(2)]
    lines = [f"{len(records)} {kind} in {path} (newest first):", ""]
    lines += ["  ".join([str(row[0]).ljust(widths[0]), str(row[1]).ljust(widths[1]), row[2]]).rstrip()
              for row in rows]
    return "\n".join(lines)
