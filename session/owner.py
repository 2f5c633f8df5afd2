"""``ConversationSession``: the one owner of one conversation, from start to end.

Every run mode (local page, Daily, Tavus transport, text, one-shot), the test
harness and the benchmarks assemble a conversation here, so what is tested and
measured is what runs::

    async with ConversationSession(app, transport="webrtc", renderer=plan) as session:
        transport = await make_transport(runner_args, session.options, video=session.video is not None,
                                         perception_fps=session.perception_fps)
        session.build(transport)
        await session.run()

Entering the session resolves what the conversation needs, in order: the
engine plan, the system prompt, the services (waiting for embedded servers),
the Tavus conversation of a replica (video renderer or Tavus transport) and the
conversation's record. :meth:`build` assembles the pipeline and worker on the
transport the run mode supplies and follows the transport's participant events
(join: the lifecycle is told and the persona greets; leave: the left timeout).
Leaving the session tears everything down on every exit path: the Tavus
conversation is ended, the record closed with its shutdown reason, and the
shutdown and transcript callbacks queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from loguru import logger

from config.app import AppConfig
from config.prompt import system_prompt_for
from conversation.lifecycle import (
    END_GRACE_SECS,
    INTERRUPTED,
    JOIN_FAILED,
    ConversationLifecycle,
    records,
)
from conversation.transcript import Transcript
from services import EnginePlan, Services, build_services, select_engines
from services.pipecat_seam import has_event_handler
from services.tavus.plan import RendererPlan, plan_renderer
from session.builder import PersonaPipeline, build_pipeline, build_worker, new_conversation_id
from session.errors import SessionError
from session.memory import release_soon
from tools import ToolRegistry

NO_RENDERER = RendererPlan("none", reason="audio only")

# Ctrl-C: how long ending the replica's conversation and closing its HTTP session may
# take before the process goes on exiting (Tavus's own timeouts, sent at creation, and
# the atexit hook end a conversation this leaves open).
QUICK_END_SECS = 1.5
# How long the end-of-call perception analysis may take (a vision model's summary).
ANALYSIS_SECS = 25.0

_live: set[ConversationSession] = set()  # started and not yet torn down
_interrupted = False


def process_interrupted() -> bool:
    """Whether Ctrl-C / SIGTERM has been received (what ends now must end quickly)."""
    return _interrupted


async def interrupt_all() -> int:
    """Ctrl-C / SIGTERM of the process: every running conversation ends now.

    Each is cancelled (no reply is finished) and recorded as ``bot process
    interrupted``; its replica is ended within :data:`QUICK_END_SECS`. Returns how
    many were running.
    """
    global _interrupted
    _interrupted = True
    sessions = list(_live)
    for session in sessions:
        session.interrupted = True
        session.lifecycle.ending_because(INTERRUPTED)
    await asyncio.gather(*(session.cancel() for session in sessions), return_exceptions=True)
    return len(sessions)


def plan_for(app: AppConfig, force_local: bool) -> EnginePlan:
    """The engine plan of this configuration (the session's, ``--check``'s and start-up's)."""
    return select_engines(app.persona, app.settings, force_local=force_local)


def renderer_plan_for(app: AppConfig, requested: str = "auto") -> RendererPlan:
    """The renderer of this configuration (``--renderer``; see :func:`services.tavus.plan.plan_renderer`)."""
    return plan_renderer(requested, app.conversation, app.persona, app.settings)


class ConversationSession:
    """One conversation: engines, services, prompt, record, replica, pipeline, worker, lifecycle.

    Args:
        app: the loaded persona, conversation request and settings.
        transport: what the record calls the transport (``webrtc``, ``daily``, ``tavus``,
            ``text``, ``file``).
        force_local: run every layer on the embedded models (``--local``).
        renderer: the replica (see :func:`services.tavus.plan.plan_renderer`); none by default.
        stt, tts: build these layers (text mode has neither; echo mode never has STT or LLM).
        registry: local tool handlers (default: the built-ins and ``tools/*.py``).
        lifecycle: a lifecycle of the caller's (tests); by default one on this process's records.
        conversation_id: the conversation's id (default: a new one; ``-t daily`` names its room
            after it first). With ``--renderer transport`` the user joins Tavus's room, and the
            conversation goes by that room's (the Tavus conversation's) id instead; with the
            video renderer it keeps its own. The other id is accepted from clients too.
        replace_services: called with the built services before they are used
            (the benchmarks swap in stand-ins).
    """

    def __init__(
        self,
        app: AppConfig,
        *,
        transport: str,
        force_local: bool = False,
        renderer: RendererPlan = NO_RENDERER,
        stt: bool = True,
        tts: bool = True,
        registry: ToolRegistry | None = None,
        lifecycle: ConversationLifecycle | None = None,
        replace_services: Callable[[Services], None] | None = None,
        conversation_id: str | None = None,
    ):
        self.app = app
        self.options = app.options
        self.renderer = renderer
        self._force_local = force_local
        self._layers = {"stt": stt and not self.options.echo, "llm": not self.options.echo,
                        "tts": tts}
        self._registry = registry
        self._replace_services = replace_services
        if lifecycle is None:
            store, callbacks = records(app.settings)
            lifecycle = ConversationLifecycle(
                store=store, callbacks=callbacks,
                conversation_id=conversation_id or new_conversation_id(),
                conversation=app.conversation, persona=app.persona,
                persona_source=app.persona_source, transport=transport,
                replica_id=renderer.replica_id,
            )
        self.lifecycle = lifecycle
        self._own_id = lifecycle.conversation_id  # before a Tavus room's id may replace it
        self.plan: EnginePlan | None = None
        self.system_prompt = ""
        self.services: Services | None = None
        self.tavus: Any = None  # the Tavus conversation of a replica
        self.http: Any = None  # the aiohttp session the Tavus classes share
        self.video: Any = None  # the video renderer (TavusVideoRenderer), if any
        self.built: PersonaPipeline | None = None
        self.knowledge: Any = None  # the conversation's documents and memories, if any
        from perception import plan_for as perception_plan

        self.perception = perception_plan(app)  # what it perceives (None: nothing)
        self._analysis: str | None = None  # the end-of-call perception analysis, once made
        self.worker: Any = None
        self._runner: Any = None
        self._task: asyncio.Task | None = None
        self._failure: tuple[type[Exception], str] | None = None
        self._stack = AsyncExitStack()
        self.interrupted = False  # set by interrupt_all()

    @property
    def conversation_id(self) -> str:
        return self.lifecycle.conversation_id

    @property
    def also_known_as(self) -> tuple[str, ...]:
        """The conversation's other id, which clients may use too (see ``conversation_id``)."""
        ids = {self._own_id, self.lifecycle.tavus_conversation_id} - {self.conversation_id, None}
        return tuple(sorted(ids))

    @property
    def perception_fps(self) -> float | None:
        """The sampling rate of the user's video for the transport (None: none captured)."""
        return self.perception.fps if self.perception is not None and self.perception.visual else None

    @property
    def transcript(self) -> Transcript:
        return self.built.transcript

    # ------------------------------------------------------------------ start

    async def __aenter__(self) -> ConversationSession:
        try:
            await self._prepare()
        except BaseException as exc:
            await self._teardown(exc)
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        await self._teardown(exc)
        return False

    async def _prepare(self) -> None:
        app = self.app
        self.plan = plan_for(app, self._force_local)
        self.system_prompt = system_prompt_for(app.persona, app.conversation, self.plan.tts.engine)
        self.services = build_services(self.plan, app.persona, app.conversation, app.settings,
                                       system_instruction=self.system_prompt, **self._layers)
        if self._replace_services is not None:
            self._replace_services(self.services)
        await self.services.ready()
        if self.renderer.mode != "none":
            await self._open_replica()
        tavus_id = self.tavus.conversation_id if self.tavus else None
        self.lifecycle.open(tavus_id if self.renderer.mode == "transport" else None,
                            tavus_conversation_id=tavus_id, system_prompt=self.system_prompt)
        # After open: with --renderer transport the conversation goes by the Tavus room's id.
        from knowledge.session import open_for_conversation

        self.knowledge = await open_for_conversation(
            app, self.conversation_id, llm=self.services.llm, records=self.lifecycle.store,
            recall_secs=app.settings.memory_recall_secs)

    async def _open_replica(self) -> None:
        """Create the replica's Tavus conversation; it is ended however the session ends."""
        import aiohttp

        from services.tavus.api import TavusAPI
        from services.tavus.conversations import open_conversation

        settings = self.app.settings
        self.http = await self._stack.enter_async_context(aiohttp.ClientSession())
        api = TavusAPI(settings.tavus_api_key or "", settings.tavus_api_url, self.http)
        self.tavus = await open_conversation(api, self.renderer, self.app.conversation,
                                             self.options.persona_name)
        tavus = self.tavus
        self._stack.push_async_callback(lambda: asyncio.shield(tavus.end("the session ended")))
        if self.renderer.mode == "video":
            from services.tavus.renderers import TavusVideoRenderer

            self.video = TavusVideoRenderer(
                conversation=tavus, session=self.http, bot_name=self.options.persona_name,
                on_failure=lambda _message: self.lifecycle.ending_because(JOIN_FAILED),
            )

    # ------------------------------------------------------------------ assembly

    def build(self, transport: Any, *, observers: Sequence[Any] = (), output: Any = None
              ) -> PersonaPipeline:
        """The pipeline and worker on ``transport`` (None in text mode, with ``output``)."""
        self.built = build_pipeline(
            self.app, transport, self.services, conversation_id=self.conversation_id,
            registry=self._registry, renderer=self.video, output=output,
            also_known_as=self.also_known_as, replica_id=self.renderer.replica_id,
            callbacks=self.lifecycle.callbacks, knowledge=self.knowledge,
            perception=self.perception if transport is not None else None,
        )
        if self.built.perception is not None:
            self.lifecycle.before_end = self._perception_analysis
        self.worker = build_worker(self.built, observers=list(observers))
        if self.built.objectives is not None:
            self.built.objectives.attach(self.worker, self.built.aggregators())
        self.lifecycle.attach(self.worker, self.built.transcript)
        if transport is not None:
            self._follow(transport)
            name = self.options.persona_name

            def show(entry) -> None:  # what was heard and said: DEBUG (INFO: LOG_TRANSCRIPT=1)
                from config.logging import loggable, transcript_level

                who = "User" if entry.role == "user" else name
                cut = " (interrupted)" if entry.interrupted else ""
                logger.log(transcript_level(), f"{who}: {loggable(entry.content)}{cut}")

            self.built.transcript.add_listener(show)
        return self.built

    def _follow(self, transport: Any) -> None:
        """Participants joining and leaving, and a room the bot cannot join."""
        if has_event_handler(transport, "on_client_connected"):

            @transport.event_handler("on_client_connected")
            async def _on_connected(_transport, client):
                logger.info(f"Participant joined {self.options.persona_name}")
                # A Daily / Tavus participant is a dict with its id; a WebRTC peer is not.
                participant = client.get("id") if isinstance(client, dict) else None
                await self.participant_joined(participant if isinstance(participant, str)
                                              else None)

            @transport.event_handler("on_client_disconnected")
            async def _on_disconnected(_transport, _client):
                logger.info("Participant left")
                await self.lifecycle.participant_left()

        if has_event_handler(transport, "on_error"):  # Daily

            @transport.event_handler("on_error")
            async def _on_error(_transport, error):
                if str(error).startswith("Error joining"):
                    await self.fail(f"could not join the room: {error}")

        if hasattr(transport, "set_on_fatal"):  # the Tavus transport

            async def fatal(message: str) -> None:
                from services.tavus.api import TavusError

                await self.fail(f"Tavus conversation {self.conversation_id}: {message}", TavusError)

            transport.set_on_fatal(fatal)

    async def participant_joined(self, participant_id: str | None = None) -> None:
        """Someone joined: the absent timer stops, the replica says it is there (to them:
        ``system.replica_joined``, which the room's start-up one never reached; to the room:
        ``system.replica_present``, before the next heartbeat) and greets (once)."""
        await self.lifecycle.participant_joined()
        await self.built.interactions.participant_joined(participant_id)
        await self.built.greet(self.worker)

    async def fail(self, message: str, error: type[Exception] = SessionError) -> None:
        """The bot cannot be in the room: stop now; :meth:`run` raises ``error(message)``."""
        if self._failure is None:
            self._failure = (error, message)
        self.lifecycle.ending_because(JOIN_FAILED)
        if self.running:
            await self.worker.cancel(reason=message)

    def refuse(self, error: BaseException) -> None:
        """The conversation cannot start (e.g. a bad input file): on record, with its callbacks."""
        self.lifecycle.finish(error=error)

    # ------------------------------------------------------------------ running

    async def start(self, *, handle_sigint: bool = False) -> None:
        """Run the worker in the background (see :meth:`wait` and :meth:`stop`)."""
        from pipecat.workers.runner import WorkerRunner

        if self.worker is None or self._task is not None:
            raise RuntimeError("start() needs a built conversation and runs it once")
        self._runner = WorkerRunner(handle_sigint=False)
        await self._runner.add_workers(self.worker)
        self._task = asyncio.create_task(self._runner.run())
        _live.add(self)
        if handle_sigint:
            _end_conversations_on_signals()

    @property
    def task(self) -> asyncio.Task | None:
        """The running worker (done when the pipeline has stopped); None before :meth:`start`."""
        return self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self, timeout: float | None = None) -> Transcript:
        """Until the pipeline has stopped; raises the reason the bot could not be in the room.

        A ``timeout`` leaves the pipeline running; cancelling the caller stops it.
        """
        if self._task is None:
            raise RuntimeError("wait() before start()")
        if timeout is None:
            await self._task
        else:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if self._failure is not None:
            error, message = self._failure
            raise error(message)
        return self.built.transcript

    async def run(self, *, handle_sigint: bool = False) -> Transcript:
        """Run until the conversation ends (the lifecycle or the transport ends it)."""
        await self.start(handle_sigint=handle_sigint)
        return await self.wait()

    async def stop(self, timeout: float = 15.0) -> None:
        """End now: what is being said finishes (``EndFrame``), cancelled after ``timeout``."""
        from pipecat.frames.frames import EndFrame

        if not self.running:
            return
        await self.worker.queue_frames([EndFrame()])
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            await self._runner.cancel()
            await self._task

    async def cancel(self) -> None:
        """What Ctrl-C does to a runner."""
        if self._runner is not None:
            await self._runner.cancel()

    # ------------------------------------------------------------------ end

    async def _perception_analysis(self) -> None:
        """The call is ending: the analysis of what was perceived, sent to the room
        (``conversation.perception_analysis``) while the pipeline still runs."""
        runner = self.built.perception if self.built is not None else None
        if runner is None or self._analysis is not None:
            return
        self._analysis = await runner.close() or ""
        if self._analysis and self.running:
            await self.built.interactions.emit("conversation.perception_analysis",
                                               {"analysis": self._analysis})

    def _send_analysis(self) -> None:
        """The analysis's callback (``application.perception_analysis``) and record event."""
        if self._analysis:
            self._analysis, analysis = "", self._analysis  # once, however often torn down
            self.lifecycle.callbacks.emit(self.conversation_id, self.lifecycle.callback_url,
                                          "application.perception_analysis", "application",
                                          {"analysis": analysis})

    async def _teardown(self, exc: BaseException | None) -> None:
        try:
            if self.running:  # left early (an error, a cancelled caller): stop the pipeline first
                await self._runner.cancel()
                await asyncio.wait({self._task}, timeout=END_GRACE_SECS)
            if self.built is not None and self.built.objectives is not None:
                await self.built.objectives.close()  # no extraction outlives the conversation
            if self.built is not None and self.built.perception is not None \
                    and self._analysis is None:
                # Ended without a graceful end (the participant left, an error, Ctrl-C).
                try:
                    self._analysis = await asyncio.wait_for(
                        self.built.perception.close(),
                        QUICK_END_SECS if self.interrupted else ANALYSIS_SECS) or ""
                except TimeoutError:
                    logger.warning(f"Conversation {self.conversation_id}: the perception "
                                   "analysis took too long; none is sent")
                    self._analysis = ""
            if self.interrupted:
                try:
                    await asyncio.wait_for(self._stack.aclose(), QUICK_END_SECS)
                except TimeoutError:
                    logger.warning(f"Conversation {self.conversation_id}: the replica did not "
                                   f"end within {QUICK_END_SECS}s; Tavus's timeouts will end it")
            else:
                await self._stack.aclose()
        finally:
            _live.discard(self)
            error = None if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else exc
            self.lifecycle.finish(error=error, system_prompt=self.system_prompt or None)
            self._send_analysis()  # after the shutdown callback, as Tavus sends it
            if self.knowledge is not None and not self.interrupted:
                # Memories from the transcript just recorded (an interrupted process leaves
                # the job to its next start).
                await self.knowledge.close(self.services.llm if self.services else None,
                                           self.lifecycle.store)
            if not self.interrupted:
                release_soon()


def _end_conversations_on_signals() -> None:
    """SIGINT / SIGTERM end every live conversation now (:func:`interrupt_all`); a second
    Ctrl-C is the default KeyboardInterrupt again."""
    import signal

    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        logger.info("Stopping: ending the conversation in progress")
        for each in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(each)
        loop.create_task(interrupt_all())

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return
