"""LLM factories: OpenAI, any OpenAI-compatible server, and the local llama.cpp server."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.logging import scrub
from config.persona import Persona
from config.settings import Settings
from services.local.llama_server import LlamaServer, shared_server
from services.local.models import llm_gguf
from services.local.prompt_fit import PromptFitter, preload_tokenizer, tokenizer_for
from services.selection import EngineChoice, EngineSelectionError

# extra_body keys that are first-class sampling settings of Pipecat's OpenAI service.
_SAMPLING_KEYS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed",
                  "max_tokens", "max_completion_tokens")

# Placeholder for OpenAI-compatible servers that need no key (the OpenAI client insists on one).
NO_KEY = "not-needed"

# Sampling for speech on the embedded model (a persona's ``layers.llm.extra_body`` overrides
# any of them; the reply length is ``LLM_MAX_TOKENS``, see config/settings.py). A 135M model at
# the server's default temperature (0.8) wanders; 0.3 keeps it on the question. The stop
# sequences end a reply where the model starts a new paragraph or writes another speaker's
# turn as text: speech has no paragraphs. (llama-cpp-python renders the GGUF's own chat
# template, ChatML for SmolLM2, and already stops at its end-of-turn token <|im_end|>.)
LOCAL_SAMPLING: dict[str, Any] = {
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": ["\n\n", "<|im_start|>", "<|im_end|>", "\nUser:", "\nuser:", "\nAssistant:",
             "\nassistant:", "\nSystem:"],
}


class _FinishReasonStream:
    """A chat-completion stream that reports each choice's ``finish_reason`` as it passes
    (and, to ``tool_call``, that the response calls a tool)."""

    def __init__(self, stream: Any, record: Callable[[str], None],
                 tool_call: Callable[[], None] | None = None):
        self._stream = stream
        self._record = record
        self._tool_call = tool_call

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        async for chunk in self._stream:
            for choice in getattr(chunk, "choices", None) or ():
                if getattr(choice, "finish_reason", None):
                    self._record(choice.finish_reason)
                delta = getattr(choice, "delta", None)
                if self._tool_call is not None and getattr(delta, "tool_calls", None):
                    self._tool_call()
            yield chunk

    async def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            await close()


# Keys in LLMFullResponseEndFrame.metadata (pipeline/sentence_cut.py and pipeline/reply_guard.py
# read them).
FINISH_REASON = "finish_reason"
LLM_ERROR = "llm_error"  # why the completion failed (scrubbed of secrets), when it did
LLM_CANCELLED = "llm_cancelled"  # True: an interruption cancelled the completion
TOOL_CALLS = "tool_calls"  # True: the response called a tool (its answer comes after the result)


@functools.cache
def _persona_llm_class():
    from pipecat.frames.frames import LLMFullResponseEndFrame
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.openai.llm import OpenAILLMService

    class PersonaOpenAILLMService(OpenAILLMService):
        """``OpenAILLMService`` that also sends ``default_query`` parameters (Azure's api-version)
        and tells why each response ended.

        Pipecat does not pass the completion's ``finish_reason`` on; this service puts it in
        ``LLMFullResponseEndFrame.metadata["finish_reason"]`` ("stop", "length", ... or None
        when the stream broke off), so :class:`pipeline.sentence_cut.SentenceCut` can tell a
        reply cut by ``max_tokens`` from one that ended by itself. The same metadata tells
        :class:`pipeline.reply_guard.ReplyGuard` whether the completion failed
        (``llm_error``), was cancelled by an interruption (``llm_cancelled``) or called a
        tool (``tool_calls``).
        """

        def __init__(self, *, default_query: dict[str, str] | None = None, **kwargs):
            self._default_query = dict(default_query or {})
            self._finish_reason: str | None = None
            self._outcome: dict[str, Any] = {}
            super().__init__(**kwargs)

        def create_client(self, *args, **kwargs):
            client = super().create_client(*args, **kwargs)
            if self._default_query:
                client = client.with_options(default_query=self._default_query)
            return client

        async def get_chat_completions(self, context):
            self._finish_reason = None
            stream = await super().get_chat_completions(context)
            return _FinishReasonStream(stream, self._set_finish_reason, self._saw_tool_call)

        def _set_finish_reason(self, reason: str) -> None:
            self._finish_reason = reason

        def _saw_tool_call(self) -> None:
            self._outcome[TOOL_CALLS] = True

        async def _process_context(self, context):
            self._outcome = {}
            try:
                await super()._process_context(context)
            except asyncio.CancelledError:
                self._outcome[LLM_CANCELLED] = True
                raise
            except Exception as exc:  # the base class reports it (push_error); noted here too
                self._outcome[LLM_ERROR] = scrub(str(exc) or type(exc).__name__)
                raise

        async def push_frame(self, frame, direction=FrameDirection.DOWNSTREAM):
            if isinstance(frame, LLMFullResponseEndFrame) and direction == FrameDirection.DOWNSTREAM:
                frame.metadata.setdefault(FINISH_REASON, self._finish_reason)
                for key, value in self._outcome.items():
                    frame.metadata.setdefault(key, value)
                self._finish_reason = None
                self._outcome = {}
            await super().push_frame(frame, direction)

    return PersonaOpenAILLMService


def system_notes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Developer messages for a model without a developer role, as the embedded model gets them.

    Pipecat's default for such models turns a developer message into a *user* message, so
    a small model answers (or recites) the instruction as if the participant had said it
    ("Greeting the participant: ..."). Here instead:

    - the developer messages after the last user or assistant message (the instruction for
      the reply about to be generated: the greeting, an idle check-in) are appended to the
      system message, as a note;
    - earlier developer messages, already answered, are left out: the reply they produced
      stays in the conversation, the instruction would only invite a repeat.

    The input is not modified.
    """
    last_turn = max((i for i, m in enumerate(messages) if m.get("role") in ("user", "assistant",
                                                                            "tool")), default=-1)
    notes = [m for i, m in enumerate(messages) if m.get("role") == "developer" and i > last_turn]
    if not any(m.get("role") == "developer" for m in messages):
        return messages
    out = [dict(m) for m in messages if m.get("role") != "developer"]
    texts = [_text(m.get("content")) for m in notes]
    note = "\n\n".join(t for t in texts if t)
    if note:
        if out and out[0].get("role") == "system":
            out[0]["content"] = f"{_text(out[0].get('content'))}\n\n{note}".strip()
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


# The embedded model sees the last few messages only: a 135M model does not use a long history,
# it copies it (by the tenth exchange SmolLM2 answers every question with the pattern of its
# previous replies). Four messages keep a follow-up's context ("What should I see there first?").
LOCAL_HISTORY_MESSAGES = 4


def recent_history(messages: list[dict[str, Any]], keep: int | None = None):
    """The system message(s) plus the last ``keep`` messages, starting at a user message.

    ``keep`` defaults to :data:`LOCAL_HISTORY_MESSAGES` (0: everything). Starting at a user
    message keeps a tool call and its result together. The input is not modified; with
    ``keep`` or fewer conversation messages it is returned as is.
    """
    keep = LOCAL_HISTORY_MESSAGES if keep is None else keep
    if keep <= 0:
        return messages
    head = [m for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) <= keep:
        return messages
    recent = turns[-keep:]
    while recent and recent[0].get("role") != "user":
        recent = recent[1:]
    if not recent:  # no user message among the last ones: keep from the last user message on
        last_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
        recent = turns[last_user:] if last_user is not None else turns[-keep:]
    return head + recent


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict)).strip()
    return ""


def reply_tokens(params: dict[str, Any]) -> int | None:
    """The reply's token cap in a chat-completion request (``max_tokens``, maybe in ``extra_body``)."""
    for value in (params.get("max_tokens"), (params.get("extra_body") or {}).get("max_tokens"),
                  params.get("max_completion_tokens")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@functools.cache
def _local_llm_class():
    cls = _persona_llm_class()

    class LocalLLMService(cls):
        """The embedded llama.cpp model: developer messages become system notes (:func:`system_notes`),
        it sees the recent history only (:func:`recent_history`), and the prompt is fitted to
        the server's context (``prompt_fit``, :class:`services.local.prompt_fit.PromptFitter`).

        Each request first waits until the server answers (``local_server.wait_ready``: at
        once while it is healthy; after its child process died, until the supervisor has
        restarted it, see :class:`services.local.llama_server.LlamaServer`).

        ``supports_developer_role`` stays True so Pipecat leaves the developer role in place
        for :func:`system_notes` to find; the server never receives it.
        """

        supports_developer_role = True

        def __init__(self, *, prompt_fit: PromptFitter | None = None, **kwargs):
            self.prompt_fit = prompt_fit
            self.local_server = None  # set by the factory; the session waits on it too
            super().__init__(**kwargs)

        async def get_chat_completions(self, context):
            wait_ready = getattr(self.local_server, "wait_ready", None)
            if wait_ready is not None:
                await wait_ready()
            return await super().get_chat_completions(context)

        def build_chat_completion_params(self, params_from_context):
            params = super().build_chat_completion_params(params_from_context)
            messages = recent_history(system_notes(list(params["messages"])))
            if self.prompt_fit is not None:
                messages = self.prompt_fit.fit(messages, reply_tokens(params))
            params["messages"] = messages
            return params

    return LocalLLMService


def llm_settings(
    cls,
    model: str,
    extra_body: dict[str, Any],
    max_tokens: int | None,
    system_instruction: str | None = None,
):
    """Map persona ``extra_body`` onto the service's settings.

    Known sampling keys become settings fields (runtime-changeable); anything
    else travels in the request's ``extra_body`` untouched.
    """
    fields = {k: extra_body[k] for k in _SAMPLING_KEYS if k in extra_body}
    rest = {k: v for k, v in extra_body.items() if k not in _SAMPLING_KEYS}
    if max_tokens is not None and "max_tokens" not in fields and "max_completion_tokens" not in fields:
        fields["max_tokens"] = max_tokens
    return cls.Settings(
        model=model,
        system_instruction=system_instruction or None,
        extra={"extra_body": rest} if rest else {},
        **fields,
    )


def _build_openai(choice: EngineChoice, persona: Persona, settings: Settings, system: str | None):
    llm = persona.layers.llm
    cls = _persona_llm_class()
    return cls(
        api_key=choice.api_key,
        default_headers=llm.headers or None,
        default_query=llm.default_query,
        settings=llm_settings(cls, choice.model or settings.openai_model, llm.extra_body, None, system),
    )


def _build_openai_compatible(
    choice: EngineChoice, persona: Persona, settings: Settings, system: str | None
):
    llm = persona.layers.llm
    cls = _persona_llm_class()
    service = cls(
        api_key=choice.api_key or NO_KEY,
        base_url=llm.base_url,
        default_headers=llm.headers or None,
        default_query=llm.default_query,
        settings=llm_settings(cls, choice.model or "", llm.extra_body, None, system),
    )
    # Most OpenAI-compatible servers (llama.cpp, vLLM, Ollama) reject the "developer" role.
    service.supports_developer_role = False
    return service


def local_llm_server(settings: Settings) -> LlamaServer:
    """The process-wide local llama.cpp server (started if needed)."""
    return shared_server(
        llm_gguf(settings.local_llm_gguf),
        threads=settings.llama_server_threads,
        n_ctx=settings.llama_server_ctx,
    )


def local_sampling(extra_body: dict[str, Any]) -> dict[str, Any]:
    """The embedded model's request settings: :data:`LOCAL_SAMPLING` under the persona's ``extra_body``."""
    extra = dict(extra_body)
    # llama.cpp accepts max_tokens, not max_completion_tokens.
    if "max_completion_tokens" in extra:
        extra.setdefault("max_tokens", extra.pop("max_completion_tokens"))
    return {**LOCAL_SAMPLING, **extra}


def local_prompt_fit(server: Any, settings: Settings) -> PromptFitter:
    """The prompt fitter for one conversation on ``server`` (its ``n_ctx`` and GGUF's tokenizer).

    The tokenizer loads in the background now, once per process, so no turn waits for it.
    """
    gguf = getattr(server, "gguf", None)
    if gguf is None:
        try:
            gguf = llm_gguf(settings.local_llm_gguf)
        except Exception:  # noqa: BLE001 - no model on disk: prompts are fitted by bytes
            gguf = None
    gguf = Path(gguf) if gguf is not None else None
    preload_tokenizer(gguf)
    return PromptFitter(getattr(server, "n_ctx", None) or settings.llama_server_ctx,
                        lambda: tokenizer_for(gguf))


def _build_local(choice: EngineChoice, persona: Persona, settings: Settings, system: str | None):
    server = local_llm_server(settings)
    cls = _local_llm_class()
    extra = local_sampling(persona.layers.llm.extra_body)
    service = cls(
        api_key=NO_KEY,
        base_url=server.base_url,
        settings=llm_settings(
            cls, LlamaServer.MODEL_ALIAS, extra, settings.llm_max_tokens, system
        ),
        prompt_fit=local_prompt_fit(server, settings),
    )
    # llama.cpp rejects the "developer" role: the class turns those messages into system notes.
    service.local_server = server  # the session waits on it before the first turn
    # The bundled SmolLM2-135M was not trained to call functions: tools offered to it
    # never get called and only lengthen its prompt (seconds of prefill on 2 cores).
    # A GGUF of the user's own (LOCAL_LLM_GGUF) is offered them.
    service.calls_tools = settings.local_llm_gguf is not None
    return service


LLM_BUILDERS: dict[str, Callable[..., Any]] = {
    "openai": _build_openai,
    "openai-compatible": _build_openai_compatible,
    "llama-local": _build_local,
}


def build_llm(
    choice: EngineChoice, persona: Persona, settings: Settings, system_instruction: str | None = None
):
    """Build the Pipecat LLM service for ``choice`` with the composed system prompt."""
    try:
        builder = LLM_BUILDERS[choice.engine]
    except KeyError:
        raise EngineSelectionError(f"unknown LLM engine {choice.engine!r}") from None
    return builder(choice, persona, settings, system_instruction)
