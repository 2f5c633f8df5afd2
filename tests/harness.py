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
from pathlib import Path
from typing import Any

from config import Settings, conversation_from_dict, persona_from_dict
from pipeline.builder import PersonaPipeline, build_pipeline, build_worker
from pipeline.context import compose_system_prompt
from pipeline.file_transport import FileTransport, write_wav_mono16
from services import build_services, select_engines
from tests.fake_openai import FakeOpenAI
from tools import ToolRegistry, build_registry

BASE_PERSONA = {
    "persona_name": "Ava",
    "system_prompt": "You are Ava.",
    "layers": {"llm": {"model": "fake-model", "api_key": "test-key"}},
}


class Harness:
    """One running conversation."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.fake: FakeOpenAI | None = None
        self.transport: FileTransport | None = None
        self.built: PersonaPipeline | None = None
        self.worker = None
        self._runner = None
        self._task: asyncio.Task | None = None

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
        before_run: Any = None,
        **pipeline_kwargs: Any,
    ) -> Harness:
        from pipecat.workers.runner import WorkerRunner

        self.fake = await FakeOpenAI(answers=answers or ["Hello there."],
                                     delay_secs=llm_delay_secs).start()
        data = copy.deepcopy(persona or BASE_PERSONA)
        if data.get("pipeline_mode", "full") == "full":
            llm = data.setdefault("layers", {}).setdefault("llm", {})
            llm.setdefault("model", "fake-model")
            llm.setdefault("api_key", "test-key")
            llm["base_url"] = self.fake.base_url
        p = persona_from_dict(data).value
        conv = conversation_from_dict(conversation or {}).value
        settings = Settings.from_env({})
        plan = select_engines(p, settings)
        echo = p.pipeline_mode == "echo"
        services = build_services(plan, p, conv, settings, stt=not echo, llm=not echo,
                                  system_instruction=compose_system_prompt(p, conv))
        await services.ready()
        if audio_in is None:
            audio_in = self.tmp_path / "silence.wav"
            write_wav_mono16(audio_in, b"\x00\x00" * 8000, 16000)
        self.transport = FileTransport(audio_in, audio_in_filter=audio_in_filter)
        self.built = build_pipeline(
            p, conv, self.transport, services, registry=registry or build_registry(),
            data_dir=self.tmp_path / "data", **pipeline_kwargs,
        )
        self.worker = build_worker(self.built, idle_timeout_secs=None)
        if before_run is not None:  # e.g. attach a lifecycle before the pipeline starts
            before_run(self)
        self._runner = WorkerRunner(handle_sigint=False)
        await self._runner.add_workers(self.worker)
        self._task = asyncio.create_task(self._runner.run())
        await asyncio.sleep(0.3)  # StartFrame through the pipeline
        return self

    async def stop(self) -> None:
        from pipecat.frames.frames import EndFrame

        if self.transport:
            self.transport.finish()
        if self.worker and self._task and not self._task.done():
            await self.worker.queue_frames([EndFrame()])
            try:
                await asyncio.wait_for(self._task, 20)
            except TimeoutError:
                await self._runner.cancel()
        if self.fake:
            await self.fake.stop()

    async def send(self, message: dict) -> None:
        message = {"message_type": "conversation", **message}
        message.setdefault("conversation_id", self.built.conversation_id)
        await self.transport.receive_message(message)

    @property
    def events(self) -> list[dict]:
        """Protocol events only (the RTVI observer shares the data channel)."""
        return [m for m in self.transport.sent_messages
                if isinstance(m, dict) and "event_type" in m]

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
