"""Environment settings, read once at the edge and passed down explicitly.

Every variable is documented in ``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """Keys, endpoints and local-model overrides from the environment."""

    openai_api_key: str | None = None
    openai_model: str = "gpt-4.1-mini"
    deepgram_api_key: str | None = None
    cartesia_api_key: str | None = None
    elevenlabs_api_key: str | None = None
    daily_api_key: str | None = None
    tavus_api_key: str | None = None
    tavus_replica_id: str | None = None
    tavus_api_url: str = "https://tavusapi.com/v2"
    daily_api_url: str = "https://api.daily.co/v1"
    # Local models (all optional: the bundled ones are used when unset).
    local_llm_gguf: str | None = None
    local_whisper_model: str | None = None
    local_piper_voice: str | None = None
    llama_server_threads: int | None = None
    llama_server_ctx: int = 4096
    # The embedded model's reply cap: one or two spoken sentences (a persona's extra_body
    # max_tokens wins). Cloud LLMs get no cap from here.
    llm_max_tokens: int = 60
    data_dir: Path = Path("data")
    tool_timeout_secs: float = 10.0
    client_tool_timeout_secs: float = 30.0
    # Callbacks to the conversation's callback_url.
    callback_signing_secret: str | None = None
    callback_timeout_secs: float = 10.0
    callback_max_attempts: int = 8
    callback_backoff_secs: float = 1.0
    # Signalling (the local page's POST /api/offer): a peer must connect within this
    # long or its offer is dropped before any conversation is built; offers per client
    # address per minute.
    peer_connect_timeout_secs: float = 10.0
    offers_per_minute: int = 10
    # Conversations at once (the local server); None: derived from the machine and engines
    # (transports/capacity.py). Beyond it an offer is 503 "busy, try again".
    max_conversations: int | None = None
    # Required (or --insecure) to bind beyond loopback: every request must carry it.
    access_token: str | None = None
    # Knowledge base: how long a turn waits for its passages past the end of the user's turn
    # (then it is answered without them); hosts that may be fetched although private
    # (host[:port] list, * for any: tests, an intranet); how long recalling memories may take.
    knowledge_budget_secs: float = 0.3
    knowledge_allow_hosts: str | None = None
    memory_recall_secs: float = 1.0
    # Perception (layers.perception): frames per second taken from each video source (camera,
    # screen share); the share of one core its detectors may use (a frame that would exceed it
    # is dropped); how old an observation may be and still reach the LLM. A vision-capable
    # OpenAI-compatible model answers the queries instead of the local detectors when a model
    # is named (base URL default OpenAI's; key default OPENAI_API_KEY).
    perception_fps: float = 1.0
    perception_cpu_budget: float = 0.25
    perception_stale_secs: float = 10.0
    perception_vision_model: str | None = None
    perception_vision_base_url: str | None = None
    perception_vision_api_key: str | None = None

    _ENV: ClassVar[dict[str, str]] = {
        "openai_api_key": "OPENAI_API_KEY",
        "openai_model": "OPENAI_MODEL",
        "deepgram_api_key": "DEEPGRAM_API_KEY",
        "cartesia_api_key": "CARTESIA_API_KEY",
        "elevenlabs_api_key": "ELEVENLABS_API_KEY",
        "daily_api_key": "DAILY_API_KEY",
        "tavus_api_key": "TAVUS_API_KEY",
        "tavus_replica_id": "TAVUS_REPLICA_ID",
        "tavus_api_url": "TAVUS_API_URL",
        "daily_api_url": "DAILY_API_URL",
        "local_llm_gguf": "LOCAL_LLM_GGUF",
        "local_whisper_model": "LOCAL_WHISPER_MODEL",
        "local_piper_voice": "LOCAL_PIPER_VOICE",
        "llama_server_threads": "LLAMA_SERVER_THREADS",
        "llama_server_ctx": "LLAMA_SERVER_CTX",
        "llm_max_tokens": "LLM_MAX_TOKENS",
        "data_dir": "PERSONA_DATA_DIR",
        "tool_timeout_secs": "TOOL_TIMEOUT_SECS",
        "client_tool_timeout_secs": "CLIENT_TOOL_TIMEOUT_SECS",
        "callback_signing_secret": "CALLBACK_SIGNING_SECRET",
        "callback_timeout_secs": "CALLBACK_TIMEOUT_SECS",
        "callback_max_attempts": "CALLBACK_MAX_ATTEMPTS",
        "callback_backoff_secs": "CALLBACK_BACKOFF_SECS",
        "peer_connect_timeout_secs": "PEER_CONNECT_TIMEOUT_SECS",
        "offers_per_minute": "OFFERS_PER_MINUTE",
        "max_conversations": "MAX_CONVERSATIONS",
        "access_token": "ACCESS_TOKEN",
        "knowledge_budget_secs": "KNOWLEDGE_BUDGET_SECS",
        "knowledge_allow_hosts": "KNOWLEDGE_ALLOW_HOSTS",
        "memory_recall_secs": "MEMORY_RECALL_SECS",
        "perception_fps": "PERCEPTION_FPS",
        "perception_cpu_budget": "PERCEPTION_CPU_BUDGET",
        "perception_stale_secs": "PERCEPTION_STALE_SECS",
        "perception_vision_model": "PERCEPTION_VISION_MODEL",
        "perception_vision_base_url": "PERCEPTION_VISION_BASE_URL",
        "perception_vision_api_key": "PERCEPTION_VISION_API_KEY",
    }

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable behind a settings field."""
        return cls._ENV[field]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        for f in fields(cls):
            raw = _clean(env.get(cls._ENV[f.name]))
            if raw is None:
                continue
            if f.name in ("llama_server_threads", "llama_server_ctx", "llm_max_tokens",
                          "tool_timeout_secs", "client_tool_timeout_secs", "callback_timeout_secs",
                          "callback_max_attempts", "callback_backoff_secs",
                          "peer_connect_timeout_secs", "offers_per_minute",
                          "max_conversations", "knowledge_budget_secs", "memory_recall_secs",
                          "perception_fps", "perception_cpu_budget", "perception_stale_secs"):
                kind = float if f.name.endswith(("_secs", "_fps", "_budget")) else int
                try:
                    number = kind(raw)
                    if number <= 0:
                        raise ValueError
                except ValueError:
                    problems.append(f"{cls._ENV[f.name]} must be a positive number (got {raw!r})")
                    continue
                if f.name == "perception_fps" and number > 30:
                    problems.append(f"{cls._ENV[f.name]} is at most 30 frames a second "
                                    f"(got {raw!r})")
                    continue
                if f.name == "perception_cpu_budget" and number > 1:
                    problems.append(f"{cls._ENV[f.name]} is a share of one core, at most 1 "
                                    f"(got {raw!r})")
                    continue
                values[f.name] = number
            elif f.name in ("tavus_api_url", "daily_api_url", "perception_vision_base_url"):
                if not raw.startswith(("http://", "https://")):
                    problems.append(f"{cls._ENV[f.name]} must be an http(s) URL (got {raw!r})")
                    continue
                values[f.name] = raw.rstrip("/")
            elif f.name == "data_dir":
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        if problems:
            from config.errors import ConfigError, Problem

            raise ConfigError("environment", [Problem(path="", message=p) for p in problems])
        return cls(**values)  # type: ignore[arg-type]

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing text before it is shown (the keys, and
        credentials inside the API URLs)."""
        from config.redact import url_secrets

        return [
            s
            for s in (
                self.openai_api_key,
                self.deepgram_api_key,
                self.cartesia_api_key,
                self.elevenlabs_api_key,
                self.daily_api_key,
                self.tavus_api_key,
                self.perception_vision_api_key,
                self.callback_signing_secret,
                self.access_token,
                *url_secrets(self.tavus_api_url),
                *url_secrets(self.daily_api_url),
            )
            if s
        ]
