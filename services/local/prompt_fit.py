"""The embedded model's prompt, fitted to its context window (llama.cpp's ``n_ctx``).

Why: llama-cpp-python's server answers a *streamed* chat completion with 200 and starts the
event stream before it tokenizes the prompt. A prompt that does not fit its context then
ends the stream with no chunk at all: its ``ValueError("Requested tokens (22249) exceed
context window of 4096")`` goes to the server's own output, the client sees an empty reply,
and so does every later turn of a conversation whose system prompt is that long (one
100,000-character ``conversation.append_llm_context`` is about 22,000 SmolLM2 tokens).

What :class:`PromptFitter` does, on every request to the embedded engine, so that the
prompt fits ``n_ctx`` minus the reply's ``max_tokens``:

1. the whole prompt's UTF-8 byte count is an upper bound of its token count (a byte-level
   BPE token covers at least one byte), so a prompt that fits by bytes is sent unchanged
   without tokenizing anything: every ordinary turn (the persona's prompt and four short
   messages are a few hundred bytes);
2. otherwise it is counted with the model's own tokenizer (:class:`GGUFTokenizer`, the
   GGUF's vocabulary loaded in this process: no HTTP round trip, exact counts);
3. a system message longer than its share of the budget (all of it but a quarter kept for
   the turns, at most 1,024 tokens) is cut in the middle: its beginning (the persona's
   prompt, which comes first) and its end (the latest appended context and the language
   instruction, which come last) stay, with ``[…]`` between. The cut depends only on the
   system message and the budget, so it is the same on every turn and llama.cpp reuses
   its evaluated prefix instead of prefilling thousands of tokens again; it is cached;
4. the oldest turns are left out until the rest fits (the window still starts at a user
   message); a last message too long on its own is cut in the middle like (3).

Each kind of change is logged once per fitter, at WARNING (a fitter belongs to one
conversation's LLM service). Nothing is ever dropped from a prompt that fits.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

# ChatML, SmolLM2's template: "<|im_start|>{role}\n{content}<|im_end|>\n" adds 5 tokens to a
# message's content (one spare here), the generation prompt "<|im_start|>assistant\n" 3.
TOKENS_PER_MESSAGE = 6
TEMPLATE_TOKENS = 8
# A reply budget when the request names none (llama.cpp would generate until the context is full).
DEFAULT_REPLY_TOKENS = 256
# When a system message must be cut, the turns keep this share of the budget (at most TURNS_MAX).
TURNS_SHARE = 0.25
TURNS_MAX = 1024
# A cut keeps the end of the text too: at most this many tokens, and at most a quarter.
TAIL_MAX = 256
CUT_MARK = "\n\n[…]\n\n"
# Tokenizing a long text costs ~0.5 µs a character: to find a cut, or to tell that a text is
# over a limit, only a slice of it is tokenized, this many characters per token wanted (English
# runs at ~4.6 characters a SmolLM2 token; a slice that holds too few is doubled).
CHARS_PER_TOKEN_SLICE = 6


class GGUFTokenizer:
    """A GGUF model's tokenizer, in process: its vocabulary only (0.15 s to load, no weights).

    Counts exactly what llama.cpp's server counts (``special=True``, as llama-cpp-python
    tokenizes a rendered chat prompt), without asking the server.
    """

    def __init__(self, gguf: Path):
        import llama_cpp  # the server's own package; imported only when a prompt is long

        gguf = Path(gguf)
        with open(gguf, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ValueError(f"{gguf} is not a GGUF file")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode("utf-8"), params)
        if not model:
            raise ValueError(f"llama.cpp could not read the vocabulary of {gguf}")
        self._lib = llama_cpp
        self._model = model  # kept for the process's life (freed at exit)
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.gguf = gguf

    def tokens(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 16  # never more tokens than bytes
        buf = (self._lib.llama_token * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        if n < 0:  # pragma: no cover - more tokens than bytes
            size = -n
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, True)
        return list(buf[:max(n, 0)])

    def count(self, text: str) -> int:
        return len(self.tokens(text))

    def text(self, tokens: list[int]) -> str:
        if not tokens:
            return ""
        arr = (self._lib.llama_token * len(tokens))(*tokens)
        size = len(tokens) * 16 + 16
        out = ctypes.create_string_buffer(size)
        n = self._lib.llama_detokenize(self._vocab, arr, len(tokens), out, size, False, True)
        if n < 0:  # pragma: no cover - a token over 16 bytes on average
            size = -n
            out = ctypes.create_string_buffer(size)
            n = self._lib.llama_detokenize(self._vocab, arr, len(tokens), out, size, False, True)
        return out.raw[:max(n, 0)].decode("utf-8", "ignore")  # a cut may split a character


class ByteCounter:
    """The fallback when the model's tokenizer cannot be loaded: one token per UTF-8 byte.

    An upper bound for byte-level BPE models (SmolLM2's), so what it fits still fits; it
    keeps less than the exact count would (English runs at ~4.6 characters a token).
    """

    @staticmethod
    def tokens(text: str) -> list[int]:
        return list(text.encode("utf-8"))

    @staticmethod
    def count(text: str) -> int:
        return len(text.encode("utf-8"))

    @staticmethod
    def text(tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", "ignore")


_tokenizers: dict[Path, GGUFTokenizer | ByteCounter] = {}
_tokenizers_lock = threading.Lock()


def tokenizer_for(gguf: Path | None) -> GGUFTokenizer | ByteCounter:
    """The process-wide tokenizer of ``gguf`` (loaded once; :class:`ByteCounter` if it cannot be)."""
    if gguf is None:
        return ByteCounter()
    key = Path(gguf)
    with _tokenizers_lock:
        if key not in _tokenizers:
            try:
                _tokenizers[key] = GGUFTokenizer(key)
            except Exception as exc:  # noqa: BLE001 - a missing or foreign file: count bytes
                logger.debug(f"No tokenizer from {key} ({exc}): prompts are fitted by bytes")
                _tokenizers[key] = ByteCounter()
        return _tokenizers[key]


def preload_tokenizer(gguf: Path | None) -> None:
    """Load ``gguf``'s tokenizer in a background thread, so no turn waits for it."""
    if gguf is not None and Path(gguf) not in _tokenizers:
        threading.Thread(target=tokenizer_for, args=(gguf,), name="gguf-tokenizer",
                         daemon=True).start()


def _content_text(message: dict[str, Any]) -> str:
    """What of a message the template renders: its text, and its tool calls as JSON."""
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):  # OpenAI content parts
        text = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    else:
        text = ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"])
    return text


def _byte_bound(message: dict[str, Any]) -> int:
    return len(_content_text(message).encode("utf-8")) + TOKENS_PER_MESSAGE


class PromptFitter:
    """Fits one conversation's prompts to ``n_ctx`` (see the module docstring)."""

    def __init__(self, n_ctx: int, tokenizer: Callable[[], GGUFTokenizer | ByteCounter]):
        self.n_ctx = int(n_ctx)
        self._tokenizer_factory = tokenizer
        self._tokenizer: GGUFTokenizer | ByteCounter | None = None
        self._warned: set[str] = set()
        self._cuts: OrderedDict[tuple[str, int], tuple[str | None, int]] = OrderedDict()
        self._counts: OrderedDict[str, int] = OrderedDict()
        self.changes: list[str] = []  # what the last fit changed ("system", "turns", "message")

    # ------------------------------------------------------------------ counting

    @property
    def tokenizer(self) -> GGUFTokenizer | ByteCounter:
        if self._tokenizer is None:
            self._tokenizer = self._tokenizer_factory()
            if isinstance(self._tokenizer, ByteCounter):
                self._warn("bytes", "The embedded LLM's tokenizer could not be loaded: its "
                           "long prompts are fitted by their byte count (keeping less of them)")
        return self._tokenizer

    def count(self, text: str, limit: int | None = None) -> int:
        """``text``'s tokens; past ``limit`` only "more than ``limit``" is sure (``limit + 1``)."""
        if limit is None:
            return self.tokenizer.count(text)
        tokens, whole = self._head_tokens(text, limit)
        return len(tokens) if whole else limit + 1

    def cut(self, text: str, limit: int) -> str:
        """``text`` cut in the middle to at most ``limit`` tokens: its beginning, ``[…]``, its end."""
        tok = self.tokenizer
        tail_n = min(TAIL_MAX, limit // 4)
        head_n = max(limit - tail_n - tok.count(CUT_MARK) - 2, 0)  # 2: tokens merging at a seam
        head_tokens, _ = self._head_tokens(text, head_n)
        tail = tok.text(self._tail_tokens(text, tail_n)).lstrip() if tail_n else ""
        for _ in range(4):
            head = tok.text(head_tokens[:head_n]).rstrip()
            out = f"{head}{CUT_MARK}{tail}" if tail else head
            over = tok.count(out) - limit
            if over <= 0:
                return out
            head_n = max(head_n - over - 1, 0)
        return tok.text(head_tokens[:max(limit - 1, 0)])

    def _head_tokens(self, text: str, n: int) -> tuple[list[int], bool]:
        """The tokens of a beginning of ``text`` holding more than ``n`` of them, or of all of it
        (then True): a long text is tokenized only as far as needed."""
        tok = self.tokenizer
        size = (n + 1) * CHARS_PER_TOKEN_SLICE
        while True:
            if size >= len(text):
                return tok.tokens(text), True
            tokens = tok.tokens(text[:size])
            if len(tokens) > n:
                return tokens, False
            size *= 2

    def _tail_tokens(self, text: str, n: int) -> list[int]:
        """The last ``n`` tokens of ``text`` (an end slice of it tokenized, not all of it)."""
        if n <= 0:
            return []
        tok = self.tokenizer
        size = (n + 1) * CHARS_PER_TOKEN_SLICE
        while True:
            if size >= len(text):
                return tok.tokens(text)[-n:]
            tokens = tok.tokens(text[-size:])
            if len(tokens) > n:  # the first tokens of a slice may be cut words: not kept
                return tokens[-n:]
            size *= 2

    # ------------------------------------------------------------------ fitting

    def budget(self, reply_tokens: int | None) -> int:
        """The prompt's tokens that leave room for the reply."""
        reply = reply_tokens if isinstance(reply_tokens, int) and reply_tokens > 0 else (
            DEFAULT_REPLY_TOKENS)
        reply = min(reply, self.n_ctx // 2)  # a max_tokens near n_ctx would leave no prompt
        return self.n_ctx - reply - TEMPLATE_TOKENS

    def system_cap(self, budget: int) -> int:
        """At most this many tokens of system message when it must be cut (the rest: turns)."""
        return budget - min(int(budget * TURNS_SHARE), TURNS_MAX)

    def fit(self, messages: list[dict[str, Any]], reply_tokens: int | None) -> list[dict[str, Any]]:
        """``messages`` fitted to the context (the same list when they fit as they are)."""
        self.changes = []
        budget = self.budget(reply_tokens)
        if sum(_byte_bound(m) for m in messages) <= budget:
            return messages  # the common case: nothing is tokenized
        out = [dict(m) for m in messages]
        system = [i for i, m in enumerate(out) if m.get("role") == "system"]
        turns = [i for i in range(len(out)) if i not in system]

        # 1. The system message(s): cut to their share when over it (stable across turns).
        cap = self.system_cap(budget)
        system_tokens = 0
        for i in system:
            text = _content_text(out[i])
            share = max(cap - system_tokens - TOKENS_PER_MESSAGE, 0)
            kept, n = self._system_cut(text, share)
            if kept is not text:
                out[i]["content"] = kept
                self.changes.append("system")
                self._warn("system", f"The embedded LLM's context holds {self.n_ctx} tokens "
                           f"(LLAMA_SERVER_CTX): its system prompt with this conversation's "
                           f"context ({len(text):,} characters, over {share:,} tokens) is cut "
                           f"to {n:,} tokens, its beginning and its end, for this conversation")
            system_tokens += n + TOKENS_PER_MESSAGE

        # 2. The oldest turns go until the rest fits, the window starting at a user message.
        counts = {i: self._turn_count(_content_text(out[i])) + TOKENS_PER_MESSAGE for i in turns}
        room = budget - system_tokens
        kept_turns = list(turns)
        while len(kept_turns) > 1 and sum(counts[i] for i in kept_turns) > room:
            kept_turns.pop(0)
            while len(kept_turns) > 1 and out[kept_turns[0]].get("role") != "user":
                kept_turns.pop(0)
        if len(kept_turns) < len(turns):
            self.changes.append("turns")
            self._warn("turns", f"The embedded LLM's context holds {self.n_ctx} tokens: older "
                       "turns of this conversation are left out of its prompt to fit")

        # 3. A last message too long on its own is cut in the middle.
        total = sum(counts[i] for i in kept_turns)
        if kept_turns and total > room:
            last = max(kept_turns, key=lambda i: counts[i])
            text = _content_text(out[last])
            limit = max(counts[last] - (total - room) - TOKENS_PER_MESSAGE, 0)
            if isinstance(out[last].get("content"), str) and not out[last].get("tool_calls"):
                out[last]["content"] = self.cut(text, limit)
                self.changes.append("message")
                self._warn("message", f"A {out[last].get('role')} message of "
                           f"{counts[last] - TOKENS_PER_MESSAGE:,} tokens is cut to {limit:,} "
                           f"to fit the embedded LLM's context ({self.n_ctx} tokens)")
        keep = set(system) | set(kept_turns)
        return [m for i, m in enumerate(out) if i in keep]

    def _system_cut(self, text: str, share: int) -> tuple[str, int]:
        """(the system text kept: ``text`` itself if it fits ``share``, its tokens); cached."""
        key = (text, share)
        if key in self._cuts:
            self._cuts.move_to_end(key)
            kept, n = self._cuts[key]
            return (text if kept is None else kept), n
        n = self.count(text, limit=share)
        kept = None
        if n > share:
            kept = self.cut(text, share)
            n = self.tokenizer.count(kept)
        self._cuts[key] = (kept, n)
        while len(self._cuts) > 4:
            self._cuts.popitem(last=False)
        return (text if kept is None else kept), n

    def _turn_count(self, text: str) -> int:
        if text not in self._counts:
            self._counts[text] = self.count(text)
            while len(self._counts) > 32:
                self._counts.popitem(last=False)
        return self._counts[text]

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message)
