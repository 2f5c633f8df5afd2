"""Warm the embedded models at start-up, so that the first turn is as fast as the others.

Before this, the first conversation of a process paid for everything the models do once:
Whisper's first transcription (~+200 ms), the llama.cpp server's first prompt (~+340 ms,
the persona's system prompt evaluated from scratch), the first Piper synthesis and the
first Smart Turn inference (ONNX Runtime allocating its arenas). :func:`warm_up` runs each
once, on throwaway input, before the banner says the bot is ready. Every model it touches
is the one conversations share (loaded once per process), so the work is not repeated.

Each part is best effort: a model that fails to warm is logged and left for the first
conversation, which reports its own error the usual way.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

from loguru import logger


def _whisper(app: Any) -> None:
    import numpy as np

    from services.local.models import whisper_model_dir
    from services.stt import load_whisper_model

    model = load_whisper_model(whisper_model_dir(app.settings.local_whisper_model))
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000) * 0.01).astype(np.float32)  # 1 s of faint noise
    list(model.transcribe(audio, language="en")[0])


def _piper(app: Any, plan: Any) -> None:
    from services import conversation_language
    from services.pipecat_seam import piper_voice_of
    from services.tts import build_tts

    tts = build_tts(plan.tts, app.persona, conversation_language(app.conversation), app.settings)
    for _ in piper_voice_of(tts).synthesize("Hello there, how are you?"):
        pass


def _smart_turn() -> None:
    from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

    from services.pipecat_seam import shared_smart_turn_v3

    analyzer = shared_smart_turn_v3(params=SmartTurnParams())
    analyzer.set_sample_rate(16000)
    analyzer.append_audio(b"\x00\x00" * 16000, True)
    _in_own_loop(analyzer.analyze_end_of_turn)
    analyzer.clear()


def _in_own_loop(make_coro) -> None:
    """Run a coroutine to the end on a loop of its own (start-up may already be in one)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(make_coro())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="warm-up")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _llm(app: Any, plan: Any, server: Any) -> None:
    """One token on the persona's system prompt: the server keeps it evaluated (its prompt
    cache holds the last prompt's prefix), so the first reply starts from there."""
    from config.prompt import system_prompt_for

    system = system_prompt_for(app.persona, app.conversation, plan.tts.engine)
    body = json.dumps({
        "model": server.MODEL_ALIAS, "max_tokens": 1, "stream": False,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Hello."}],
    }).encode()
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our loopback server
        response.read()


def warm_up(app: Any, plan: Any, server: Any = None) -> dict[str, float]:
    """Run each embedded model of ``plan`` once; returns the seconds each took."""
    parts: list[tuple[str, Any]] = []
    if plan.stt.engine == "whisper":
        parts.append(("whisper", lambda: _whisper(app)))
    if plan.tts.engine == "piper":
        parts.append(("piper", lambda: _piper(app, plan)))
    if app.options.flow.turn_detection_model == "sparrow-1":
        parts.append(("smart turn", _smart_turn))
    if server is not None:
        parts.append(("llm", lambda: _llm(app, plan, server)))
    took: dict[str, float] = {}
    for name, run in parts:
        started = time.monotonic()
        try:
            run()
        except Exception as exc:  # the first conversation will meet (and report) it
            logger.warning(f"Could not warm {name} up: {type(exc).__name__}: {exc}")
            continue
        took[name] = round(time.monotonic() - started, 3)
    if took:
        logger.info("Warmed up " + ", ".join(f"{k} {v:.2f}s" for k, v in took.items()))
    return took
