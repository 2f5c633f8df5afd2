"""Sections of text -> retrieval chunks of a few sentences, each with its source.

Chunks are cut at paragraph, then sentence, then word boundaries, ``TARGET`` characters
or so each (what a voice reply can use in one breath of context), never more than
``MAX``; a chunk never spans two sections (pages, slides, sheets, pages of a site), so
its source stays true.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.parsers import Section

TARGET = 700
MAX = 1000
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    text: str
    source: str


def _pieces(paragraph: str) -> list[str]:
    if len(paragraph) <= MAX:
        return [paragraph]
    out: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        while len(sentence) > MAX:  # one enormous "sentence" (a table row, no punctuation)
            cut = sentence.rfind(" ", 0, MAX)
            cut = cut if cut > MAX // 2 else MAX
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def chunk_sections(sections: list[Section]) -> list[Chunk]:
    """Every section's text in chunks of about :data:`TARGET` characters."""
    chunks: list[Chunk] = []
    for section in sections:
        current = ""
        for paragraph in re.split(r"\n\s*\n|\n", section.text):
            for piece in _pieces(" ".join(paragraph.split())):
                if current and len(current) + 1 + len(piece) > TARGET:
                    chunks.append(Chunk(current, section.source))
                    current = piece
                else:
                    current = f"{current} {piece}".strip() if current else piece
        if current:
            chunks.append(Chunk(current, section.source))
    return chunks
