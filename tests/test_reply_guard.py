"""The reply guard: a failed or empty LLM response is reported and answered with an apology;
a real answer, a tool call or an interrupted response is left alone."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.tests.utils import run_test

from pipeline import reply_guard
from pipeline.reply_guard import APOLOGY, ReplyGuard
from services import llm


def end(**metadata) -> LLMFullResponseEndFrame:
    frame = LLMFullResponseEndFrame()
    frame.metadata.update(metadata)
    return frame


async def run(guard: ReplyGuard, *frames) -> list[str]:
    """The text the guard passes on for one response."""
    down, _ = await run_test(guard, frames_to_send=[LLMFullResponseStartFrame(), *frames])
    assert isinstance(down[-1], LLMFullResponseEndFrame)  # the end frame still closes the reply
    return [f.text for f in down if isinstance(f, LLMTextFrame)]


@pytest.fixture
def reported():
    reasons: list[str] = []

    async def on_failure(reason: str) -> None:
        reasons.append(reason)

    return reasons, on_failure


async def test_an_empty_response_gets_the_apology_and_is_reported(reported):
    reasons, on_failure = reported
    assert await run(ReplyGuard(on_failure=on_failure), end(finish_reason="stop")) == [APOLOGY]
    assert reasons == ["the LLM gave an empty answer (finish_reason stop)"]


async def test_a_whitespace_response_is_empty_too(reported):
    reasons, on_failure = reported
    assert await run(ReplyGuard(on_failure=on_failure), LLMTextFrame(" "), end()) == [" ", APOLOGY]
    assert len(reasons) == 1


async def test_a_failed_response_is_apologised_for_after_the_words_it_got(reported):
    reasons, on_failure = reported
    texts = await run(ReplyGuard(on_failure=on_failure), LLMTextFrame("The museum"),
                      LLMTextFrame(" opens at"), end(llm_error="Connection error."))
    assert texts == ["The museum", " opens at", " " + APOLOGY]
    assert reasons == ["the LLM request failed (Connection error.)"]


@pytest.mark.parametrize("metadata", [{"tool_calls": True}, {"finish_reason": "tool_calls"},
                                      {"llm_cancelled": True}])
async def test_a_tool_call_or_an_interruption_is_not_a_failure(reported, metadata):
    reasons, on_failure = reported
    assert await run(ReplyGuard(on_failure=on_failure), end(**metadata)) == []
    assert reasons == []


async def test_an_answer_is_passed_on_untouched(reported):
    reasons, on_failure = reported
    assert await run(ReplyGuard(on_failure=on_failure), LLMTextFrame("Hi."), end()) == ["Hi."]
    assert reasons == []


async def test_without_an_apology_it_is_only_reported(reported):
    """Text mode: nothing is said; the mode prints that the persona did not answer."""
    reasons, on_failure = reported
    assert await run(ReplyGuard(apology=None, on_failure=on_failure), end()) == []
    assert len(reasons) == 1


def test_both_sides_use_the_same_metadata_keys():
    assert (reply_guard.FINISH_REASON, reply_guard.LLM_ERROR, reply_guard.LLM_CANCELLED,
            reply_guard.TOOL_CALLS) == (llm.FINISH_REASON, llm.LLM_ERROR, llm.LLM_CANCELLED,
                                        llm.TOOL_CALLS)


async def test_the_service_says_in_the_end_frame_that_the_completion_failed(monkeypatch):
    """A completion that raises (here: nothing listens on the port) ends with ``llm_error``,
    the secret scrubbed from it."""
    from config import Settings, persona_from_dict
    from config.logging import register_secrets
    from services.selection import EngineChoice
    from tests.test_embedded_llm_prompting import one_request

    secret = "sk-guard-SECRET-1234"
    register_secrets([secret])
    p = persona_from_dict({"system_prompt": "x", "layers": {"llm": {
        "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": secret}}}).value
    svc = llm.build_llm(EngineChoice(layer="llm", engine="openai-compatible", reason="t",
                                     api_key=secret), p, Settings.from_env({}), "x")
    svc._client = svc._client.with_options(max_retries=0)
    (frame,) = await one_request(svc, [{"role": "user", "content": "Hi"}])
    assert frame.metadata["llm_error"] and secret not in frame.metadata["llm_error"]
    assert ReplyGuard.failure("", frame.metadata).startswith("the LLM request failed")
