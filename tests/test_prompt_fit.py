"""The embedded model's prompt fits its context: the system prompt's beginning and end always
stay, the oldest turns go first, one warning per conversation (services/local/prompt_fit.py).

Counted with the bundled SmolLM2 GGUF's own tokenizer (its vocabulary, loaded in process)."""

from __future__ import annotations

import pytest
from loguru import logger

from services.local.models import llm_gguf
from services.local.prompt_fit import (
    TEMPLATE_TOKENS,
    TOKENS_PER_MESSAGE,
    ByteCounter,
    PromptFitter,
    tokenizer_for,
)

PERSONA_PROMPT = "You are Ava, a museum guide. Answer in one or two short sentences."
LANGUAGE = "Always reply in Spanish."
# One documented-maximum conversation.append_llm_context: 100,000 characters.
APPENDED = ("The museum opens at nine and closes at five. The harbour hall shows the old "
            "ships. " * 1200)[:100_000]


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(llm_gguf())


def fitter(tokenizer, n_ctx=4096):
    return PromptFitter(n_ctx, lambda: tokenizer)


def prompt_tokens(tokenizer, messages) -> int:
    """What the server counts, within the template's allowance (see test_real_server_agrees)."""
    return sum(tokenizer.count(m["content"]) + TOKENS_PER_MESSAGE for m in messages) + TEMPLATE_TOKENS


@pytest.fixture
def warnings():
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    yield seen
    logger.remove(sink)


def test_the_bundled_tokenizer_loads(tokenizer):
    assert not isinstance(tokenizer, ByteCounter)
    assert tokenizer.count("Hello world") == 2
    assert tokenizer.text(tokenizer.tokens("Ünïcode <|im_end|> ok")) == "Ünïcode <|im_end|> ok"


def test_a_prompt_that_fits_is_sent_unchanged_and_nothing_is_tokenized():
    def no_tokenizer():
        raise AssertionError("an ordinary prompt must not be tokenized")

    messages = [{"role": "system", "content": PERSONA_PROMPT}, {"role": "user", "content": "Hi"}]
    assert PromptFitter(4096, no_tokenizer).fit(messages, 60) is messages


def test_an_appended_100k_context_is_cut_to_fit_keeping_the_prompt_and_the_turn(tokenizer, warnings):
    system = f"{PERSONA_PROMPT}\n\n{APPENDED}\n\n{LANGUAGE}"
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "When does the museum open?"}]
    fit = fitter(tokenizer)
    out = fit.fit(messages, 60)
    assert prompt_tokens(tokenizer, out) <= 4096 - 60
    assert out[0]["role"] == "system" and out[0]["content"].startswith(PERSONA_PROMPT)
    assert out[0]["content"].endswith(LANGUAGE)  # the end of the system prompt stays too
    assert "[…]" in out[0]["content"]
    assert out[1:] == messages[1:]  # the turns fit beside it
    assert fit.changes == ["system"]
    assert messages[0]["content"] == system  # the input is left alone
    # Most of the room is used: the cut is not wasteful.
    assert prompt_tokens(tokenizer, out) > 0.7 * (4096 - 60)
    # The same cut on every turn (llama.cpp then reuses the evaluated prefix).
    again = fit.fit([*messages, {"role": "assistant", "content": "At nine."},
                     {"role": "user", "content": "And closes?"}], 60)
    assert again[0]["content"] == out[0]["content"]
    assert [w for w in warnings if "system prompt" in w] == [warnings[0]]  # once, not per turn
    assert "4096 tokens" in warnings[0] and "LLAMA_SERVER_CTX" in warnings[0]


def test_the_warning_is_once_per_conversation(tokenizer, warnings):
    messages = [{"role": "system", "content": f"{PERSONA_PROMPT}\n\n{APPENDED}"},
                {"role": "user", "content": "Hi"}]
    first = fitter(tokenizer, 1024)
    for _ in range(3):
        first.fit(messages, 60)
    fitter(tokenizer, 1024).fit(messages, 60)  # another conversation
    assert len(warnings) == 2


def test_the_oldest_turns_go_first_and_the_window_starts_at_a_user_message(tokenizer, warnings):
    system = {"role": "system", "content": PERSONA_PROMPT}
    long_turn = "Tell me everything about the harbour hall and its ships. " * 40  # ~500 tokens
    turns = []
    for i in range(3):
        turns += [{"role": "user", "content": f"{i}: {long_turn}"},
                  {"role": "assistant", "content": f"{i}: {long_turn}"}]
    turns.append({"role": "user", "content": "And the opening hours?"})
    out = fitter(tokenizer, 1024).fit([system, *turns], 60)
    assert out[0] == system  # never dropped, not cut
    assert out[1]["role"] == "user" and out[-1] == turns[-1]
    assert out[1:] == turns[-len(out) + 1:]  # the most recent turns, in order
    assert len(out) < 1 + len(turns)
    assert prompt_tokens(tokenizer, out) <= 1024 - 60
    assert any("older turns" in w for w in warnings)


def test_a_last_message_too_long_on_its_own_is_cut(tokenizer):
    question = "Where is the harbour hall? " * 400  # ~2,800 tokens
    out = fitter(tokenizer, 1024).fit([{"role": "system", "content": PERSONA_PROMPT},
                                       {"role": "user", "content": question}], 60)
    assert out[0]["content"] == PERSONA_PROMPT
    assert out[1]["role"] == "user" and "[…]" in out[1]["content"]
    assert prompt_tokens(tokenizer, out) <= 1024 - 60


def test_without_the_tokenizer_bytes_bound_the_count(warnings):
    out = PromptFitter(1024, ByteCounter).fit(
        [{"role": "system", "content": f"{PERSONA_PROMPT}\n\n{APPENDED}"},
         {"role": "user", "content": "Hi"}], 60)
    assert len(out[0]["content"].encode()) + len("Hi") <= 1024 - 60
    assert out[0]["content"].startswith(PERSONA_PROMPT)
    assert any("byte count" in w for w in warnings)


def test_a_file_that_is_not_a_gguf_gives_the_byte_counter(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    assert isinstance(tokenizer_for(bogus), ByteCounter)


# --------------------------------------------------------------------------- the service


class _Server:
    def __init__(self, base_url: str, n_ctx: int):
        self.base_url = base_url
        self.n_ctx = n_ctx


async def test_the_local_service_sends_the_fitted_prompt(monkeypatch):
    """The embedded engine's requests are fitted (to the server's n_ctx); cloud ones are not."""
    import copy

    from config import Settings, persona_from_dict
    from services import llm as llm_factory
    from services.selection import EngineChoice
    from tests.fake_openai import FakeOpenAI
    from tests.test_embedded_llm_prompting import one_request

    fake = await FakeOpenAI(answers=["At nine."]).start()
    try:
        monkeypatch.setattr(llm_factory, "local_llm_server",
                            lambda settings: _Server(fake.base_url, 1024))
        monkeypatch.setattr(llm_factory, "NO_KEY", "test-key")
        persona = persona_from_dict(copy.deepcopy({"system_prompt": PERSONA_PROMPT})).value
        system = f"{PERSONA_PROMPT}\n\n{APPENDED}"
        local = llm_factory.build_llm(EngineChoice(layer="llm", engine="llama-local", reason="t"),
                                      persona, Settings.from_env({}), system)
        assert local.prompt_fit.n_ctx == 1024
        await one_request(local, [{"role": "user", "content": "When does it open?"}])
        sent = fake.requests[0]["messages"]
        assert sent[0]["content"].startswith(PERSONA_PROMPT) and len(sent[0]["content"]) < 10_000
        assert sent[-1] == {"role": "user", "content": "When does it open?"}

        p = persona_from_dict({"system_prompt": PERSONA_PROMPT, "layers": {"llm": {
            "model": "m", "base_url": fake.base_url, "api_key": "test-key"}}}).value
        cloud = llm_factory.build_llm(
            EngineChoice(layer="llm", engine="openai-compatible", reason="t"), p,
            Settings.from_env({}), system)
        await one_request(cloud, [{"role": "user", "content": "When does it open?"}])
        assert fake.requests[1]["messages"][0]["content"] == system  # untouched
    finally:
        await fake.stop()
