"""LLM factories: OpenAI, any OpenAI-compatible server, and the local llama.cpp server."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from config.persona import Persona
from config.settings import Settings
from services.local.llama_server import LlamaServer, shared_server
from services.local.models import llm_gguf
from services.selection import EngineChoice, EngineSelectionError

# extra_body keys that are first-class sampling settings of Pipecat's OpenAI service.
_SAMPLING_KEYS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed",
                  "max_tokens", "max_completion_tokens")

# Placeholder for OpenAI-compatible servers that need no key (the OpenAI client insists on one).
NO_KEY = "not-needed"


@functools.cache
def _persona_llm_class():
    from pipecat.services.openai.llm import OpenAILLMService

    class PersonaOpenAILLMService(OpenAILLMService):
        """``OpenAILLMService`` that also sends ``default_query`` parameters (Azure's api-version)."""

        def __init__(self, *, default_query: dict[str, str] | None = None, **kwargs):
            self._default_query = dict(default_query or {})
            super().__init__(**kwargs)

        def create_client(self, *args, **kwargs):
            client = super().create_client(*args, **kwargs)
            if self._default_query:
                client = client.with_options(default_query=self._default_query)
            return client

    return PersonaOpenAILLMService


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


def _build_local(choice: EngineChoice, persona: Persona, settings: Settings, system: str | None):
    server = local_llm_server(settings)
    cls = _persona_llm_class()
    extra = dict(persona.layers.llm.extra_body)
    # llama.cpp accepts max_tokens, not max_completion_tokens.
    if "max_completion_tokens" in extra:
        extra.setdefault("max_tokens", extra.pop("max_completion_tokens"))
    service = cls(
        api_key=NO_KEY,
        base_url=server.base_url,
        settings=llm_settings(
            cls, LlamaServer.MODEL_ALIAS, extra, settings.llm_max_tokens, system
        ),
    )
    service.supports_developer_role = False  # llama.cpp rejects the "developer" role
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
