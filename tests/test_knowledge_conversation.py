"""The knowledge base and memories in a live conversation (the real pipeline, the scripted
fake LLM): a question only the document answers, passages replaced each turn, the
rag.observability event, a search that misses its budget; memories carried into the
next conversation with the same tag and not into one with another, extracted after a
killed bot on the next start, and deleted on request."""

from __future__ import annotations

import asyncio
import json

import pytest

from knowledge import documents as docs
from knowledge import memories as mem
from knowledge.cli import main as kb_main
from knowledge.fetch import AddressPolicy
from knowledge.store import KnowledgeStore
from tests.harness import Harness

MANUAL = """# Zephyr 9 owner's manual

The Zephyr 9 blender carries a warranty of thirty seven months from the date of purchase.

To descale the jug, fill it with one part white vinegar and three parts water and run the pulse cycle.

The lid gasket is a part numbered ZG-4471 and can be ordered from the service desk.
"""
PERSONA = {"persona_name": "Ava", "system_prompt": "You are Ava, a support agent.",
           "layers": {"llm": {"model": "fake-model", "api_key": "test-key"}}}


async def add_manual(tmp_path, tags=("manuals",)) -> str:
    path = tmp_path / "manual.md"
    path.write_text(MANUAL)
    store = KnowledgeStore(tmp_path / "data")
    document = docs.create_document(store, {"document_url": str(path), "tags": list(tags),
                                            "document_name": "Zephyr manual"})
    done = await docs.process(store, document["document_id"], policy=AddressPolicy(),
                              notify=lambda d: None)
    assert done["status"] == "ready"
    return done["document_id"]


def system_of(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"]
                     if m["role"] == "system" and isinstance(m["content"], str))


async def say(h: Harness, text: str) -> None:
    before = len(h.of("conversation.replica.stopped_speaking"))
    await h.send({"event_type": "conversation.respond", "properties": {"text": text}})
    await h.wait_for("conversation.replica.stopped_speaking", count=before + 1, timeout=30)
    await asyncio.sleep(0.3)


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_a_question_only_the_document_answers_gets_its_passage(harness, tmp_path):
    document_id = await add_manual(tmp_path)
    h = await harness.start(
        persona={**PERSONA, "document_ids": [document_id]},
        conversation={"document_retrieval_strategy": "quality"},
        answers=["It is covered for thirty seven months from purchase.", "Happy to help."])
    await say(h, "How long is my Zephyr blender under warranty?")
    system = system_of(h.fake.requests[-1])
    assert "thirty seven months" in system and "Zephyr manual" in system
    assert "You are Ava" in system  # the persona's prompt stays
    rag = await h.wait_for("conversation.rag.observability")
    assert rag[0]["properties"] == {"document_ids": [document_id],
                                    "document_names": ["Zephyr manual"]}
    await say(h, "What part number is the lid gasket?")
    system = system_of(h.fake.requests[-1])
    assert "ZG-4471" in system
    assert system.count("Passages from the knowledge base") == 1  # replaced, not appended
    assert len(h.of("conversation.rag.observability")) == 1  # that reply used no passage
    record = h.session.lifecycle.store
    record.flush()
    events = [e["event_type"] for e in record.run(record.events, h.built.conversation_id)]
    assert "conversation.rag.observability" in events


async def test_documents_by_tag_and_the_conversations_own_ids(harness, tmp_path):
    document_id = await add_manual(tmp_path, tags=("zephyr",))
    h = await harness.start(persona=PERSONA, conversation={"document_tags": ["zephyr"]},
                            answers=["Hello.", "Vinegar and water."])
    await say(h, "How do I descale the jug?")
    assert "white vinegar" in system_of(h.fake.requests[-1])
    assert list(h.session.knowledge.retriever.documents) == [document_id]


async def test_a_search_that_misses_its_budget_is_skipped_for_that_turn(harness, tmp_path,
                                                                         monkeypatch):
    document_id = await add_manual(tmp_path)
    from knowledge.retrieval import Retriever

    real = Retriever.search_now

    def slow(self, query):
        import time

        time.sleep(1.0)
        return real(self, query)

    h = await harness.start(persona={**PERSONA, "document_ids": [document_id]},
                            answers=["Hello.", "I am not sure.", "Sure."],
                            env={"KNOWLEDGE_BUDGET_SECS": "0.2"})
    monkeypatch.setattr(Retriever, "search_now", slow)
    await say(h, "How long is the warranty?")
    assert "Passages from the knowledge base" not in system_of(h.fake.requests[-1])
    assert h.built.knowledge.skipped == 1
    monkeypatch.setattr(Retriever, "search_now", real)
    await say(h, "How long is the warranty?")
    assert "thirty seven months" in system_of(h.fake.requests[-1])


def memory_route(facts_by_conversation: list[list[str]], seen: list[str]):
    """Answers the memory extraction (schema ``user_memories``) with the next facts."""

    def route(body):
        fmt = body.get("response_format") or {}
        if (fmt.get("json_schema") or {}).get("name") != "user_memories":
            return None
        seen.append(body["messages"][-1]["content"])
        facts = facts_by_conversation.pop(0) if facts_by_conversation else []
        return json.dumps({"facts": facts})

    return route


async def converse(tmp_path, name: str, conversation: dict, facts: list[list[str]],
                   seen: list[str], text: str = "My name is Anna and I love hiking."):
    h = Harness(tmp_path / name)
    h.tmp_path.mkdir()
    h.tmp_path.joinpath("data").symlink_to(tmp_path / "data", target_is_directory=True)
    try:
        await h.start(persona=PERSONA, conversation=conversation,
                      answers=["Hello.", "Nice to meet you."])
        h.fake.route = memory_route(facts, seen)
        await say(h, text)
        first_system = system_of(h.fake.requests[0])
    finally:
        await h.stop()
    return h, first_system


async def test_memories_carry_into_the_next_conversation_with_the_same_tag_only(tmp_path):
    (tmp_path / "data").mkdir()
    seen: list[str] = []
    _h, first = await converse(tmp_path, "one", {"memory_stores": ["anna-p1"]},
                               [["The user's name is Anna.", "The user loves hiking."]], seen)
    assert "remember" not in first
    assert seen and "User: My name is Anna and I love hiking." in seen[0]
    store = KnowledgeStore(tmp_path / "data")
    assert [m["fact"] for m in mem.list_memories(store, "anna-p1")] == [
        "The user's name is Anna.", "The user loves hiking."]
    _h, second = await converse(tmp_path, "two", {"memory_stores": ["anna-p1"]}, [[]], seen,
                                text="What should I do this weekend?")
    assert "The user loves hiking." in second and "The user's name is Anna." in second
    _h, other = await converse(tmp_path, "three", {"memory_stores": ["bob-p1"]}, [[]], seen)
    assert "hiking" not in other and "Anna" not in other
    _h, none = await converse(tmp_path, "four", {}, [], seen)
    assert "hiking" not in none


async def test_a_killed_bots_memories_are_extracted_on_the_next_start(tmp_path):
    (tmp_path / "data").mkdir()
    store = KnowledgeStore(tmp_path / "data")
    from conversation.records import ConversationStore

    records = ConversationStore(tmp_path / "data")
    records.run(records.create, "cdead00000001", status="ended")
    records.run(records.append_transcript, "cdead00000001",
                {"role": "user", "content": "I am allergic to peanuts."})
    mem.open_job(store, "cdead00000001", ["carol"])
    store.conn().execute("UPDATE memory_jobs SET pid = 999999999 WHERE conversation_id = ?",
                         ("cdead00000001",))
    records.close()
    seen: list[str] = []
    h = Harness(tmp_path / "next")
    h.tmp_path.mkdir()
    h.tmp_path.joinpath("data").symlink_to(tmp_path / "data", target_is_directory=True)
    facts = [["The user is allergic to peanuts."]]
    try:
        await h.start(persona=PERSONA, answers=["Hello."])
        h.fake.route = memory_route(facts, seen)
        # The catch-up started with the session, before the route was set: a second look.
        from knowledge.session import _catch_up

        await _catch_up(h.session.services.llm, store, h.session.lifecycle.store)
    finally:
        await h.stop()
    assert [m["fact"] for m in mem.list_memories(store, "carol")] == [
        "The user is allergic to peanuts."]
    row = store.conn().execute("SELECT status FROM memory_jobs").fetchone()
    assert row[0] == "done"


def test_memories_are_listed_deleted_and_a_user_forgotten(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERSONA_DOTENV", "0")
    store = KnowledgeStore(tmp_path / "data")
    mem.add_facts(store, ["anna-p1", "anna_p2"], ["The user likes tea."], "c1")
    mem.add_facts(store, ["annabel"], ["The user is called Annabel."], "c2")
    mem.add_facts(store, ["bob"], ["The user is Bob."], "c3")
    mem.open_job(store, "c4", ["anna-p1"])
    assert kb_main(["memories", "list", "anna-p1"]) == 0
    assert "likes tea" in capsys.readouterr().out
    assert kb_main(["memories", "forget", "anna"]) == 0  # without --yes: shows, keeps
    shown = capsys.readouterr().out
    assert "anna-p1: 1" in shown and "anna_p2: 1" in shown and "--yes" in shown
    assert mem.list_memories(store, "anna-p1")
    assert kb_main(["memories", "forget", "anna", "--yes"]) == 0
    assert "anna-p1, anna_p2" in capsys.readouterr().out
    assert mem.list_memories(store, "anna-p1") == [] and mem.list_memories(store, "anna_p2") == []
    assert mem.list_memories(store, "annabel")  # another user whose name starts the same
    assert mem.claim_job(store, "c4") is None  # the pending extraction would re-create them
    assert kb_main(["memories", "delete", "bob"]) == 0
    assert mem.list_memories(store, "bob") == []
    assert mem.recall_now(store, ["bob", "anna-p1"]) == []


def test_an_extraction_finishing_after_its_tag_was_deleted_adds_nothing(tmp_path):
    store = KnowledgeStore(tmp_path / "data")
    mem.open_job(store, "c9", ["dora"])
    assert mem.claim_job(store, "c9") == ["dora"]  # extraction under way ...
    mem.delete_memories(store, "dora")  # ... when the user asks to be forgotten
    assert mem.add_facts(store, ["dora"], ["The user is Dora."], "c9") == 0
    mem.finish_job(store, "c9")
    assert mem.list_memories(store, "dora") == []


def test_pending_jobs_are_extracted_only_by_their_own_persona(tmp_path):
    from conversation.records import ConversationStore

    ConversationStore(tmp_path / "data").close()
    store = KnowledgeStore(tmp_path / "data")
    mem.open_job(store, "c1", ["t"], persona="personas/a.json:A")
    store.conn().execute("UPDATE memory_jobs SET pid = 999999999")
    assert mem.orphaned_jobs(store, set(), "personas/b.json:B") == []
    assert mem.orphaned_jobs(store, set(), "personas/a.json:A") == ["c1"]
