"""Replies cut by ``max_tokens`` end at their last complete sentence.

:class:`SentenceCut` sits right after the LLM. It passes each response's text on
up to the last sentence end seen so far (``.``, ``!``, ``?`` or ``…``, maybe
followed by a closing quote or bracket, at the end of the text so far or before
a space), so a sentence reaches the TTS the moment its punctuation arrives: no
latency is added (Pipecat's TTS waits for whole sentences anyway). Only the text
after the last sentence end is held back. At ``LLMFullResponseEndFrame``:

- the response was truncated (``finish_reason == "length"``, which our LLM
  services put in the end frame's metadata, see ``services/llm.py``) and some
  complete sentence was already passed on: the unfinished tail is dropped, so
  it is neither spoken nor recorded in the context or transcript;
- otherwise (the model ended by itself, a stop sequence, an unknown reason, or
  the tail is the whole reply) the tail is passed on as it is.

An interruption discards the held tail with the rest of the response.

With ``first_clause`` (the default) the first sentence of a response also goes on at its
first clause end (``,`` ``;`` ``:`` or a dash before a space, after at least
:data:`CLAUSE_MIN_WORDS` words), and :func:`clause_text_aggregator` gives the TTS the same
cut, so the first audio is the first clause's, not the first sentence's: with the embedded
model and Piper, a long opening sentence was the whole p95 tail of voice-to-voice latency
(issue 18). Only the first clause: later ones are spoken whole sentences at a time, which
keeps Piper's prosody, and the TTS is busy with the first clause meanwhile.

With ``drop_repeats`` (the embedded model, see ``session/builder.py``), a
sentence of five words or more that the bot already said earlier in the
conversation is not said again, unless it opens the response: a 135M model
copies the filler sentence of its previous reply into every new one ("I'm happy
to help with that, just enjoy your day and don't hesitate to ask anything!").
It is checked the moment the sentence is complete, so this adds no latency
either.
"""

from __future__ import annotations

import re

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

FINISH_REASON = "finish_reason"  # the key services/llm.py sets in the end frame's metadata

# A sentence end: terminal punctuation, optional closing quotes/brackets, then a space or the end.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")


# A clause end inside a sentence: a comma, semicolon, colon or a dash between spaces, then a
# space or the end of the text so far (after a digit only a space: "3," may become "3,000").
_CLAUSE_END = re.compile(r"(?:(?<!\d)[,;:](?=\s|$)|[,;:](?=\s)|\s[—–-](?=\s|$))")
CLAUSE_MIN_WORDS = 2

_WORD = re.compile(r"[a-z0-9']+")
REPEAT_MIN_WORDS = 5


def sentence_key(sentence: str) -> str:
    """A sentence's words, lower-cased: what makes two sentences "the same" for ``drop_repeats``."""
    return " ".join(_WORD.findall(sentence.lower().replace("’", "'")))


def sentences_of(text: str) -> list[str]:
    """``text`` split after each sentence end (the pieces keep their spacing; they join back to it)."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def first_clause_end(text: str) -> int | None:
    """Where the first clause of ``text`` ends (after its punctuation), if it is complete and
    has at least :data:`CLAUSE_MIN_WORDS` words; ``None`` otherwise.

    The punctuation may end the text so far, except after a digit (``3,000`` is no clause
    end), and only a clause before any sentence end counts (the sentence then goes whole).
    """
    for match in _CLAUSE_END.finditer(text):
        head = text[: match.end()]
        if _SENTENCE_END.search(head):
            return None
        if len(head.split()) >= CLAUSE_MIN_WORDS:
            return match.end()
    return None


def clause_text_aggregator(**kwargs):
    """Pipecat's sentence aggregator, which also ends the first clause of each response.

    For a TTS service (``services/tts.py``): the first clause reaches ``run_tts`` on its own,
    as :class:`SentenceCut` passes it on; then whole sentences, as Pipecat does.
    """
    from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
    from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

    class ClauseTextAggregator(SimpleTextAggregator):
        def __init__(self, **kw):
            super().__init__(**kw)
            self._first = True  # no aggregation of this response yet

        async def _check_sentence_with_lookahead(self, char, **kw):
            result = await super()._check_sentence_with_lookahead(char, **kw)
            if result is not None:
                self._first = False
            elif self._first and (char.isspace() or char in ",;:—–-"):
                end = first_clause_end(self._text)
                if end is not None and end == len(self._text.rstrip()):
                    result = Aggregation(text=self._text[:end].strip(" "), type=TextType.SENTENCE)
                    self._text = self._text[end:]
                    self._first = False
            return result

        async def flush(self):
            self._first = True
            return await super().flush()

        async def reset(self):
            self._first = True
            await super().reset()

        async def handle_interruption(self):
            self._first = True
            await super().handle_interruption()

    return ClauseTextAggregator(**kwargs)


def split_at_last_sentence_end(text: str) -> tuple[str, str]:
    """(``text`` up to and including its last sentence end, the rest)."""
    last = None
    for last in _SENTENCE_END.finditer(text):
        pass
    if last is None:
        return "", text
    return text[: last.end()], text[last.end():]


class SentenceCut(FrameProcessor):
    """Drops the unfinished last sentence of a response that ``max_tokens`` cut off.

    It forwards the LLM's own ``LLMTextFrame`` objects, unchanged and in order, and only
    holds back (or drops) whole frames: a frame that was pushed once is never pushed
    again or altered, so observers that count first pushes (the interactions observer)
    see each piece of text once. A frame that ends a sentence goes on with everything
    held before it. (llama.cpp streams one token per frame, so a sentence end is the end
    of its frame; text after a sentence end inside one frame goes on with it.)
    """

    def __init__(self, *, drop_repeats: bool = False, first_clause: bool = True, **kwargs):
        super().__init__(name="sentence-cut", **kwargs)
        self._drop_repeats = drop_repeats
        self._first_clause = first_clause
        self._said: set[str] = set()  # sentences said in earlier responses (drop_repeats)
        self._said_now: list[str] = []
        self._held: list[LLMTextFrame] = []
        self._carry = ""  # text already passed on after the last sentence end
        self._passed = False
        self.dropped: list[str] = []  # what was cut, for tests and logs

    def _held_text(self) -> str:
        return "".join(f.text for f in self._held)

    def _reset(self) -> None:
        self._held = []
        self._carry = ""
        self._passed = False
        self._said.update(self._said_now)
        self._said_now = []

    def _all_repeats(self, text: str) -> bool:
        """Every sentence of ``text`` is one of 5+ words the bot said in an earlier response."""
        if not (self._drop_repeats and self._passed):
            return False
        keys = [sentence_key(p) for p in sentences_of(text) if sentence_key(p)]
        return bool(keys) and all(
            len(k.split()) >= REPEAT_MIN_WORDS and k in self._said for k in keys)

    async def _pass(self, frames: list[LLMTextFrame], text: str) -> None:
        for f in frames:
            await self.push_frame(f)
        if text.strip():
            self._passed = True
            self._said_now += [sentence_key(p) for p in sentences_of(text) if sentence_key(p)]

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, (LLMFullResponseStartFrame, InterruptionFrame)):
            self._reset()
        elif isinstance(frame, LLMTextFrame):
            text = self._carry + self._held_text() + frame.text
            head, tail = split_at_last_sentence_end(text)
            if not head and self._first_clause and not self._passed and not self._carry:
                end = first_clause_end(text)
                if end is not None:
                    head, tail = text[:end], text[end:]
            if not head:
                self._held.append(frame)
                return
            frames, self._held = [*self._held, frame], []
            self._carry = tail
            if self._all_repeats(head):
                logger.debug(f"Dropped a sentence said before: {head.strip()!r}")
                self.dropped.append(head)
            else:
                await self._pass(frames, head)
            return
        elif isinstance(frame, LLMFullResponseEndFrame):
            held, text = self._held, self._held_text()
            self._held = []
            if held:
                truncated = frame.metadata.get(FINISH_REASON) == "length"
                if truncated and self._passed and text.strip():
                    logger.debug(f"Reply cut by max_tokens: dropped the unfinished {text.strip()!r}")
                    self.dropped.append(text)
                elif self._all_repeats(self._carry + text):
                    self.dropped.append(text)
                else:
                    await self._pass(held, text)
            self._carry = ""
            self._passed = False
            self._said.update(self._said_now)
            self._said_now = []
        await self.push_frame(frame, direction)
