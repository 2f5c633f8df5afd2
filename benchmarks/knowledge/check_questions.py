#!/usr/bin/env python3
"""Validate questions.json against corpus/ (stdlib only).

Checks: exactly 50 questions; unique ids; required fields; each answer is a
single-line substring of 3-12 words occurring exactly once (case-sensitive)
in its source file.  Exit status 0 on success, 1 on any failure.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
EXPECTED = 50
FIELDS = {"id", "question", "answer", "source"}


def main() -> int:
    questions = json.loads((HERE / "questions.json").read_text(encoding="utf-8"))
    errors = []
    if len(questions) != EXPECTED:
        errors.append(f"expected {EXPECTED} questions, found {len(questions)}")
    ids = [q.get("id") for q in questions]
    if len(set(ids)) != len(ids):
        errors.append("duplicate ids")
    texts = {}
    per_source = {}
    for q in questions:
        qid = q.get("id", "?")
        if set(q) != FIELDS:
            errors.append(f"{qid}: fields {sorted(q)} != {sorted(FIELDS)}")
            continue
        src = CORPUS / q["source"]
        if not src.is_file():
            errors.append(f"{qid}: missing source {q['source']}")
            continue
        text = texts.setdefault(src, src.read_text(encoding="utf-8"))
        ans = q["answer"]
        nwords = len(ans.split())
        if "\n" in ans or "\r" in ans:
            errors.append(f"{qid}: answer contains a line break")
        if not 3 <= nwords <= 12:
            errors.append(f"{qid}: answer has {nwords} words (want 3-12)")
        count = text.count(ans)
        if count != 1:
            errors.append(f"{qid}: answer occurs {count} times in {q['source']}: {ans!r}")
        per_source[q["source"]] = per_source.get(q["source"], 0) + 1
    for name, n in sorted(per_source.items()):
        print(f"  {name}: {n} questions")
    for e in errors:
        print("FAIL", e)
    print(f"{len(questions) - len({e.split(':')[0] for e in errors if e.startswith('q')})} passed, "
          f"{len({e.split(':')[0] for e in errors if e.startswith('q')})} failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
