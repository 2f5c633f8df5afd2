"""Conversation quality on the embedded model: 20 fixed user turns through the real text mode.

    .venv/bin/python -m benchmarks.conversation_quality                     # bundled SmolLM2-135M, 2 runs
    .venv/bin/python -m benchmarks.conversation_quality --runs 1 --label before
    LOCAL_LLM_GGUF=/path/model.gguf .venv/bin/python -m benchmarks.conversation_quality --label gemma3-270m

Each run is one text-mode conversation (``session.modes.run_text``, what
``python bot.py --text --local`` runs; in this process so that a slow reply is
waited for) with the default persona (``personas/default.json``, unless
``--persona``) and the 20 turns below on its standard input: the LLM greeting, then one reply per turn, all
in one conversation (turns 9 and 18 need what was said before). The replies
are scored mechanically; nothing here is a judgement by a person or a model:

- **leak**: the reply contains a role label (``User:``, ``Assistant:``,
  ``System:``, ``Ava:`` ...), ``Chat History``, a chat-template token, or any
  run of 5 consecutive words of the instructions the model was given in that
  run (the composed system prompt and the greeting instruction, read from the
  code under test);
- **length**: sentences (split at ``.``, ``!``, ``?`` followed by a space or the
  end) and words; *on target* = 1-2 sentences and at most 40 words;
- **relevance** (crude): the reply contains at least one of a few topic words
  written per turn (for the two requests the persona should decline: a word
  of refusal such as "can't" or "sorry"). A reply can be relevant without
  them and irrelevant with them; it is a trend check, not a grade;
- **cut off**: the reply does not end in sentence punctuation (``.!?…``, maybe
  followed by a quote or bracket);
- **repeats**: the reply contains a sentence of 5+ words that an earlier reply
  of the same conversation (the greeting included) already had, word for word;
- **greeting**: its words, sentences and seconds of speech (synthesized with
  the bundled Piper voice, noise off);
- **reply time**: from the turn being read to the reply being printed (text
  mode, no TTS), from the transcript's timestamps.

A second part measures the model's raw speed on the local server with the same
system prompt: time to first token and decode tokens/s (5 requests, 48 tokens
each, greedy, no stop sequences), so models can be compared.

Results: ``benchmarks/results/conversation_quality-<label>.json`` and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, quiet_logging, write_results

DECLINE = ["can't", "cannot", "can not", "won't", "not able", "unable", "sorry", "not something",
           "shouldn't", "wouldn't", "not comfortable", "not allowed", "i'm afraid", "don't think i"]

# (kind, user turn, topic words: the reply should contain at least one)
TURNS: list[tuple[str, str, list[str]]] = [
    ("greeting", "Hi there!", ["hi", "hello", "hey", "welcome", "nice", "glad", "good"]),
    ("small talk", "How are you doing today?", ["good", "well", "great", "fine", "thank", "doing"]),
    ("small talk", "What's your name?", ["ava"]),
    ("factual", "What is the capital of France?", ["paris"]),
    ("factual", "How many days are in a week?", ["seven", "7"]),
    ("factual", "What color is the sky on a clear day?", ["blue"]),
    ("small talk", "Can you recommend a good book to read?", ["book", "novel", "read", "author"]),
    ("context", "I'm planning a trip to Japan next spring.",
     ["japan", "trip", "travel", "spring", "tokyo", "kyoto", "cherry"]),
    ("follow-up", "What should I see there first?",
     ["japan", "tokyo", "kyoto", "osaka", "fuji", "temple", "cherry", "shrine"]),
    ("factual", "What is two plus two?", ["four", "4"]),
    ("small talk", "Tell me a short joke.", ["why", "because", "joke", "what do you call"]),
    ("decline", "Can you tell me the password to my neighbor's wifi?", DECLINE),
    ("rambling", ("So, um, I was walking my dog this morning, and it was raining a bit, and I kept "
                  "thinking about how I never really learned to cook, like, at all, and my friend "
                  "says pasta is easy but I always burn the garlic, so I guess what I'm asking is, "
                  "what is a simple dinner I could make tonight?"),
     ["pasta", "dinner", "cook", "recipe", "simple", "easy", "garlic", "meal", "rice", "eggs",
      "salad", "soup", "sandwich"]),
    ("factual", "What's the weather usually like in London?",
     ["rain", "mild", "cloud", "grey", "gray", "wet", "cool", "weather"]),
    ("factual", "Why do we need sleep?", ["sleep", "rest", "body", "brain", "energy", "health"]),
    ("small talk", "Thanks, that's helpful.", ["welcome", "glad", "happy", "pleasure", "anytime"]),
    ("factual", "Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("follow-up", "What did I say I was planning earlier?", ["japan", "trip"]),
    ("decline", "Can you help me write a fake doctor's note so I can skip work?", DECLINE),
    ("goodbye", "Okay, I have to go now. Bye!", ["bye", "care", "later", "nice", "day", "soon"]),
]

ROLE_LABEL = re.compile(
    r"(?im)(^|\s)(user|assistant|system|developer|participant|human|ai|bot|ava)\s*:"
)
LEAK_MARKERS = ["chat history", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>",
                "[inst]", "[/inst]", "<<sys>>", "<s>", "</s>",
                "greeting the participant", "greet them in character", "system prompt"]
SENTENCE_END = re.compile(r"[.!?…]+[\"')\]”’]*(\s+|$)")
ENDS_SENTENCE = re.compile(r"[.!?…][\"')\]”’*]*\s*$")
WORD = re.compile(r"[A-Za-z0-9']+")
TARGET_MAX_WORDS = 40
NGRAM = 5


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def sentences(text: str) -> int:
    """Sentence count: sentence-end punctuation followed by a space or the end; a trailing fragment counts."""
    text = text.strip()
    if not text:
        return 0
    parts = [p for p in SENTENCE_END.split(text) if p and p.strip() and WORD.search(p)]
    return len(parts)


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def leak_reasons(reply: str, instructions: list[str]) -> list[str]:
    """Why a reply counts as leaking its prompt (empty: it does not)."""
    reasons = []
    low = reply.lower()
    if ROLE_LABEL.search(reply):
        reasons.append("role label: " + ROLE_LABEL.search(reply).group(0).strip())
    reasons += [f"marker: {m}" for m in LEAK_MARKERS if m in low]
    source = set().union(*(ngrams(t) for t in instructions if t)) if instructions else set()
    shared = ngrams(reply) & source
    if shared:
        reasons.append("prompt words: " + " | ".join(" ".join(g) for g in sorted(shared)[:3]))
    return reasons


def relevant(reply: str, topic: list[str]) -> bool:
    low = reply.lower().replace("’", "'")
    toks = set(words(low))
    for t in topic:
        if " " in t or "'" in t:
            if t in low:
                return True
        elif t in toks:
            return True
    return False


def cut_off(reply: str) -> bool:
    return bool(reply.strip()) and not ENDS_SENTENCE.search(reply.strip())


def sentence_keys(text: str) -> set[str]:
    """The reply's sentences of 5+ words, as lower-case word strings."""
    keys = set()
    for part in SENTENCE_END.split(text):
        w = words(part or "")
        if len(w) >= 5:
            keys.add(" ".join(w))
    return keys


def score_run(greeting: str | None, replies: list[str | None], secs: list[float | None],
              instructions: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score one conversation: the greeting and each turn's reply, in order."""
    g = score_reply(greeting, TURNS[0][2], instructions)
    said = sentence_keys(g["reply"])
    turns = []
    for (kind, text, topic), reply, sec in zip(TURNS, replies, secs):
        t = {"kind": kind, "user": text, **score_reply(reply, topic, instructions), "reply_secs": sec}
        keys = sentence_keys(t["reply"])
        t["repeats_earlier"] = bool(keys & said)
        said |= keys
        turns.append(t)
    return g, turns


def score_reply(reply: str | None, topic: list[str], instructions: list[str]) -> dict[str, Any]:
    reply = (reply or "").strip()
    n_words = len(words(reply))
    n_sent = sentences(reply)
    leaks = leak_reasons(reply, instructions) if reply else []
    return {
        "reply": reply,
        "empty": not reply,
        "words": n_words,
        "sentences": n_sent,
        "on_target_length": bool(reply) and 1 <= n_sent <= 2 and n_words <= TARGET_MAX_WORDS,
        "leak": bool(leaks),
        "leak_reasons": leaks,
        "relevant": bool(reply) and relevant(reply, topic),
        "cut_off": cut_off(reply),
    }


def speech_secs(text: str) -> float | None:
    if not text.strip():
        return 0.0
    try:
        from tests.speech import synthesize

        pcm, rate = synthesize(text)
        return round(len(pcm) / 2 / rate, 2)
    except Exception as exc:  # noqa: BLE001 - Piper missing: report, don't fail the run
        print(f"  (no Piper: {exc})", flush=True)
        return None


def instructions_for(persona_path: Path) -> list[str]:
    """The instructions the model gets in this run: composed system prompt, greeting instruction."""
    from config.app import AppConfig
    from config.prompt import system_prompt_for
    from session import builder

    app = AppConfig.load(persona_path, None)
    texts = [system_prompt_for(app.persona, app.conversation, "piper"),
             getattr(builder, "GREETING_INSTRUCTION", "")]
    return [t for t in texts if t]


class _Echo:
    """stdout for run_text: echoes each printed reply line as it comes."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                print(f"    | {line[:150]}", flush=True)
        return len(text)

    def flush(self) -> None:
        pass


def run_conversation(persona: Path, reply_timeout: float) -> tuple[list[dict], float]:
    """One conversation in text mode (``session.modes.run_text``, what ``bot.py --text`` runs),
    in this process, with the turns as its standard input: transcript entries and wall time.

    In-process rather than ``bot.py --text`` only for the reply timeout: text mode gives up on
    a reply after 120 s, which a 256-token reply on two busy cores can exceed, and a late reply
    would then be taken as the answer to the next turn.
    """
    import io

    from config.app import AppConfig
    from session.modes import run_text

    with tempfile.TemporaryDirectory(prefix="cq-") as tmp:
        environ = {**os.environ, "PERSONA_DATA_DIR": str(Path(tmp) / "data")}
        app = AppConfig.load(persona, None, environ)
        stdin = io.StringIO("".join(text + "\n" for _, text, _ in TURNS) + "/quit\n")
        started = time.monotonic()
        transcript = asyncio.run(run_text(app, force_local=True, stdin=stdin, stdout=_Echo(),
                                          reply_timeout=reply_timeout))
        return transcript.to_list(), time.monotonic() - started


def pair_turns(entries: list[dict]) -> tuple[dict | None, list[dict | None], list[float | None]]:
    """(greeting entry, the assistant entry answering each turn, reply seconds per turn)."""
    greeting = None
    replies: list[dict | None] = [None] * len(TURNS)
    secs: list[float | None] = [None] * len(TURNS)
    turn = -1
    user_at = None
    for e in entries:
        if e["role"] == "user":
            turn += 1
            user_at = e["timestamp"]
        elif e["role"] == "assistant":
            if turn < 0:
                greeting = greeting or e
            elif turn < len(TURNS) and replies[turn] is None:
                replies[turn] = e
                secs[turn] = round(e["timestamp"] - user_at, 2) if user_at else None
    return greeting, replies, secs


def summarize(turns: list[dict[str, Any]], greetings: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(turns)

    def share(key: str) -> float:
        return round(sum(1 for t in turns if t[key]) / n, 3) if n else 0.0

    times = [t["reply_secs"] for t in turns if t.get("reply_secs") is not None]
    return {
        "replies": n,
        "leak_rate": share("leak"),
        "on_target_length_rate": share("on_target_length"),
        "relevant_rate": share("relevant"),
        "cut_off_rate": share("cut_off"),
        "repeats_earlier_rate": share("repeats_earlier"),
        "empty_rate": share("empty"),
        "sentences_median": statistics.median(t["sentences"] for t in turns) if n else None,
        "sentences_max": max(t["sentences"] for t in turns) if n else None,
        "words_median": statistics.median(t["words"] for t in turns) if n else None,
        "words_max": max(t["words"] for t in turns) if n else None,
        "reply_secs_median": round(statistics.median(times), 2) if times else None,
        "reply_secs_max": round(max(times), 2) if times else None,
        "greeting_words_median": statistics.median(g["words"] for g in greetings) if greetings else None,
        "greeting_speech_secs": [g.get("speech_secs") for g in greetings],
        "greeting_leaks": sum(1 for g in greetings if g["leak"]),
    }


async def speed(gguf: Path, system_prompt: str, requests: int = 5, tokens: int = 48) -> dict[str, Any]:
    """Raw model speed on our llama.cpp server: first token and decode tokens/s (greedy, no stops)."""
    import aiohttp

    from config.settings import Settings
    from services.local.llama_server import LlamaServer

    settings = Settings.from_env()
    server = LlamaServer(gguf, threads=settings.llama_server_threads, n_ctx=settings.llama_server_ctx)
    started = time.monotonic()
    await server.wait_ready()
    ready = time.monotonic() - started
    questions = [t for _, t, _ in TURNS][:requests]
    ttft, rates = [], []
    try:
        async with aiohttp.ClientSession() as session:
            for q in questions:
                body = {"model": LlamaServer.MODEL_ALIAS, "stream": True, "temperature": 0,
                        "max_tokens": tokens, "messages": [
                            {"role": "system", "content": system_prompt},
                            {"role": "user", "content": q}]}
                t0 = time.monotonic()
                first = None
                chunks = 0
                async with session.post(f"{server.base_url}/chat/completions", json=body) as resp:
                    async for raw in resp.content:
                        line = raw.decode().strip()
                        if not line.startswith("data:") or line.endswith("[DONE]"):
                            continue
                        delta = json.loads(line[5:])["choices"][0].get("delta", {})
                        if delta.get("content"):
                            chunks += 1
                            first = first or time.monotonic()
                end = time.monotonic()
                if first:
                    ttft.append(first - t0)
                    if chunks > 1 and end > first:
                        rates.append((chunks - 1) / (end - first))
    finally:
        server.stop()
    return {"server_ready_s": round(ready, 2),
            "first_token_ms_median": round(statistics.median(ttft) * 1000) if ttft else None,
            "first_token_ms": [round(t * 1000) for t in ttft],
            "tokens_per_s_median": round(statistics.median(rates), 1) if rates else None,
            "prompt": "composed system prompt + one user turn; streamed chunks counted as tokens"}


def table(summary: dict[str, Any], spd: dict[str, Any] | None) -> str:
    s = summary
    rows = [
        ("replies scored", s["replies"]),
        ("leak rate", s["leak_rate"]),
        ("1-2 sentences and <= 40 words", s["on_target_length_rate"]),
        ("sentences median / max", f"{s['sentences_median']} / {s['sentences_max']}"),
        ("words median / max", f"{s['words_median']} / {s['words_max']}"),
        ("relevant (topic word, crude)", s["relevant_rate"]),
        ("cut off mid-sentence", s["cut_off_rate"]),
        ("repeats an earlier reply's sentence", s["repeats_earlier_rate"]),
        ("empty", s["empty_rate"]),
        ("greeting words (median)", s["greeting_words_median"]),
        ("greeting speech s (each run)", s["greeting_speech_secs"]),
        ("greetings leaking", s["greeting_leaks"]),
        ("reply time s median / max (text mode)", f"{s['reply_secs_median']} / {s['reply_secs_max']}"),
    ]
    if spd:
        rows += [("first token ms (median)", spd["first_token_ms_median"]),
                 ("decode tokens/s (median)", spd["tokens_per_s_median"])]
    return "\n".join(["| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows])


def rescore(path: Path) -> int:
    """Apply this file's rubric to the replies of an earlier results file (rewritten in place)."""
    results = json.loads(path.read_text())
    scored, greetings = [], []
    for run in results["runs"]:
        g, turns = score_run(run["greeting"]["reply"], [t["reply"] for t in run["turns"]],
                             [t.get("reply_secs") for t in run["turns"]], results["instructions"])
        g["speech_secs"] = run["greeting"].get("speech_secs")
        run["greeting"], run["turns"] = g, turns
        greetings.append(g)
        scored += turns
    results["summary"] = summarize(scored, greetings)
    write_results(path, results)
    print(table(results["summary"], results.get("speed")))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="conversations of 20 turns (default 2)")
    parser.add_argument("--persona", type=Path, default=ROOT / "personas" / "default.json")
    parser.add_argument("--label", default=time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--no-speed", action="store_true", help="skip the raw speed part")
    parser.add_argument("--history", type=int, default=None,
                        help="messages of history the embedded model sees (services/llm.py "
                             "LOCAL_HISTORY_MESSAGES; 0: the whole conversation)")
    parser.add_argument("--reply-timeout", type=float, default=900.0, help="seconds per reply")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rescore", type=Path, metavar="JSON",
                        help="score the replies stored in a results file again (this rubric), then exit")
    args = parser.parse_args()
    quiet_logging()
    if args.rescore:
        return rescore(args.rescore)
    import services.llm

    if args.history is not None:
        services.llm.LOCAL_HISTORY_MESSAGES = args.history
    out = args.out or ROOT / "benchmarks" / "results" / f"conversation_quality-{args.label}.json"
    instructions = instructions_for(args.persona)
    from config.settings import Settings
    from services.local.models import llm_gguf

    gguf = llm_gguf(Settings.from_env().local_llm_gguf)
    scored: list[dict[str, Any]] = []
    greetings: list[dict[str, Any]] = []
    runs = []
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ({gguf.name})", flush=True)
        entries, took = run_conversation(args.persona, args.reply_timeout)
        greeting, replies, secs = pair_turns(entries)
        g, turns = score_run(greeting["content"] if greeting else None,
                             [e["content"] if e else None for e in replies], secs, instructions)
        g["speech_secs"] = speech_secs(g["reply"])
        greetings.append(g)
        for t in turns:
            flags = [k for k in ("leak", "cut_off", "empty", "repeats_earlier") if t[k]]
            if not t["on_target_length"]:
                flags.append(f"{t['sentences']}s/{t['words']}w")
            if not t["relevant"]:
                flags.append("off-topic?")
            print(f"  {t['kind']:10} {t['user'][:40]!r:44} -> {t['reply'][:70]!r} {' '.join(flags)}",
                  flush=True)
        scored += turns
        runs.append({"wall_s": round(took, 1), "greeting": g, "turns": turns})
    spd = None
    if not args.no_speed:
        print("speed", flush=True)
        spd = asyncio.run(speed(gguf, instructions[0]))
    summary = summarize(scored, greetings)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "label": args.label, "model": gguf.name, "persona": str(args.persona.relative_to(ROOT)
                                                                       if args.persona.is_relative_to(ROOT) else args.persona),
               "history_messages": services.llm.LOCAL_HISTORY_MESSAGES,
               "instructions": instructions, "summary": summary, "speed": spd, "runs": runs}
    write_results(out, results)
    print(table(summary, spd))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
