"""Tavus: REST contract, renderer choice, the video renderer in a real pipeline, the end
of the Tavus conversation on every exit path (normal end, cancel, crash, failed join, error),
and the Tavus room's app messages (the transport's user's reach the pipeline; the replica's,
and the video renderer's hidden room's, do not)."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

import aiohttp
import pytest

from config import Settings, conversation_from_dict, persona_from_dict
from services.rest import ApiError
from services.tavus.api import PIPECAT_PERSONA_ID, TavusAPI, TavusError
from services.tavus.conversations import conversation_body, open_conversation, open_conversations
from services.tavus.plan import plan_renderer
from services.tavus.renderers import TavusVideoRenderer
from tests.fake_rest import FakeTavus
from tests.harness import Harness

FAST = {"backoff_secs": 0.01}


def _conv(**fields):
    return conversation_from_dict(fields).value


def _persona(**fields):
    return persona_from_dict({"persona_name": "Ava", "system_prompt": "You are Ava.", **fields}).value


def _settings(**env):
    return Settings.from_env(env)


# --------------------------------------------------------------------------- renderer choice


def test_renderer_auto_is_none_without_key_or_when_audio_only():
    assert plan_renderer("auto", _conv(replica_id="r1"), _persona(), _settings()).mode == "none"
    plan = plan_renderer("auto", _conv(replica_id="r1", audio_only=True), _persona(),
                         _settings(TAVUS_API_KEY="k"))
    assert plan.mode == "none" and "audio_only" in plan.reason


def test_replica_resolution_order():
    key = {"TAVUS_API_KEY": "k", "TAVUS_REPLICA_ID": "r-env"}
    assert plan_renderer("auto", _conv(replica_id="r-conv"), _persona(default_replica_id="r-p"),
                         _settings(**key)).replica_id == "r-conv"
    plan = plan_renderer("auto", _conv(), _persona(default_replica_id="r-p"), _settings(**key))
    assert (plan.mode, plan.replica_id, plan.reason) == ("video", "r-p", "persona default_replica_id")
    plan = plan_renderer("transport", _conv(), _persona(), _settings(**key))
    assert (plan.mode, plan.replica_id, plan.reason) == ("transport", "r-env", "TAVUS_REPLICA_ID")


def test_renderer_requested_without_key_or_replica_is_a_clear_error():
    with pytest.raises(TavusError, match="needs TAVUS_API_KEY"):
        plan_renderer("video", _conv(replica_id="r1"), _persona(), _settings())
    with pytest.raises(TavusError, match="no Tavus replica: set replica_id .* default_replica_id .* TAVUS_REPLICA_ID"):
        plan_renderer("transport", _conv(), _persona(), _settings(TAVUS_API_KEY="k"))
    with pytest.raises(TavusError, match="audio_only"):
        plan_renderer("video", _conv(replica_id="r1", audio_only=True), _persona(),
                      _settings(TAVUS_API_KEY="k"))
    # auto with a key but no replica: audio only, not an error
    assert plan_renderer("auto", _conv(), _persona(), _settings(TAVUS_API_KEY="k")).mode == "none"


def test_conversation_body_per_mode():
    conv = _conv(replica_id="r1", conversation_name="Demo", require_auth=True, max_participants=3,
                 properties={"max_call_duration": 600, "participant_left_timeout": 5})
    key = _settings(TAVUS_API_KEY="k")
    video = conversation_body(plan_renderer("video", conv, _persona(), key), conv, "Ava")
    assert video == {
        "replica_id": "r1", "persona_id": PIPECAT_PERSONA_ID, "conversation_name": "Demo",
        "properties": {"max_call_duration": 600, "participant_left_timeout": 5,
                       "participant_absent_timeout": 300, "apply_greenscreen": False},
        "max_participants": 2,
    }
    transport = conversation_body(plan_renderer("transport", conv, _persona(), key), conv, "Ava")
    assert transport["require_auth"] is True and transport["max_participants"] == 3


# --------------------------------------------------------------------------- REST contract


async def _api(fake: FakeTavus, session, key: str | None = None) -> TavusAPI:
    return TavusAPI(key or fake.api_key, fake.base_url, session, **FAST)


async def test_create_and_end_conversation_on_the_wire():
    fake = await FakeTavus().start()
    try:
        async with aiohttp.ClientSession() as http:
            api = await _api(fake, http)
            conv = _conv(replica_id="r-test", require_auth=True)
            plan = plan_renderer("transport", conv, _persona(), _settings(TAVUS_API_KEY="k"))
            opened = await open_conversation(api, plan, conv, "Ava")
            assert opened.conversation_id in open_conversations()
            assert opened.join_url == f"{opened.conversation_url}?t={opened.meeting_token}"
            await opened.end("test")
            await opened.end("twice")  # idempotent
    finally:
        await fake.stop()
    create, end = fake.requests
    assert (create.method, create.path) == ("POST", "/v2/conversations")
    assert create.headers["x-api-key"] == fake.api_key
    assert create.headers["Content-Type"] == "application/json"
    assert create.body["replica_id"] == "r-test" and create.body["persona_id"] == "pipecat0"
    assert create.body["conversation_name"] == "Ava (Pipecat)"
    assert (end.method, end.path) == ("POST", f"/v2/conversations/{opened.conversation_id}/end")
    assert end.headers["x-api-key"] == fake.api_key
    assert opened.conversation_id not in open_conversations()


async def test_retries_with_backoff_on_429_and_5xx_then_succeeds():
    fake = await FakeTavus().start()
    fake.fail_next("POST /v2/conversations", 429, 503, 500)
    try:
        async with aiohttp.ClientSession() as http:
            api = await _api(fake, http)
            result = await api.create_conversation({"replica_id": "r-test", "persona_id": "pipecat0"})
    finally:
        await fake.stop()
    assert result["status"] == "active"
    assert len(fake.calls("POST", "/v2/conversations")) == 4


@pytest.mark.parametrize(
    ("status", "expected", "attempts"),
    [
        (401, r"Tavus rejected the API key \(401 Invalid access token\): check TAVUS_API_KEY", 1),
        (404, r"Tavus: persona 'p1': not found \(404", 1),
        (429, r"rate limited \(429\) 4 times; wait a minute", 4),
        (500, r"server error \(500 scripted failure 500\) after 4 attempts", 4),
        (400, r"persona 'p1' was refused \(400: scripted failure 400\)", 1),
    ],
)
async def test_errors_are_clear_and_only_429_5xx_are_retried(status, expected, attempts):
    fake = await FakeTavus(personas={"p1": {"persona_name": "P"}}).start()
    fake.fail_next("GET /v2/personas/{id}", *([status] * 4))
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(ApiError, match=expected) as info:
                await (await _api(fake, http)).get_persona("p1")
    finally:
        await fake.stop()
    assert info.value.status == status
    assert len(fake.requests) == attempts


async def test_wrong_key_never_appears_in_the_error():
    fake = await FakeTavus().start()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(ApiError) as info:
                await (await _api(fake, http, key="sk-wrong-secret")).get_replica("r-test")
    finally:
        await fake.stop()
    assert info.value.status == 401 and "sk-wrong-secret" not in str(info.value)


async def test_unreachable_tavus_is_a_clear_error():
    async with aiohttp.ClientSession() as http:
        api = TavusAPI("k", "http://127.0.0.1:9/v2", http, attempts=2, backoff_secs=0.01)
        with pytest.raises(ApiError, match=r"cannot reach http://127.0.0.1:9/v2 .* after 2 attempts"):
            await api.get_persona("p1")


# --------------------------------------------------------------------------- the video renderer


@pytest.fixture
def daily_room(monkeypatch):
    """Stand-in for the Daily media connection (not reachable offline): join succeeds or fails
    as told, app messages sent into the Tavus room are recorded.

    Daily's side of the room is played at the level of daily-python's event handler: Daily
    calls ``DailyTransportClient.on_participant_joined`` / ``on_app_message`` from its own
    thread, and so do :func:`arrive` and :func:`app_message` (``room.participants`` is what
    ``participants()`` answers). Participants already in the room, and the messages in
    ``room.at_join``, arrive during the join, and are handled before it returns: before
    the pipeline has started.
    """
    from pipecat.transports.daily.transport import DailyTransportClient

    room = SimpleNamespace(sent=[], join_error=None, joined=False, left=False, clients=[],
                           participants={}, at_join=[])

    async def join(self):
        if room.join_error:
            await self._callbacks.on_error(f"Error joining {self._room_url}: {room.join_error}")
            return
        room.joined = True
        room.clients.append(self)
        await self._callbacks.on_joined({"participants": {}})
        self._joined_event.set()  # as Daily's join does: queued events are handled from now
        for participant in list(room.participants.values()):
            await asyncio.to_thread(self.on_participant_joined, participant)
        for message, sender in room.at_join:
            await asyncio.to_thread(self.on_app_message, message, sender)
        await self._event_queue.join()

    async def leave(self):
        room.left = True

    async def send_message(self, frame):
        room.sent.append(frame.message)

    def participants(self):
        return {"local": {"id": "p-bot", "info": {"isLocal": True}}, **room.participants}

    async def noop(self, *args, **kwargs):
        return None

    async def arrive(participant):
        """A participant joins the room (after the bot)."""
        room.participants[participant["id"]] = participant
        await asyncio.to_thread(room.clients[-1].on_participant_joined, participant)

    async def app_message(message, sender):
        """Daily delivers an app message from ``sender`` (a participant id) to the bot."""
        await asyncio.to_thread(room.clients[-1].on_app_message, message, sender)

    room.arrive, room.app_message = arrive, app_message
    monkeypatch.setattr(DailyTransportClient, "join", join)
    monkeypatch.setattr(DailyTransportClient, "leave", leave)
    monkeypatch.setattr(DailyTransportClient, "send_message", send_message)
    monkeypatch.setattr(DailyTransportClient, "participants", participants)
    monkeypatch.setattr(DailyTransportClient, "capture_participant_video", noop)
    monkeypatch.setattr(DailyTransportClient, "capture_participant_audio", noop)
    monkeypatch.setattr(DailyTransportClient, "update_subscriptions", noop)
    return room


async def _video_session(tmp_path, fake: FakeTavus, http, **start):
    """A conversation with the video renderer, opened by the conversation owner on the fake Tavus."""
    harness = await Harness(tmp_path).start(
        renderer="video", conversation={"replica_id": "r-test"},
        env={"TAVUS_API_KEY": fake.api_key, "TAVUS_API_URL": fake.base_url}, **start)
    renderer = harness.session.video
    assert isinstance(renderer, TavusVideoRenderer)
    return harness, harness.session.tavus, renderer


async def _wait(predicate, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.e2e
async def test_video_renderer_sends_tts_to_tavus_forwards_the_replica_and_ends_on_normal_end(
    tmp_path, daily_room
):
    from daily.daily import AudioData  # noqa: F401 - the renderer's callback type
    from pipecat.frames.frames import TTSSpeakFrame

    fake = await FakeTavus().start()
    async with aiohttp.ClientSession() as http:
        harness, opened, renderer = await _video_session(tmp_path, fake, http)
        try:
            assert daily_room.joined
            await harness.worker.queue_frames([TTSSpeakFrame("Hello, I am Ava.")])
            echo = lambda: [m for m in daily_room.sent if m.get("event_type") == "conversation.echo"]
            assert await _wait(lambda: any(m["properties"]["done"] for m in echo()))
            # The replica's audio comes back from the Tavus room and goes to the user.
            await renderer._on_participant_joined({"id": "replica"})
            replica = SimpleNamespace(audio_frames=b"\x10\x27" * 1600, sample_rate=16000, num_channels=1)
            before = len(harness.transport.recorded)
            for _ in range(5):
                await renderer._on_participant_audio_data("replica", replica, "microphone")
            assert await _wait(lambda: len(harness.transport.recorded) > before)
        finally:
            await harness.stop()
    await fake.stop()
    messages = echo()
    assert {m["conversation_id"] for m in messages} == {opened.conversation_id}
    audio = b"".join(base64.b64decode(m["properties"]["audio"]) for m in messages)
    assert len(audio) > 16000 and messages[-1]["properties"]["done"] is True
    assert fake.ended() == [opened.conversation_id]
    assert daily_room.left


async def test_video_renderer_forwards_no_app_message_from_the_tavus_room(tmp_path, daily_room):
    """The renderer's hidden Tavus room holds only the replica: its app messages are Tavus's
    own events, ignored (a debug line), never an interaction of the pipeline."""
    from loguru import logger

    fake = await FakeTavus().start()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    async with aiohttp.ClientSession() as http:
        harness, opened, _ = await _video_session(tmp_path, fake, http)
        try:
            await daily_room.arrive({"id": "p-replica", "info": {"userName": "Replica",
                                                                 "userId": "tavus-replica-1"}})
            before = len(harness.fake.requests)
            for sender in ("p-replica", "p-someone"):
                await daily_room.app_message(
                    {"message_type": "conversation", "event_type": "conversation.respond",
                     "conversation_id": opened.conversation_id,
                     "properties": {"text": "Say something."}}, sender)
            await daily_room.clients[-1]._event_queue.join()  # both handled by the client
            await asyncio.sleep(1.0)
            assert len(harness.fake.requests) == before
            assert not harness.of("conversation.utterance") and not harness.of("system.error")
        finally:
            await harness.stop()
            logger.remove(sink)
    await fake.stop()
    ignored = [line for line in lines if "app message from" in line and "ignored" in line]
    assert len(ignored) == 2, lines[-20:]


async def test_cancel_ends_the_conversation(tmp_path, daily_room):
    fake = await FakeTavus().start()
    async with aiohttp.ClientSession() as http:
        harness, opened, _ = await _video_session(tmp_path, fake, http)
        await harness.session.cancel()  # what Ctrl-C does to a runner
        await asyncio.wait_for(harness.task, 20)
        await harness.stop()
    await fake.stop()
    assert fake.ended() == [opened.conversation_id]


async def test_a_crashed_pipeline_ends_the_conversation(tmp_path, daily_room):
    from pipecat.frames.frames import TextFrame
    from pipecat.processors.frame_processor import FrameDirection

    fake = await FakeTavus().start()
    async with aiohttp.ClientSession() as http:
        harness, opened, renderer = await _video_session(tmp_path, fake, http)

        # A processor fails fatally mid-conversation.
        tts = harness.built.services.tts
        original = tts.process_frame

        async def crash(frame, direction):
            if isinstance(frame, TextFrame) and frame.text == "crash":
                from pipecat.frames.frames import CancelWorkerFrame

                await tts.push_error("simulated crash", exception=RuntimeError("boom"))
                await tts.push_frame(CancelWorkerFrame(reason="crash"), FrameDirection.UPSTREAM)
                return
            await original(frame, direction)

        tts.process_frame = crash
        await harness.worker.queue_frames([TextFrame("crash")])
        await asyncio.wait_for(harness.task, 20)
        await harness.stop()
    await fake.stop()
    assert fake.ended() == [opened.conversation_id]


async def test_a_failed_join_stops_the_pipeline_and_ends_the_conversation(tmp_path, daily_room):
    daily_room.join_error = "RoomLookup failed"
    fake = await FakeTavus().start()
    async with aiohttp.ClientSession() as http:
        harness, opened, _ = await _video_session(tmp_path, fake, http)
        await asyncio.wait_for(harness.task, 20)  # the fatal error stops it on its own
        await harness.stop()
    await fake.stop()
    assert fake.ended() == [opened.conversation_id]


async def test_an_error_before_the_pipeline_runs_still_ends_the_conversation(tmp_path):
    from config.app import AppConfig
    from session.owner import renderer_plan_for
    from session.owner import ConversationSession

    fake = await FakeTavus().start()
    persona = tmp_path / "p.json"
    persona.write_text(json.dumps({
        "persona_name": "Ava", "system_prompt": "x", "default_replica_id": "r-test",
        "layers": {"llm": {"model": "m", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"}}}))
    app = AppConfig.load(persona, environ={"TAVUS_API_KEY": fake.api_key, "TAVUS_API_URL": fake.base_url,
                                           "PERSONA_DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(RuntimeError, match="building failed"):
        async with ConversationSession(app, transport="file", renderer=renderer_plan_for(app)) as session:
            conversation = session.tavus
            assert conversation.conversation_id in fake.conversations
            raise RuntimeError("building failed")
    await fake.stop()
    assert fake.ended() == [conversation.conversation_id]
    assert conversation.conversation_id not in open_conversations()


async def test_end_that_fails_is_left_to_the_exit_hook(tmp_path):
    from services.tavus import conversations

    fake = await FakeTavus().start()
    fake.fail_next("POST /v2/conversations/{id}/end", 500, 500, 500, 500)
    async with aiohttp.ClientSession() as http:
        api = await _api(fake, http)
        conv = _conv(replica_id="r-test")
        opened = await open_conversation(api, plan_renderer("video", conv, _persona(), _settings(TAVUS_API_KEY="k")), conv, "Ava")
        await opened.end("test")
    assert opened.conversation_id in open_conversations()
    await fake.stop()
    with FakeTavus(api_key=fake.api_key) as later:  # Tavus is back: the atexit hook ends it
        later.conversations[opened.conversation_id] = {"status": "active"}
        conversations.track(opened.conversation_id, later.base_url, later.api_key)
        await asyncio.to_thread(conversations.end_leftovers)
        assert later.ended() == [opened.conversation_id]
    assert open_conversations() == []


# --------------------------------------------------------------------------- the Tavus transport

REPLICA_NAME = "Replica Anna"  # the persona name Tavus gives the replica participant
REPLICA = {"id": "p-replica", "info": {"userName": REPLICA_NAME, "userId": "tavus-replica-1"}}
USER = {"id": "p-user", "info": {"userName": "Jo", "userId": "p-user"}}


async def _transport_session(tmp_path, fake: FakeTavus, daily_room, *, at_join=None, **start):
    """A ``--renderer transport`` conversation (``run_tavus_transport_session``'s transport) on
    the fake Tavus, its Daily room played by ``daily_room``: the replica and the user are in
    the room when the bot joins, and ``at_join(conversation)``'s ``(message, sender)`` pairs
    arrive then too (before the pipeline has started)."""
    from pipecat.transports.tavus.transport import TavusParams

    from services.tavus.renderers import PersonaTavusTransport
    from services.voice_isolation import input_filter

    forwarded: list[tuple[str, dict]] = []

    def make(session):
        transport = PersonaTavusTransport(
            conversation=session.tavus, session=session.http,
            bot_name=session.options.persona_name,
            params=TavusParams(audio_in_enabled=True, audio_out_enabled=True,
                               microphone_out_enabled=False,
                               audio_in_filter=input_filter(session.options.flow)),
        )

        @transport.event_handler("on_app_message")
        async def _on_app_message(_transport, message, sender):
            forwarded.append((sender, message))

        daily_room.participants.update({REPLICA["id"]: REPLICA, USER["id"]: USER})
        if at_join is not None:
            daily_room.at_join.extend(at_join(session.tavus))
        return transport

    harness = await Harness(tmp_path).start(
        renderer="transport", conversation={"replica_id": "r-test", "custom_greeting": "Hi."},
        env={"TAVUS_API_KEY": fake.api_key, "TAVUS_API_URL": fake.base_url},
        make_transport=make, transport_kind="tavus", sent=lambda: daily_room.sent, **start)
    return harness, harness.session.tavus, forwarded


def _tavus_fake() -> FakeTavus:
    return FakeTavus(personas={PIPECAT_PERSONA_ID: {"persona_name": REPLICA_NAME}})


def _message(conversation, event_type: str, **properties) -> dict:
    message = {"message_type": "conversation", "event_type": event_type,
               "conversation_id": conversation.conversation_id}
    if properties:
        message["properties"] = properties
    return message


def _user_texts(harness) -> list[str]:
    """The user turns in the LLM's context at its last request."""
    last = harness.fake.requests[-1]["messages"] if harness.fake.requests else []
    return [str(m.get("content")) for m in last if m.get("role") == "user"]


def _said(event: dict) -> dict:
    """An utterance's role and speech (its other properties, e.g. visual_context, aside)."""
    return {k: event["properties"][k] for k in ("role", "speech")}


async def _replied(harness, text: str) -> None:
    await harness.wait_for("conversation.utterance",
                           where=lambda e: _said(e) == {"role": "replica", "speech": text})


@pytest.mark.e2e
async def test_tavus_transport_answers_the_users_respond_and_ignores_the_replica(
    tmp_path, daily_room
):
    """The user's front end in the Tavus room talks to the bot with Daily app messages: a
    respond that arrives as the bot joins (before the pipeline has started) is answered. The
    replica's own messages are not forwarded: known by its participant id, or (before that
    is known) by Daily's record of the sender, ``tavus-replica`` in its user id."""
    fake = await _tavus_fake().start()
    early = lambda conv: [(_message(conv, "conversation.respond", text="What is your name?"),
                           USER["id"])]
    harness, opened, forwarded = await _transport_session(
        tmp_path, fake, daily_room, at_join=early, answers=["I am Ava.", "Goodbye."])
    try:
        await harness.wait_for("conversation.utterance", where=lambda e: _said(e) == {
            "role": "user", "speech": "What is your name?"})
        await _replied(harness, "I am Ava.")
        assert _user_texts(harness) == ["What is your name?"]

        # Tavus's replica talks in the room too: its events, and whatever else it sends.
        daily_room.participants["p-replica-2"] = {  # Daily knows it; its join not yet handled
            "id": "p-replica-2", "info": {"userName": "", "userId": "tavus-replica-2"}}
        for sender in (REPLICA["id"], "p-replica-2"):
            await daily_room.app_message(_message(opened, "conversation.utterance",
                                                  role="replica", speech="Hi."), sender)
            await daily_room.app_message(_message(opened, "conversation.respond",
                                                  text="The replica speaking."), sender)
        await daily_room.app_message(_message(opened, "conversation.respond", text="Bye?"),
                                     USER["id"])
        await _replied(harness, "Goodbye.")  # handled after the replica's: in Daily's order
    finally:
        await harness.stop()
        await fake.stop()
    assert _user_texts(harness) == ["What is your name?", "Bye?"]
    assert not harness.of("system.error")
    assert [sender for sender, _ in forwarded] == [USER["id"], USER["id"]]
    assert fake.ended() == [opened.conversation_id]


@pytest.mark.e2e
async def test_tavus_transport_interrupt_from_the_user_stops_the_replica(tmp_path, daily_room):
    long_text = " ".join(["This is a long sentence that keeps the replica busy."] * 8)
    fake = await _tavus_fake().start()
    harness, opened, _ = await _transport_session(tmp_path, fake, daily_room, answers=[long_text])
    to_replica = lambda: [m for m in daily_room.sent if m.get("event_type") == "conversation.interrupt"]
    try:
        await daily_room.app_message(_message(opened, "conversation.respond", text="Talk."),
                                     USER["id"])
        await harness.wait_for("conversation.utterance.streaming", count=2, where=lambda e: (
            e["properties"]["role"] == "replica"
            and e["properties"]["speech"].startswith("This is a long")))
        before = len(to_replica())
        await daily_room.app_message(_message(opened, "conversation.interrupt"), USER["id"])
        stopped = await harness.wait_for("conversation.replica.stopped_speaking",
                                         where=lambda e: e["properties"]["interrupted"])
        assert await _wait(lambda: len(to_replica()) > before)  # Tavus is told to stop too
    finally:
        await harness.stop()
        await fake.stop()
    assert to_replica()[-1]["conversation_id"] == opened.conversation_id
    said = harness.built.transcript.entries[-1]
    assert said.role == "assistant" and said.interrupted and len(said.content) < len(long_text)
    assert stopped and not harness.of("system.error")


@pytest.mark.e2e
async def test_tavus_transport_tool_result_resolves_a_client_tool_call(tmp_path, daily_room):
    """A tool the persona declares with no local handler is the client's: the user's front
    end gets ``conversation.tool_call`` in the room and answers with ``tool_result``."""
    from tests.fake_openai import ToolCall

    tool = {"type": "function", "function": {
        "name": "get_cures", "description": "get_cures", "parameters": {
            "type": "object", "properties": {"disease": {"type": "string"}},
            "required": ["disease"]}}}
    fake = await _tavus_fake().start()
    harness, opened, _ = await _transport_session(
        tmp_path, fake, daily_room,
        answers=[[ToolCall("get_cures", {"disease": "flu"}, id="call_k")], "Rest and fluids."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [tool]}}})
    try:
        assert harness.built.tools.client_tools == ["get_cures"]
        await daily_room.app_message(_message(opened, "conversation.respond", text="Flu?"),
                                     USER["id"])
        (call,) = await harness.wait_for("conversation.tool_call")
        assert call["properties"]["tool_call_id"] == "call_k"
        assert harness.built.tools.pending == ["call_k"]
        await daily_room.app_message(_message(opened, "conversation.tool_result",
                                              tool_call_id="call_k",
                                              output="Rest and fluids for a week."), USER["id"])
        results = lambda: [m for r in harness.fake.requests for m in r["messages"]
                           if m.get("role") == "tool" and m.get("tool_call_id") == "call_k"]
        assert await _wait(lambda: results())
        await _replied(harness, "Rest and fluids.")
    finally:
        await harness.stop()
        await fake.stop()
    assert "Rest and fluids for a week." in results()[0]["content"]
    assert "did not return a result" not in results()[0]["content"]
    assert harness.built.tools.pending == [] and not harness.of("system.error")
