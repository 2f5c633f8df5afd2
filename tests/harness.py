"""A live conversation for tests: the real pipeline on a file transport, a scripted LLM.

Local Whisper and Piper run for real; the LLM is the real ``OpenAILLMService``
talking to :class:`~tests.fake_openai.FakeOpenAI` on loopback. App messages go
in with :meth:`Harness.send` and the bot's events are read from
``transport.sent_messages``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import Settings, conversation_from_dict, persona_from_dict
from config.app import AppConfig
from conversation.lifecycle import ConversationLifecycle, close_records
from services.tavus.plan import plan_renderer
from session.builder import PersonaPipeline
from session.owner import NO_RENDERER, ConversationSession
from tests.fake_openai import FakeOpenAI
from tools import ToolRegistry, build_registry
from transports.file import FileTransport, write_wav_mono16

BASE_PERSONA = {
    "persona_name": "Ava",
    "system_prompt": "You are Ava.",
    "layers": {"llm": {"model": "fake-model", "api_key": "test-key"}},
}


class Harness:
    """One running conversation, assembled by the same owner as every run mode."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.fake: FakeOpenAI | None = None
        self.transport: Any = None  # a FileTransport unless start(make_transport=...)
        self._sent: Callable[[], list] | None = None
        self.session: ConversationSession | None = None
        self.built: PersonaPipeline | None = None
        self.worker = None
        self._settings: Settings | None = None

    async def start(
        self,
        *,
        answers: list[Any] | None = None,
        persona: dict | None = None,
        conversation: dict | None = None,
        audio_in: Path | None = None,
        registry: ToolRegistry | None = None,
        llm_delay_secs: float = 0.0,
        audio_in_filter: Any = None,
        lifecycle: ConversationLifecycle | None = None,
        env: dict[str, str] | None = None,
        renderer: str = "none",
        force_local: bool = False,
        make_transport: Callable[[ConversationSession], Any] | None = None,
        transport_kind: str = "file",
        sent: Callable[[], list] | None = None,
        policies: Any = None,
        replace_services: Callable[[Any], None] | None = None,
    ) -> Harness:
        """Start the conversation. ``env``: settings (e.g. a fake Tavus); ``renderer``: the
        ``--renderer`` choice; ``lifecycle``: the test's own (records, callbacks);
        ``force_local``: the embedded LLM (``--local``) instead of the scripted fake.

        ``make_transport(session)``: another transport than the file one (``transport_kind``
        names it on the record), whose sent messages ``sent()`` returns; :meth:`send` is
        then the test's own business. ``policies``: the conversation's objectives and
        guardrails (``config.policies.Policies``); ``replace_services``: called with the
        built services (e.g. to make the LLM one that cannot call tools)."""
        try:
            self._extra = {"policies": policies, "replace_services": replace_services}
            return await self._start(answers, persona, conversation, audio_in, registry,
                                     llm_delay_secs, audio_in_filter, lifecycle, env, renderer,
                                     force_local, make_transport, transport_kind, sent)
        except BaseException:
            await self.stop()  # nothing of a half-started conversation is left running
            raise

    async def _start(self, answers, persona, conversation, audio_in, registry, llm_delay_secs,
                     audio_in_filter, lifecycle, env, renderer, force_local, make_transport,
                     transport_kind, sent) -> Harness:
        self.fake = await FakeOpenAI(answers=answers or ["Hello there."],
                                     delay_secs=llm_delay_secs).start()
        data = copy.deepcopy(persona or BASE_PERSONA)
        if data.get("pipeline_mode", "full") == "full" and not force_local:
            llm = data.setdefault("layers", {}).setdefault("llm", {})
            llm.setdefault("model", "fake-model")
            llm.setdefault("api_key", "test-key")
            llm["base_url"] = self.fake.base_url
        p = persona_from_dict(data).value
        conv = conversation_from_dict(conversation or {}).value
        self._settings = Settings.from_env(
            {"PERSONA_DATA_DIR": str(self.tmp_path / "data"), **(env or {})})
        app = AppConfig.of(p, conv, self._settings)
        if self._extra["policies"] is not None:
            app.policies = self._extra["policies"]
        plan = NO_RENDERER if renderer == "none" else plan_renderer(renderer, conv, p, self._settings)
        self.session = ConversationSession(app, transport=transport_kind, renderer=plan,
                                           force_local=force_local,
                                           registry=registry or build_registry(),
                                           lifecycle=lifecycle,
                                           replace_services=self._extra["replace_services"])
        await self.session.__aenter__()
        if make_transport is not None:
            self.transport, self._sent = make_transport(self.session), sent
        else:
            if audio_in is None:
                audio_in = self.tmp_path / "silence.wav"
                write_wav_mono16(audio_in, b"\x00\x00" * 8000, 16000)
            self.transport = FileTransport(audio_in, audio_in_filter=audio_in_filter)
        self.built = self.session.build(self.transport)
        self.worker = self.session.worker
        await self.session.start()
        await asyncio.sleep(0.3)  # StartFrame through the pipeline
        return self

    @property
    def task(self) -> asyncio.Task:
        """The running pipeline (done when it has stopped)."""
        return self.session.task

    async def stop(self) -> None:
        if isinstance(self.transport, FileTransport):
            self.transport.finish()
        if self.session is not None:
            session, self.session = self.session, None
            await session.stop(timeout=20)
            await session.__aexit__(None, None, None)
        if self.fake:
            await self.fake.stop()
        if self._settings is not None:
            close_records(self._settings)

    async def send(self, message: dict) -> None:
        message = {"message_type": "conversation", **message}
        message.setdefault("conversation_id", self.built.conversation_id)
        await self.transport.receive_message(message)

    @property
    def events(self) -> list[dict]:
        """Protocol events only (the RTVI observer shares the data channel)."""
        sent = self._sent() if self._sent is not None else self.transport.sent_messages
        return [m for m in sent if isinstance(m, dict) and "event_type" in m]

    def of(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e["event_type"] == event_type]

    def types(self) -> list[str]:
        return [e["event_type"] for e in self.events]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 30,
                       where=None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.of(event_type) if where is None or where(e)]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{event_type} x{count} not seen within {timeout}s; saw {self.types()}")
