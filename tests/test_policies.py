"""Objectives and guardrails we own: the local store, the CLI, resolution, reports (offline)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from config.conversation import ConversationRequest
from config.errors import ConfigError
from config.persona import Persona
from config.settings import Settings
from conversation.policies import (
    LocalLookup,
    PolicyError,
    PolicyStore,
    objective_path,
    policy_outcomes,
    resolve_policies,
)
from conversation.records import ConversationStore
from tests.conftest import PERSONAS, ROOT
from tests.fake_rest import FakeTavus

BOT = str(ROOT / "bot.py")
EXAMPLES = ROOT / "examples"
INTAKE = EXAMPLES / "objectives" / "patient_intake.json"
NO_ADVICE = EXAMPLES / "guardrails" / "no_medical_advice.json"
HEALTH_SET = EXAMPLES / "guardrails" / "healthcare_set.json"

OBJECTIVES_ID = re.compile(r"^o[0-9a-f]{12}$")
GUARDRAIL_ID = re.compile(r"^g[0-9a-f]{12}$")


def run_bot(*args: str, data: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base.update({"PERSONA_DOTENV": "0", "LOG_LEVEL": "INFO", "PERSONA_DATA_DIR": str(data)})
    base.update(env or {})
    return subprocess.run([sys.executable, BOT, *args], capture_output=True, text=True, env=base,
                          cwd=ROOT, timeout=120)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _settings(data: Path, **env: str) -> Settings:
    return Settings.from_env({"PERSONA_DATA_DIR": str(data), **env})


def _persona(**fields) -> Persona:
    return Persona(system_prompt="You are a clinic receptionist.", **fields)


@pytest.fixture
def store(tmp_path):
    opened = ConversationStore(tmp_path / "data")
    yield PolicyStore(opened)
    opened.close()


# --------------------------------------------------------------------------- the store


def test_store_round_trip(store, tmp_path):
    objectives, warnings = store.add_objectives(_read(INTAKE))
    assert warnings == [] and OBJECTIVES_ID.match(objectives["objectives_id"])
    assert objectives["created_at"] == objectives["updated_at"]
    guardrail, _ = store.add_guardrails(_read(NO_ADVICE))
    legacy, _ = store.add_guardrails(_read(HEALTH_SET))
    assert GUARDRAIL_ID.match(guardrail["uuid"]) and "guardrails_id" not in guardrail
    assert GUARDRAIL_ID.match(legacy["guardrails_id"]) and "uuid" not in legacy
    assert guardrail["tags"] == ["healthcare", "compliance"]

    shown = store.objectives(objectives["objectives_id"])
    assert shown == objectives
    assert [o["objective_name"] for o in shown["data"]][:2] == ["ask_if_new_patient",
                                                                "new_patient_intake"]
    assert store.guardrails(guardrail["uuid"]) == guardrail
    assert store.guardrails(legacy["guardrails_id"])["data"][1]["modality"] == "visual"
    assert [r["objectives_id"] for r in store.list_objectives()] == [objectives["objectives_id"]]
    assert {r.get("uuid") or r.get("guardrails_id") for r in store.list_guardrails()} == {
        guardrail["uuid"], legacy["guardrails_id"]}
    assert [r["uuid"] for r in store.tagged(["compliance", "other"])] == [guardrail["uuid"]]

    # a second process's store opens the same database and sees the same definitions
    second = ConversationStore(tmp_path / "data")
    try:
        assert PolicyStore(second).objectives(objectives["objectives_id"]) == objectives
    finally:
        second.close()
    assert LocalLookup(tmp_path / "data").guardrails(guardrail["uuid"]) == guardrail

    assert store.delete_objectives(objectives["objectives_id"]) is True
    assert store.delete_objectives(objectives["objectives_id"]) is False
    assert store.objectives(objectives["objectives_id"]) is None
    assert store.delete_guardrails(legacy["guardrails_id"]) is True
    assert [r["uuid"] for r in store.list_guardrails()] == [guardrail["uuid"]]


def test_lookup_reads_nothing_it_cannot_and_creates_nothing(tmp_path):
    missing = tmp_path / "none"
    assert LocalLookup(missing).objectives("o123") is None
    assert not missing.exists()
    older = tmp_path / "older"  # a database of a version before these tables
    older.mkdir()
    sqlite3.connect(older / "conversations.db").execute("CREATE TABLE t (x)").connection.close()
    assert LocalLookup(older).guardrails("g1") is None and LocalLookup(older).tagged(["a"]) == []


# --------------------------------------------------------------------------- the command line


def test_cli_round_trip(tmp_path):
    data = tmp_path / "data"
    added = run_bot("--add-objectives", str(INTAKE), data=data)
    assert added.returncode == 0, added.stderr
    objectives_id = added.stdout.strip()
    assert OBJECTIVES_ID.match(objectives_id)
    uuid = run_bot("--add-guardrails", str(NO_ADVICE), data=data).stdout.strip()
    set_id = run_bot("--add-guardrails", str(HEALTH_SET), data=data).stdout.strip()
    assert GUARDRAIL_ID.match(uuid) and GUARDRAIL_ID.match(set_id) and uuid != set_id

    listed = run_bot("--list-objectives", data=data)
    assert listed.returncode == 0 and objectives_id in listed.stdout
    assert "5 objective(s): ask_if_new_patient" in listed.stdout
    listing = json.loads(run_bot("--list-guardrails", "--json", data=data).stdout)
    assert listing["total_count"] == 2
    assert {r.get("uuid") or r.get("guardrails_id") for r in listing["data"]} == {uuid, set_id}
    table = run_bot("--list-guardrails", data=data).stdout
    assert "no_medical_advice (verbal) [tags: healthcare, compliance]" in table
    assert "set Healthcare compliance (2)" in table

    shown = json.loads(run_bot("--show-objectives", objectives_id, data=data).stdout)
    assert shown["objectives_id"] == objectives_id and len(shown["data"]) == 5
    assert json.loads(run_bot("--show-guardrails", uuid, data=data).stdout)["uuid"] == uuid

    deleted = run_bot("--delete-objectives", objectives_id, data=data)
    assert deleted.returncode == 0 and f"Deleted objectives {objectives_id}" in deleted.stdout
    assert "No objectives in" in run_bot("--list-objectives", data=data).stdout
    assert run_bot("--delete-guardrails", set_id, data=data).returncode == 0


@pytest.mark.parametrize("args", [
    ["--show-objectives", "o000000000000"], ["--delete-objectives", "o000000000000"],
    ["--show-guardrails", "g000000000000"], ["--delete-guardrails", "g000000000000"],
])
def test_cli_unknown_id_is_one_line(tmp_path, args):
    result = run_bot(*args, data=tmp_path / "data")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: no ") and "'" + args[1] + "'" in lines[0]
    assert "conversations.db" in lines[0]


def _objective(name: str, **fields) -> dict:
    return {"objective_name": name, "objective_prompt": f"Do {name}.", **fields}


BAD_DEFINITIONS = {
    "unknown next, unreachable, spaces, too long": ("--add-objectives", {"data": [
        _objective("start here", next_required_objectives=["nowhere"]),
        _objective("orphan", objective_prompt="w" * 4001),
    ]}, [
        "data[0].objective_name: must be a name without spaces",
        "data[0].next_required_objectives[0]: names no objective in data (got \"nowhere\")",
        "data[1].objective_prompt: String should have at most 4000 characters",
        "data[1].objective_name: cannot be reached from the first objective (start here)",
    ]),
    "cycle with no exit": ("--add-objectives", {"data": [
        _objective("first", next_required_objectives=["loop_a"]),
        _objective("loop_a", next_conditional_objectives={"loop_b": "If they agree"}),
        _objective("loop_b", next_required_objectives=["loop_a"]),
    ]}, [
        "data[0].objective_name: leads only into a cycle with no way out",
        "data[1].objective_name: leads only into a cycle with no way out",
        "data[2].objective_name: leads only into a cycle with no way out",
    ]),
    "guardrail name and prompt": ("--add-guardrails", {
        "guardrail_name": "no medical advice", "guardrail_prompt": "p" * 1001}, [
        "guardrail_name: must be letters, digits and _ only",
        "guardrail_prompt: String should have at most 1000 characters",
    ]),
    "more than 50 guardrails in a set": ("--add-guardrails", {"name": "big", "data": [
        {"guardrail_name": f"rule_{i}", "guardrail_prompt": "Be kind."} for i in range(51)]}, [
        "data: List should have at most 50 items",
    ]),
}


@pytest.mark.parametrize("case", list(BAD_DEFINITIONS))
def test_bad_definition_lists_every_problem(tmp_path, case):
    flag, body, expected = BAD_DEFINITIONS[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    data = tmp_path / "data"
    result = run_bot(flag, str(path), data=data)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{path}: {len(expected)} problem{'s' if len(expected) > 1 else ''}:"
    for want in expected:
        assert any(line.startswith(f"  - {want}") for line in lines[1:]), (want, lines)
    assert len(lines) == len(expected) + 1
    assert not data.exists()  # nothing is opened or created for a bad file


def test_cli_file_that_is_not_json_is_one_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [,]}')
    result = run_bot("--add-objectives", str(path), data=tmp_path / "data")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: invalid JSON at line 1 column 11: Expecting value (a trailing comma?)"]


# --------------------------------------------------------------------------- resolution


def test_resolution_by_ids_tags_and_legacy_set(store, tmp_path):
    objectives, _ = store.add_objectives(_read(INTAKE))
    guardrail, _ = store.add_guardrails(_read(NO_ADVICE))
    legacy, _ = store.add_guardrails(_read(HEALTH_SET))
    other, _ = store.add_guardrails({"guardrail_name": "polite", "guardrail_prompt": "Be polite.",
                                     "tags": ["tone"]})
    persona = _persona(objectives_id=objectives["objectives_id"],
                       guardrail_ids=[guardrail["uuid"]], guardrail_tags=["compliance", "tone"],
                       guardrails_id=legacy["guardrails_id"])
    warnings: list[str] = []
    policies = resolve_policies(persona, None, _settings(tmp_path / "data"), warnings=warnings)
    assert policies.objectives_id == objectives["objectives_id"]
    assert [o.objective_name for o in policies.objectives][0] == "ask_if_new_patient"
    # no_medical_advice through its id and its tag: once
    assert [g.guardrail_name for g in policies.guardrails] == [
        "no_medical_advice", "no_sensitive_data_readback", "participant_alone", "polite"]
    assert policies.guardrails[0].uuid == guardrail["uuid"]
    assert policies.waiting_for_perception == ["guardrail participant_alone"]
    assert warnings == []
    assert any("from the local store" in s and objectives["objectives_id"] in s
               for s in policies.sources)
    assert any(other["uuid"] in s and "guardrail_tags: tone" in s for s in policies.sources)


def test_the_conversations_objectives_override_the_personas(store, tmp_path):
    first, _ = store.add_objectives(_read(INTAKE))
    second, _ = store.add_objectives({"data": [_objective("ask_destination")]})
    persona = _persona(objectives_id=first["objectives_id"])
    conversation = ConversationRequest(objectives_id=second["objectives_id"])
    policies = resolve_policies(persona, conversation, _settings(tmp_path / "data"))
    assert [o.objective_name for o in policies.objectives] == ["ask_destination"]
    assert policies.objectives_id == second["objectives_id"]
    assert "conversation's objectives_id" in policies.sources[0]
    plain = resolve_policies(persona, ConversationRequest(), _settings(tmp_path / "data"))
    assert plain.objectives_id == first["objectives_id"]


def test_tags_matching_nothing_are_a_warning(tmp_path):
    warnings: list[str] = []
    policies = resolve_policies(_persona(guardrail_tags=["nothing"]), None,
                                _settings(tmp_path / "data"), warnings=warnings)
    assert not policies
    assert len(warnings) == 1 and "guardrail_tags 'nothing'" in warnings[0]
    assert "cannot be resolved through Tavus" in warnings[0]


def test_more_than_50_guardrails_is_an_error(store, tmp_path):
    for i in range(51):
        store.add_guardrails({"guardrail_name": f"rule_{i}", "guardrail_prompt": "Be kind.",
                              "tags": ["many"]})
    with pytest.raises(ConfigError) as caught:
        resolve_policies(_persona(guardrail_tags=["many"]), None, _settings(tmp_path / "data"))
    assert "at most 50 guardrails" in caught.value.render()


def test_a_missing_id_without_a_key_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(PolicyError) as caught:
        resolve_policies(_persona(objectives_id="o123456789abc"), None, _settings(data))
    message = str(caught.value)
    assert "objectives_id 'o123456789abc' (persona)" in message
    assert str(data / "conversations.db") in message
    assert "--add-objectives FILE" in message and "TAVUS_API_KEY" in message
    with pytest.raises(PolicyError, match="guardrail_ids 'g-remote'.*--add-guardrails"):
        resolve_policies(_persona(guardrail_ids=["g-remote"]), None, _settings(data))


def _fake_tavus() -> FakeTavus:
    return FakeTavus(
        objectives={"o-remote": {"data": [_objective("ask_destination",
                                                     output_variables=["destination"])]}},
        guardrails={"g-remote": {"guardrail_name": "no_prices",
                                 "guardrail_prompt": "Never quote prices."},
                    "g-set": {"data": [{"guardrails_name": "no_politics",
                                        "guardrails_prompt": "Avoid politics."}]}},
    )


def test_local_first_then_tavus(store, tmp_path):
    local, _ = store.add_guardrails(_read(NO_ADVICE))
    with _fake_tavus() as fake:
        settings = _settings(tmp_path / "data", TAVUS_API_KEY=fake.api_key,
                             TAVUS_API_URL=fake.base_url)
        persona = _persona(objectives_id="o-remote",
                           guardrail_ids=[local["uuid"], "g-remote", "g-set"])
        policies = resolve_policies(persona, None, settings)
        paths = [r.path for r in fake.requests]
    assert paths == ["/v2/objectives/o-remote", "/v2/guardrails/g-remote", "/v2/guardrails/g-set"]
    assert fake.requests[0].headers["x-api-key"] == fake.api_key
    assert [o.output_variables for o in policies.objectives] == [["destination"]]
    assert [(g.guardrail_name, g.uuid) for g in policies.guardrails] == [
        ("no_medical_advice", local["uuid"]), ("no_prices", "g-remote"), ("no_politics", None)]
    assert any(s.startswith("objectives o-remote") and s.endswith("from Tavus")
               for s in policies.sources)


def test_tavus_bodies_are_validated_and_its_errors_name_the_id(tmp_path):
    with FakeTavus(objectives={"o-bad": {"data": [_objective("a b")]}}) as fake:
        settings = _settings(tmp_path / "data", TAVUS_API_KEY=fake.api_key,
                             TAVUS_API_URL=fake.base_url)
        with pytest.raises(ConfigError) as bad:
            resolve_policies(_persona(objectives_id="o-bad"), None, settings)
        with pytest.raises(PolicyError) as missing:
            resolve_policies(_persona(objectives_id="o-gone"), None, settings)
    assert bad.value.source == "Tavus objectives o-bad"
    assert "data[0].objective_name: must be a name without spaces" in bad.value.render()
    message = str(missing.value)
    assert "objectives_id 'o-gone' (persona): not in the local store" in message
    assert "not found (404" in message


# --------------------------------------------------------------------------- the app and reports


def _persona_file(tmp_path: Path, **fields) -> Path:
    data = json.loads((PERSONAS / "default.json").read_text())
    data.update(fields)
    path = tmp_path / "persona.json"
    path.write_text(json.dumps(data))
    return path


def test_load_app_sets_policies_and_only_guardrails_reach_the_prompt(store, tmp_path, monkeypatch):
    from config.prompt import compose_system_prompt
    from session import launch

    objectives, _ = store.add_objectives(_read(INTAKE))
    legacy, _ = store.add_guardrails(_read(HEALTH_SET))
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    path = _persona_file(tmp_path, objectives_id=objectives["objectives_id"],
                         guardrails_id=legacy["guardrails_id"])
    app = launch.load_app(argparse.Namespace(persona=str(path), conversation=None))
    assert app.policies.objectives_id == objectives["objectives_id"]
    assert len(app.policies.objectives) == 5 and len(app.policies.guardrails) == 2
    prompt = compose_system_prompt(app.persona, app.conversation)
    assert "Never read back insurance numbers" in prompt
    assert "participant is alone" not in prompt  # visual: waits for perception
    assert "ask_if_new_patient" not in prompt and "Greet the caller" not in prompt
    assert any("guardrail participant_alone" in w and "perception" in w for w in app.warnings)


def test_objective_path_follows_the_llm():
    from types import SimpleNamespace

    def plan(engine: str):
        return SimpleNamespace(llm=SimpleNamespace(engine=engine))

    assert objective_path(plan("llama-local"), Settings.from_env({})) == "extraction"
    assert objective_path(plan("llama-local"),
                          Settings.from_env({"LOCAL_LLM_GGUF": "/models/qwen.gguf"})) == "function_calls"
    assert objective_path(plan("openai"), Settings.from_env({})) == "function_calls"


def test_check_reports_objectives_guardrails_and_the_completion_path(tmp_path):
    data = tmp_path / "data"
    objectives_id = run_bot("--add-objectives", str(INTAKE), data=data).stdout.strip()
    uuid = run_bot("--add-guardrails", str(NO_ADVICE), data=data).stdout.strip()
    path = _persona_file(tmp_path, objectives_id=objectives_id, guardrail_tags=["healthcare"])
    result = run_bot("--check", "--persona", str(path), data=data)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    section = out[out.index("Objectives and guardrails:"):]
    assert "5 objective(s), 1 guardrail(s)" in section
    assert f"objectives {objectives_id} (persona's objectives_id): 5 objective(s) from the local store" in section
    assert f"guardrail {uuid} no_medical_advice (guardrail_tags: healthcare) from the local store" in section
    assert "objectives start at ask_if_new_patient; completed by constrained extraction" in section

    plain = run_bot("--check", data=data)
    assert "Objectives and guardrails:\n  none" in plain.stdout


def test_check_with_a_missing_id_is_one_clear_line(tmp_path):
    path = _persona_file(tmp_path, objectives_id="o0123456789ab")
    result = run_bot("--check", "--persona", str(path), data=tmp_path / "data")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: objectives_id 'o0123456789ab' (persona): not in the local store" in result.stderr
    assert not (tmp_path / "data").exists()  # --check writes nothing there


# --------------------------------------------------------------------------- --show-conversation


def _event(event_type: str, timestamp: str, **properties) -> dict:
    return {"event_type": event_type, "message_type": "conversation", "timestamp": timestamp,
            "properties": properties, "conversation_id": "c-policies"}


def test_show_conversation_lists_completed_objectives_and_triggered_guardrails(tmp_path):
    data = tmp_path / "data"
    records = ConversationStore(data)
    try:
        records.run(records.create, "c-policies", persona_name="Ava", transport="text")
        for event in [
            _event("conversation.objective.activated", "2026-01-01T00:00:01Z",
                   objective_name="ask_if_new_patient"),
            _event("conversation.objective.completed", "2026-01-01T00:00:02Z",
                   objective_name="ask_if_new_patient",
                   output_variables={"patient_status": "new"}),
            _event("conversation.guardrail_triggered", "2026-01-01T00:00:03Z",
                   guardrail="no_medical_advice", guardrail_uuid="g0123456789ab",
                   reason="asked for a diagnosis", role="user"),
            _event("conversation.objective.completed", "2026-01-01T00:00:04Z",
                   objective_name="new_patient_intake",
                   output_variables={"patient_name": "Ann Lee"}),
            # re-opened and completed again: its last values
            _event("conversation.objective.completed", "2026-01-01T00:00:05Z",
                   objective_name="ask_if_new_patient",
                   output_variables={"patient_status": "returning"}),
        ]:
            records.run(records.add_event, "c-policies", event)
    finally:
        records.close()

    shown = run_bot("--show-conversation", "c-policies", data=data)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    completed = out[out.index("Objectives completed (2):"):].splitlines()
    assert completed[1:3] == ['  ask_if_new_patient: patient_status="returning"',
                              '  new_patient_intake: patient_name="Ann Lee"']
    assert "Guardrails triggered (1):" in out
    assert ("2026-01-01T00:00:03Z no_medical_advice [g0123456789ab] by the user: "
            "asked for a diagnosis") in out

    record = json.loads(run_bot("--show-conversation", "c-policies", "--json", data=data).stdout)
    assert [(o["objective_name"], o["output_variables"]) for o in record["objectives_completed"]] == [
        ("ask_if_new_patient", {"patient_status": "returning"}),
        ("new_patient_intake", {"patient_name": "Ann Lee"})]
    assert record["guardrails_triggered"][0]["guardrail"] == "no_medical_advice"


def test_outcomes_of_a_conversation_without_them_are_empty():
    assert policy_outcomes([_event("system.replica_joined", "t")]) == {
        "objectives_completed": [], "guardrails_triggered": []}
