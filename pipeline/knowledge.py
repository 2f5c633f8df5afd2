"""The knowledge base and the user's memories in the conversation's context.

Two processors share one :class:`KnowledgeContext`:

- :class:`TranscriptPrefetch` (after STT) starts the search as soon as a final transcript
  arrives, on the turn's text so far, before turn detection has confirmed the turn, so
  the passages are usually ready when the LLM is asked;
- :class:`KnowledgeInjector` (just before the LLM) takes the passages for the turn's user
  message when its ``LLMContextFrame`` passes (searching now if no prefetch matched, e.g.
  typed text), waits for them at most ``KNOWLEDGE_BUDGET_SECS`` (0.3 s) past that moment,
  and puts them with the recalled memories into the system instruction as one part that
  is replaced each turn (so the context never grows with old passages). A search that
  misses its budget is skipped for that turn (logged) and the reply goes on without it.

After the reply, ``conversation.rag.observability`` names the documents whose passages the
reply drew on (content words shared with a passage); none, no event.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from services.pipecat_seam import replace_system_addon

BUDGET_SECS = 0.3
MAX_QUERY_CHARS = 2000
_WORD = re.compile(r"[a-z0-9]+")
_COMMON = frozenset(["about", "after", "again", "also", "and", "any", "are", "back", "because", "been", "before", "being", "but", "can", "could", "did", "does", "doing", "done", "each", "even", "from", "have", "here", "how", "into", "just", "know", "like", "make", "many", "more", "most", "much", "only", "other", "over", "said", "same", "should", "some", "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those", "very", "want", "what", "when", "where", "which", "while", "will", "with", "would", "your", "yours", "you", "the", "for", "not", "was", "were", "has", "had", "its", "our", "out", "one", "two", "yes", "sure", "okay", "well"])


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3 and w not in _COMMON}


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


class KnowledgeContext:
    """The conversation's retriever, memories and the current turn's passages."""

    def __init__(self, retriever: Any | None, memories: str | None, *, llm: Any,
                 budget_secs: float = BUDGET_SECS, max_chars: int = 3000,
                 emit: Callable[[str, dict], Awaitable[Any]] | None = None):
        self.retriever = retriever
        self.memories = memories
        self.llm = llm
        self.budget_secs = budget_secs
        self.max_chars = max_chars
        self.emit = emit
        self._addon: str | None = None
        self._heard: list[str] = []
        self._wanted: str | None = None  # the newest query
        self._runner: asyncio.Task | None = None
        self._done_query: str | None = None  # the last query searched, and its passages
        self._done_result: list[Any] = []
        self._reports: set[asyncio.Task] = set()
        self.passages: list[Any] = []  # those in the instruction now
        self.skipped = 0  # turns whose search missed the budget

    # ------------------------------------------------------------------ searching
    #
    # One search at a time per conversation, the latest query winning: a search cannot be
    # stopped once its thread runs, so queries heard meanwhile replace each other and only
    # the newest runs next (the pool is shared by every conversation of the process).

    def _want(self, query: str) -> asyncio.Task:
        self._wanted = query
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run_latest())
        return self._runner

    async def _run_latest(self) -> None:
        while self._wanted is not None and self._wanted != self._done_query:
            query = self._wanted
            try:
                result = await self.retriever.search(query)
            except Exception as exc:  # noqa: BLE001 - a failed search never stops a reply
                logger.warning(f"Knowledge base: search failed ({type(exc).__name__}: {exc})")
                result = []
            self._done_query, self._done_result = query, result

    def heard(self, text: str) -> None:
        """A final transcript of the user's: search for the turn so far."""
        if self.retriever is None or not text.strip():
            return
        self._heard.append(text.strip())
        query = " ".join(self._heard)[-MAX_QUERY_CHARS:]
        if len(self._heard) > 20:  # a turn never answered (a wake phrase gate): bounded
            self._heard = self._heard[-20:]
        self._want(query)

    async def passages_for(self, user_text: str) -> list[Any] | None:
        """The passages for this turn; None when the search missed the budget."""
        self._heard = []
        if self.retriever is None or not user_text.strip():
            return []
        query = user_text[-MAX_QUERY_CHARS:]
        if self._done_query is not None and _norm(self._done_query) == _norm(query):
            return self._done_result
        runner = self._want(query) if _norm(self._wanted or "") != _norm(query) else self._runner
        try:
            await asyncio.wait_for(asyncio.shield(runner), self.budget_secs)
        except TimeoutError:
            pass
        if self._done_query is not None and _norm(self._done_query) == _norm(query):
            return self._done_result
        self.skipped += 1
        logger.warning(f"Knowledge base: the search missed its {self.budget_secs:g}s budget; "
                       "this turn is answered without passages")
        return None

    # ------------------------------------------------------------------ the instruction

    def instruction(self, passages: list[Any]) -> str | None:
        parts = []
        if self.memories:
            parts.append(self.memories)
        if passages:
            lines, size = [], 0
            for n, passage in enumerate(passages, 1):
                text = passage.text
                room = self.max_chars - size
                if room < 120:
                    break
                text = text if len(text) <= room else text[:room].rsplit(" ", 1)[0] + " ..."
                size += len(text)
                lines.append(f"[{n}] From {passage.document_name} ({passage.source}):\n{text}")
            parts.append("Passages from the knowledge base that may help with the user's last "
                         "message. Answer from them when they are relevant; do not mention them "
                         "or read them out; if they do not answer it, say you do not know.\n\n"
                         + "\n\n".join(lines))
        return "\n\n".join(parts) or None

    def apply(self, passages: list[Any]) -> None:
        self.passages = list(passages)
        new = self.instruction(self.passages)
        if new != self._addon:
            replace_system_addon(self.llm, self._addon, new)
            self._addon = new

    def reply_done(self, reply: str) -> None:
        """The reply to this turn is in: name the documents it drew on (the passages it was
        given, taken now, before the next turn replaces them)."""
        if not self.passages or self.emit is None:
            return
        task = asyncio.get_running_loop().create_task(self._report(reply, list(self.passages)))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, reply: str, passages: list[Any]) -> None:
        said = _content_words(reply)
        used: dict[str, str] = {}
        for passage in passages:
            shared = said & _content_words(passage.text)
            if len(shared) >= 2 or (shared and len(said) <= 3):
                used.setdefault(passage.document_id, passage.document_name)
        if used:
            await self.emit("conversation.rag.observability",
                            {"document_ids": list(used), "document_names": list(used.values())})


class TranscriptPrefetch(FrameProcessor):
    """After STT: every final user transcript starts (or restarts) the turn's search."""

    def __init__(self, knowledge: KnowledgeContext, **kwargs):
        super().__init__(name="KnowledgePrefetch", **kwargs)
        self.knowledge = knowledge

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and not isinstance(frame, InterimTranscriptionFrame):
            self.knowledge.heard(frame.text or "")
        await self.push_frame(frame, direction)


def _last_user_text(context: Any) -> str:
    for message in reversed(context.get_messages()):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "assistant":
            return ""
        if role == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class KnowledgeInjector(FrameProcessor):
    """Before the LLM: the turn's passages (and memories) into the system instruction."""

    def __init__(self, knowledge: KnowledgeContext, **kwargs):
        super().__init__(name="KnowledgeInjector", **kwargs)
        self.knowledge = knowledge

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            text = _last_user_text(frame.context)
            if text:
                passages = await self.knowledge.passages_for(text)
                self.knowledge.apply(passages or [])
            else:
                self.knowledge.apply([])  # a greeting or a check-in: memories only
        await self.push_frame(frame, direction)
