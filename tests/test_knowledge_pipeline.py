"""The knowledge processors' state alone (no pipeline): the prefetch started on the final
transcript is the search the turn uses; a different turn searches again; passages are
one replaced part of the instruction; what the rag event names; ``--check``'s lines."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from knowledge.store import Passage
from pipeline.knowledge import KnowledgeContext


class CountingRetriever:
    def __init__(self, delay: float = 0.0):
        self.queries: list[str] = []
        self.delay = delay

    async def search(self, query: str):
        self.queries.append(query)
        await asyncio.sleep(self.delay)
        return [Passage(1, "d1", "Manual", "manual.md", f"About {query}: the warranty is "
                        "thirty seven months.", 1.0)]


def llm():
    from pipecat.services.openai.llm import OpenAILLMService

    return OpenAILLMService(api_key="k-dummy", settings=OpenAILLMService.Settings(
        model="m", system_instruction="You are Ava."))


async def test_the_prefetch_on_the_final_transcript_is_the_search_the_turn_uses():
    retriever = CountingRetriever(delay=0.05)
    kb = KnowledgeContext(retriever, None, llm=llm())
    kb.heard("How long is")
    await asyncio.sleep(0.01)  # that search is under way when the rest of the turn is heard
    kb.heard("the warranty?")
    passages = await kb.passages_for("How long is the warranty?")
    assert retriever.queries == ["How long is", "How long is the warranty?"]
    assert passages and "the warranty?" in passages[0].text
    other = await kb.passages_for("And the motor?")  # typed, no transcript: searched now
    assert retriever.queries[-1] == "And the motor?" and other


async def test_passages_are_one_part_of_the_instruction_replaced_each_turn():
    service = llm()
    kb = KnowledgeContext(CountingRetriever(), "What you remember: - likes tea", llm=service)
    kb.apply(await kb.passages_for("first question"))
    first = service.settings.system_instruction
    assert first.startswith("You are Ava.") and "first question" in first and "likes tea" in first
    kb.apply(await kb.passages_for("second question"))
    second = service.settings.system_instruction
    assert "second question" in second and "first question" not in second
    assert second.count("Passages from the knowledge base") == 1
    kb.apply([])
    assert service.settings.system_instruction.endswith("likes tea")  # memories stay


async def test_a_slow_search_is_skipped_and_counted():
    kb = KnowledgeContext(CountingRetriever(delay=1.0), None, llm=llm(), budget_secs=0.05)
    assert await kb.passages_for("slow") is None
    assert kb.skipped == 1


async def test_the_rag_event_names_documents_the_reply_drew_on():
    sent = []

    async def emit(event_type, properties):
        sent.append((event_type, properties))

    kb = KnowledgeContext(CountingRetriever(), None, llm=llm(), emit=emit)
    kb.apply(await kb.passages_for("warranty"))
    kb.reply_done("Sure, I can help with that.")
    await asyncio.sleep(0.01)
    assert sent == []
    kb.reply_done("The warranty lasts thirty seven months.")
    kb.apply([])  # the next turn replaces the passages before the report runs
    await asyncio.sleep(0.01)
    assert sent == [("conversation.rag.observability",
                     {"document_ids": ["d1"], "document_names": ["Manual"]})]


def test_check_lists_the_scope_without_creating_the_database(tmp_path):
    from config import Settings, conversation_from_dict, persona_from_dict
    from config.app import AppConfig
    from knowledge.session import describe_knowledge

    settings = Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path / "data")})
    persona = persona_from_dict({"persona_name": "A", "system_prompt": "x",
                                 "document_ids": ["d0123456789ab"]}).value
    conversation = conversation_from_dict({"document_tags": ["hr"],
                                           "memory_stores": ["anna"]}).value
    warnings: list[str] = []
    lines = describe_knowledge(AppConfig.of(persona, conversation, settings), warnings)
    assert any("d0123456789ab: not in the local knowledge base" in line for line in lines)
    assert warnings == ["document d0123456789ab is not in the local knowledge base: it is not "
                        "searched"]
    assert any("tag hr: 0 document(s)" in line for line in lines)
    assert any("memories anna: 0 stored" in line for line in lines)
    assert not (tmp_path / "data").exists()
    bare = describe_knowledge(AppConfig.of(persona_from_dict(
        {"persona_name": "A", "system_prompt": "x"}).value, None, settings))
    assert bare == [SimpleNamespace(x="  none (document_ids / document_tags / memory_stores unset)").x]
