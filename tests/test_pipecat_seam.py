"""Every Pipecat internal in ``services/pipecat_seam.py``, checked on real Pipecat objects.

An upgrade that removes or renames one fails here, with the member in the message,
instead of silently changing a conversation. Nothing touches the network: the Tavus
and Daily objects are built offline (an unused aiohttp session, dummy keys; a Daily
client is created but never joins).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
from types import SimpleNamespace

import aiohttp
import pytest

from services import pipecat_seam as seam


def _upgrade(member: str) -> str:
    return f"Pipecat upgrade removed/changed {member}; update services/pipecat_seam.py"


def _has(obj, name: str, member: str) -> None:
    """``name`` is set on the instance ``obj`` (where the seam reads or replaces it)."""
    assert name in vars(obj), _upgrade(member)


def _source_uses(func, pattern: str, member: str) -> None:
    assert re.search(pattern, inspect.getsource(func)), _upgrade(member)


async def _noop(*args, **kwargs):
    return None


def _tavus_callbacks():
    from pipecat.transports.tavus.transport import TavusCallbacks

    return TavusCallbacks(on_joined=_noop, on_participant_joined=_noop, on_participant_left=_noop)


def _conversation(meeting_token=None):
    from services.tavus.conversations import TavusConversation

    return TavusConversation(api=SimpleNamespace(api_key="k-dummy", end_conversation=_noop),
                             conversation_id="c-1", conversation_url="https://tavus.daily.co/c-1",
                             replica_id="r-1", meeting_token=meeting_token)


# --------------------------------------------------------------------------- the seam itself


def test_a_missing_member_is_a_loud_error_not_a_new_attribute():
    target = SimpleNamespace()
    with pytest.raises(seam.PipecatSeamError, match=r"removed/changed SimpleNamespace\._user_spee"):
        seam.set_speech_timeout(target, 1.0)
    assert not hasattr(target, "_user_speech_timeout")


# --------------------------------------------------------------------------- events


async def test_event_handlers_on_real_transports():
    """``BaseObject._event_handlers`` (has_event_handler): Tavus' transport declares no
    ``on_error``, Daily's does (the Daily transport creates its client offline, never joins)."""
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.transports.daily.transport import DailyTransport
    from pipecat.transports.tavus.transport import TavusTransport

    _has(FrameProcessor(), "_event_handlers", "BaseObject._event_handlers")
    async with aiohttp.ClientSession() as http:
        tavus = TavusTransport(bot_name="b", session=http, api_key="k-dummy", replica_id="r-1")
        assert seam.has_event_handler(tavus, "on_client_connected"), _upgrade(
            "TavusTransport event on_client_connected")
        assert not seam.has_event_handler(tavus, "on_error")
    daily = DailyTransport("https://example.daily.co/seam-test", None, "b")
    try:
        assert seam.has_event_handler(daily, "on_error"), _upgrade("DailyTransport event on_error")
        assert seam.has_event_handler(daily, "on_client_connected")
    finally:
        await daily._client.cleanup()  # release the Daily call client it created


async def test_register_and_call_event_handler_subclassing_api():
    """``BaseObject._register_event_handler`` / ``_call_event_handler``: how our processors
    (WakePhraseGate, InteractionsProcessor) declare and fire events."""
    from pipecat.processors.frame_processor import FrameProcessor

    class Emitter(FrameProcessor):
        def __init__(self):
            super().__init__()
            self._register_event_handler("on_ping")

    for name in ("_register_event_handler", "_call_event_handler"):
        assert callable(getattr(FrameProcessor, name, None)), _upgrade(f"BaseObject.{name}")
    emitter, got = Emitter(), []

    @emitter.event_handler("on_ping")
    async def on_ping(processor, value):
        got.append(value)

    assert seam.has_event_handler(emitter, "on_ping")
    await emitter._call_event_handler("on_ping", 42)
    for _ in range(5):  # async handlers run in a task
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [42], _upgrade("BaseObject._call_event_handler (handler not called)")


# --------------------------------------------------------------------------- turn taking


def test_vad_params_before_and_after_start():
    """``VADAnalyzer._params``: what ``set_sample_rate()`` applies at start."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

    vad = SileroVADAnalyzer(params=VADParams(stop_secs=0.4))
    _has(vad, "_params", "VADAnalyzer._params")
    _source_uses(VADAnalyzer.set_sample_rate, r"self\.set_params\(self\._params\)",
                 "VADAnalyzer.set_sample_rate (no longer applies _params)")
    assert not vad.sample_rate
    seam.set_vad_params(vad, vad.params.model_copy(update={"stop_secs": 0.6}))
    assert vad.params.stop_secs == 0.6, _upgrade("VADAnalyzer._params")
    vad.set_sample_rate(16000)
    assert vad.params.stop_secs == 0.6, _upgrade("VADAnalyzer.set_sample_rate")
    seam.set_vad_params(vad, vad.params.model_copy(update={"stop_secs": 0.2}))
    assert vad.params.stop_secs == 0.2


def test_turn_analyzer_and_smart_turn_stop_secs():
    """``TurnAnalyzerUserTurnStopStrategy._turn_analyzer`` and ``BaseSmartTurn._stop_ms``
    on the bundled Smart Turn v3 (a local ONNX model)."""
    from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
    from pipecat.turns.user_stop import (
        SpeechTimeoutUserTurnStopStrategy,
        TurnAnalyzerUserTurnStopStrategy,
    )

    analyzer = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=2.0))
    strategy = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)
    _has(strategy, "_turn_analyzer", "TurnAnalyzerUserTurnStopStrategy._turn_analyzer")
    assert seam.turn_analyzer_of(strategy) is analyzer
    assert seam.turn_analyzer_of(SpeechTimeoutUserTurnStopStrategy()) is None

    _has(analyzer, "_stop_ms", "BaseSmartTurn._stop_ms")
    _source_uses(BaseSmartTurn.append_audio, r"self\._stop_ms\b",
                 "BaseSmartTurn.append_audio (no longer reads _stop_ms)")
    seam.set_smart_turn_stop_secs(analyzer, 3.0)
    assert analyzer.params.stop_secs == 3.0, _upgrade("BaseSmartTurn.params (not the live params)")
    assert analyzer._stop_ms == 3000


def test_speech_timeout():
    """``SpeechTimeoutUserTurnStopStrategy._user_speech_timeout``, read when its timer starts."""
    from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

    strategy = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.7)
    _has(strategy, "_user_speech_timeout", "SpeechTimeoutUserTurnStopStrategy._user_speech_timeout")
    source = inspect.getsource(SpeechTimeoutUserTurnStopStrategy)
    assert len(re.findall(r"self\._user_speech_timeout\b", source)) >= 2, _upgrade(
        "SpeechTimeoutUserTurnStopStrategy._user_speech_timeout (no longer read after __init__)")
    seam.set_speech_timeout(strategy, 1.2)
    assert strategy._user_speech_timeout == 1.2


def test_turn_controller_goes_through_the_seam():
    from pipeline.turn_taking import TurnController, TurnPlan

    smart = TurnController(TurnPlan("sparrow-1", "medium", 2.0))
    smart.set_patience("high")
    analyzer = seam.turn_analyzer_of(smart.strategies.stop[0])
    assert analyzer.params.stop_secs == 3.0 and analyzer._stop_ms == 3000
    assert smart.vad.params.stop_secs == 0.6
    timed = TurnController(TurnPlan("time-based", "medium", 0.7))
    timed.set_patience("low")
    assert timed.strategies.stop[0]._user_speech_timeout == 0.4


# --------------------------------------------------------------------------- local Whisper


def _unloaded_whisper(**kwargs):
    """A real ``WhisperSTTService`` with its ``_load`` hook skipped (no model is loaded)."""
    from pipecat.services.whisper.stt import WhisperSTTService

    class Unloaded(WhisperSTTService):
        def _load(self):
            pass

    return Unloaded(device="cpu", compute_type="int8", **kwargs)


def test_whisper_load_hook_and_its_attributes():
    """``WhisperSTTService._load`` (overridden by LocalWhisperSTTService), ``_device``,
    ``_compute_type``, ``_model`` and ``_unsupported_language``."""
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.transcriptions.language import Language

    assert callable(vars(WhisperSTTService).get("_load")), _upgrade("WhisperSTTService._load")
    _source_uses(WhisperSTTService.__init__, r"self\._load\(\)",
                 "WhisperSTTService.__init__ (no longer calls _load)")
    service = _unloaded_whisper()
    for name in ("_device", "_compute_type", "_model"):
        _has(service, name, f"WhisperSTTService.{name}")
    assert seam.whisper_device_and_compute_type(service) == ("cpu", "int8")
    model = SimpleNamespace(supported_languages=["en"])
    seam.set_whisper_model(service, model)
    assert service._model is model
    assert seam.whisper_unsupported_language(service) is None  # the default language is English

    french = _unloaded_whisper(settings=WhisperSTTService.Settings(language=Language.FR))
    seam.set_whisper_model(french, model)
    message = seam.whisper_unsupported_language(french)
    assert message and "cannot transcribe" in message, _upgrade(
        "WhisperSTTService._unsupported_language")


# --------------------------------------------------------------------------- the early transcript, the first clause


def test_vad_pause_secs_reads_the_analyzers_stopping_count():
    """``VADAnalyzer._vad_state`` / ``_vad_stopping_count`` / ``_vad_frames``, set by
    ``set_params`` and moved by ``_run_analyzer``."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState

    vad = SileroVADAnalyzer()
    vad.set_sample_rate(16000)
    for name in ("_vad_state", "_vad_stopping_count", "_vad_frames"):
        _has(vad, name, f"VADAnalyzer.{name}")
    _source_uses(VADAnalyzer._run_analyzer, r"self\._vad_stopping_count \+= 1",
                 "VADAnalyzer._run_analyzer (no longer counts stopping frames)")
    assert seam.vad_pause_secs(vad) is None  # quiet
    vad._vad_state = VADState.SPEAKING
    assert seam.vad_pause_secs(vad) == 0.0
    vad._vad_state, vad._vad_stopping_count = VADState.STOPPING, 5
    assert seam.vad_pause_secs(vad) == pytest.approx(5 * 512 / 16000)


def test_segment_so_far_and_the_stopped_speaking_hook():
    """``SegmentedSTTService._user_speaking`` / ``_audio_buffer`` and the
    ``_handle_user_stopped_speaking`` hook ``EarlyTranscriptMixin`` overrides (it must still be
    what queues a segment at the VAD stop, and ``run_stt`` what transcribes it)."""
    from pipecat.services.stt_service import SegmentedSTTService

    for hook in ("_handle_user_stopped_speaking", "_segment_task_handler", "_trailing_silence"):
        assert callable(vars(SegmentedSTTService).get(hook)), _upgrade(f"SegmentedSTTService.{hook}")
    _source_uses(SegmentedSTTService.process_frame, r"self\._handle_user_stopped_speaking\(",
                 "SegmentedSTTService.process_frame (no longer calls the hook)")
    _source_uses(SegmentedSTTService._segment_task_handler, r"self\.run_stt\(",
                 "SegmentedSTTService._segment_task_handler (no longer calls run_stt)")
    service = _unloaded_whisper()
    _has(service, "_user_speaking", "SegmentedSTTService._user_speaking")
    _has(service, "_audio_buffer", "SegmentedSTTService._audio_buffer")
    assert seam.segment_so_far(service) is None
    service._user_speaking = True
    service._audio_buffer += b"\x01\x00" * 4
    assert seam.segment_so_far(service) == b"\x01\x00" * 4


def test_tts_text_aggregator_and_piper_voice():
    """``TTSService._text_aggregator`` (what ``_push_tts_frames`` aggregates with) and
    ``PiperTTSService._voice``, on the bundled Piper voice."""
    from pipecat.services.tts_service import TTSService

    from config import Settings, persona_from_dict
    from services.language import conversation_language
    from services.selection import EngineChoice
    from services.tts import build_tts

    _source_uses(TTSService, r"self\._text_aggregator\.aggregate\(",
                 "TTSService (no longer aggregates with _text_aggregator)")
    tts = build_tts(EngineChoice("tts", "piper", "test"), persona_from_dict({"system_prompt": "x"}).value,
                    conversation_language(None), Settings.from_env({}))
    _has(tts, "_text_aggregator", "TTSService._text_aggregator")
    assert type(tts._text_aggregator).__name__ == "ClauseTextAggregator"  # installed by build_tts
    _has(tts, "_voice", "PiperTTSService._voice")
    assert hasattr(seam.piper_voice_of(tts), "synthesize")


# --------------------------------------------------------------------------- Tavus video service


def _self_attributes_and_keywords(func) -> tuple[set[str], set[str]]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == "self"}
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords}
    return attrs, keywords


def test_tavus_video_service_setup_is_what_the_renderer_replicates():
    """``TavusVideoRenderer.setup`` runs ``AIService.setup`` and does the rest of
    ``TavusVideoService.setup`` itself: if Pipecat's setup changes, so must ours."""
    from pipecat.services.ai_service import AIService
    from pipecat.services.tavus.video import TavusVideoService

    assert TavusVideoService.__bases__ == (AIService,), _upgrade(
        "TavusVideoService's parent (setup_tavus_video_service_base calls AIService.setup)")
    attrs, keywords = _self_attributes_and_keywords(TavusVideoService.setup)
    assert attrs == {"_on_joined", "_on_participant_joined", "_on_participant_left", "_client",
                     "_api_key", "_replica_id", "_persona_id", "_session",
                     "_initial_receive_bitrate"}, _upgrade(
        f"TavusVideoService.setup (now uses self.{sorted(attrs)}; TavusVideoRenderer.setup "
        "replicates it)")
    assert keywords == {"on_joined", "on_participant_joined", "on_participant_left", "bot_name",
                        "callbacks", "api_key", "replica_id", "persona_id", "session", "params",
                        "audio_in_enabled", "video_in_enabled", "audio_out_faster_than_realtime",
                        "initial_receive_bitrate"}, _upgrade(
        f"TavusVideoService.setup (its client arguments are now {sorted(keywords)}; "
        "TavusVideoRenderer.setup replicates them)")


async def test_tavus_video_service_members():
    """``TavusVideoService._initial_receive_bitrate``, ``_client`` and its three hooks."""
    from pipecat.services.tavus.video import TavusVideoService

    async with aiohttp.ClientSession() as http:
        service = TavusVideoService(api_key="k-dummy", replica_id="r-1", session=http,
                                    initial_receive_bitrate=123)
        _has(service, "_initial_receive_bitrate", "TavusVideoService._initial_receive_bitrate")
        assert seam.tavus_video_receive_bitrate(service) == 123
        callbacks = seam.tavus_video_callbacks(service)
        for name in ("on_joined", "on_participant_joined", "on_participant_left"):
            hook = getattr(callbacks, name)
            assert hook.__func__ is vars(TavusVideoService)[f"_{name}"], _upgrade(
                f"TavusVideoService._{name}")
        _has(service, "_client", "TavusVideoService._client")
        client = object()
        seam.set_tavus_video_client(service, client)
        assert service._client is client


async def test_renderer_builds_its_client_through_the_seam():
    from services.tavus.renderers import TavusVideoRenderer

    async with aiohttp.ClientSession() as http:
        renderer = TavusVideoRenderer(conversation=_conversation(), session=http, bot_name="b")
        assert seam.tavus_video_callbacks(renderer).on_joined.__func__ is \
            TavusVideoRenderer._on_joined


# --------------------------------------------------------------------------- Tavus transport client


async def test_tavus_transport_client_members():
    """``TavusTransportClient._api`` (what it calls to create the conversation and name the
    persona), ``_client`` and the ``_on_handle_callback`` hook a failed join goes to."""
    from pipecat.transports.daily.transport import DailyTransportClient
    from pipecat.transports.tavus.transport import TavusTransportClient

    async with aiohttp.ClientSession() as http:
        client = TavusTransportClient(bot_name="b", callbacks=_tavus_callbacks(),
                                      api_key="k-dummy", replica_id="r-1", session=http)
        _has(client, "_api", "TavusTransportClient._api")
        _has(client, "_client", "TavusTransportClient._client")
        assert seam.tavus_daily_client(client) is None  # before setup

        async def create_conversation(replica_id, persona_id):
            return {"conversation_id": "c-1", "conversation_url": "https://tavus.daily.co/c-1"}

        async def get_persona_name(persona_id):
            return "Ava"

        seam.set_tavus_client_api(client, SimpleNamespace(
            create_conversation=create_conversation, get_persona_name=get_persona_name))
        assert await client.get_persona_name() == "Ava", _upgrade("TavusTransportClient._api")
        assert await client._initialize() == "https://tavus.daily.co/c-1", _upgrade(
            "TavusTransportClient._api (setup no longer creates the conversation with it)")

    assert callable(vars(TavusTransportClient).get("_on_handle_callback")), _upgrade(
        "TavusTransportClient._on_handle_callback")
    _source_uses(TavusTransportClient.setup,
                 r"on_error=partial\(self\._on_handle_callback, \"on_error\"\)",
                 "TavusTransportClient.setup (on_error no longer goes to _on_handle_callback)")
    _source_uses(DailyTransportClient.join, r"Error joining",
                 "DailyTransportClient.join's error message (PersonaTavusClient matches it)")
    # App messages: Daily's (message, sender) reach _on_handle_callback("on_app_message", ...).
    _source_uses(TavusTransportClient.setup,
                 r"on_app_message=partial\(self\._on_handle_callback, \"on_app_message\"\)",
                 "TavusTransportClient.setup (on_app_message no longer goes to _on_handle_callback)")
    _source_uses(DailyTransportClient.on_app_message,
                 r"self\._callbacks\.on_app_message, message, sender",
                 "DailyTransportClient.on_app_message (its callback's arguments)")


async def test_daily_client_token():
    """``DailyTransportClient._token``, read at join (the client is created, never joined)."""
    from pipecat.transports.daily.transport import (
        DailyCallbacks,
        DailyParams,
        DailyTransportClient,
    )

    daily = DailyTransportClient("https://example.daily.co/seam-test", None, "b", DailyParams(),
                                 DailyCallbacks.model_construct(), "seam-test")
    try:
        _has(daily, "_token", "DailyTransportClient._token")
        _source_uses(DailyTransportClient._join, r"self\._token\b",
                     "DailyTransportClient._join (no longer joins with _token)")
        seam.set_daily_client_token(daily, "mt-1")
        assert daily._token == "mt-1"
    finally:
        await daily.cleanup()


async def test_persona_client_joins_with_the_meeting_token(monkeypatch):
    """Our client through the seam: its API is ours, and the Daily client gets the token
    (Daily's ``setup`` is stubbed: it would open devices)."""
    from pipecat.transports.daily.transport import DailyTransportClient
    from pipecat.transports.tavus.transport import TavusParams

    from services.tavus.renderers import PersonaTavusClient, _ConversationApi

    monkeypatch.setattr(DailyTransportClient, "setup", _noop)
    fatal = []

    async def on_fatal(message):
        fatal.append(message)

    async with aiohttp.ClientSession() as http:
        client = PersonaTavusClient(conversation=_conversation("mt-1"), session=http,
                                    bot_name="b", callbacks=_tavus_callbacks(),
                                    params=TavusParams())
        client.set_on_fatal(on_fatal)
        assert isinstance(client._api, _ConversationApi)
        await client.setup(SimpleNamespace(task_manager=None))
        daily = seam.tavus_daily_client(client)
        try:
            assert daily is not None and daily._token == "mt-1" and not fatal
        finally:
            await daily.cleanup()


# --------------------------------------------------------------------------- Tavus transport


async def test_tavus_transport_client_replacement():
    """``TavusTransport._client`` (and its ``_callbacks``): replaced before ``input()`` /
    ``output()`` hand it on."""
    from pipecat.transports.tavus.transport import TavusTransport, TavusTransportClient

    async with aiohttp.ClientSession() as http:
        transport = TavusTransport(bot_name="b", session=http, api_key="k-dummy",
                                   replica_id="r-1")
        _has(transport, "_client", "TavusTransport._client")
        _has(transport._client, "_callbacks", "TavusTransportClient._callbacks")
        callbacks = seam.tavus_transport_callbacks(transport)
        assert callbacks.on_participant_joined.__func__ is TavusTransport._on_participant_joined
        ours = TavusTransportClient(bot_name="b", callbacks=callbacks, api_key="k-dummy",
                                    replica_id="r-1", session=http)
        seam.set_tavus_transport_client(transport, ours)
        assert transport.input()._client is ours, _upgrade("TavusTransport.input (its client)")
        assert transport.output()._client is ours, _upgrade("TavusTransport.output (its client)")


async def test_tavus_transport_replica_participant_id():
    """``TavusTransport._tavus_participant_id``: ``None`` until the participant named as the
    persona joins, then its id (how ``PersonaTavusTransport`` knows the replica's messages)."""
    from pipecat.transports.tavus.transport import TavusTransport

    async def get_persona_name(persona_id):
        return "Anna"

    async with aiohttp.ClientSession() as http:
        transport = TavusTransport(bot_name="b", session=http, api_key="k-dummy",
                                   replica_id="r-1")
        _has(transport, "_tavus_participant_id", "TavusTransport._tavus_participant_id")
        assert seam.tavus_replica_participant_id(transport) is None
        seam.set_tavus_client_api(transport._client,
                                  SimpleNamespace(get_persona_name=get_persona_name))
        await transport._on_participant_joined({"id": "p-replica", "info": {"userName": "Anna"}})
        assert seam.tavus_replica_participant_id(transport) == "p-replica", _upgrade(
            "TavusTransport._on_participant_joined (no longer sets _tavus_participant_id)")
    with pytest.raises(seam.PipecatSeamError, match="_tavus_participant_id"):
        seam.tavus_replica_participant_id(SimpleNamespace())


def test_daily_pushes_app_messages_as_we_do():
    """``PersonaTavusTransport`` delivers app messages as Daily's input transport does: a
    ``DailyInputTransportMessageFrame(message, participant_id)`` broadcast (public API; a
    change in Daily's way is a change to follow)."""
    import dataclasses

    from pipecat.transports.daily.transport import (
        DailyInputTransport,
        DailyInputTransportMessageFrame,
        DailyTransport,
    )

    _source_uses(DailyInputTransport.push_app_message,
                 r"broadcast_frame\(\s*DailyInputTransportMessageFrame, message=message, "
                 r"participant_id=sender", "DailyInputTransport.push_app_message")
    _source_uses(DailyTransport._on_app_message, r"push_app_message\(message, sender\)",
                 "DailyTransport._on_app_message")
    fields = {f.name for f in dataclasses.fields(DailyInputTransportMessageFrame)}
    assert {"message", "participant_id"} <= fields


async def test_persona_transport_uses_our_client():
    from pipecat.transports.tavus.transport import TavusParams

    from services.tavus.renderers import PersonaTavusClient, PersonaTavusTransport

    async with aiohttp.ClientSession() as http:
        transport = PersonaTavusTransport(conversation=_conversation(), session=http,
                                          bot_name="b", params=TavusParams())
        client = transport.input()._client
        assert isinstance(client, PersonaTavusClient) and transport.output()._client is client
        transport.set_on_fatal(_noop)
        assert client._on_fatal is _noop


def test_runner_logging_and_banner_replace_the_runners_own():
    import pipecat.runner.run as run

    from services.pipecat_seam import runner_banner, runner_logging

    added: list = []
    real_logger = run.logger
    restore = runner_logging(lambda sink: added.append(sink) or 0)
    try:
        run.logger.add("stderr-sink", level="DEBUG")  # what the runner's main() does
        assert added == ["stderr-sink"]
        assert run.logger.remove == real_logger.remove  # everything else is loguru's
    finally:
        restore()
    assert run.logger is real_logger

    shown: list = []
    restore = runner_banner(shown.append)
    try:
        run._print_dev_runner_banner()
        run._print_startup_message("args")
        assert shown == ["args"]
    finally:
        restore()
    assert run._print_startup_message is not shown.append


def test_runner_app_without_docs_removes_fastapis_docs_routes():
    """``pipecat.runner.run.app``: a ``FastAPI()`` made at import, docs routes included."""
    import pipecat.runner.run as run
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    assert isinstance(run.app, FastAPI), _upgrade("pipecat.runner.run.app")
    app = FastAPI()  # what the runner makes: the same defaults
    assert {"/openapi.json", "/docs", "/redoc"} <= {getattr(r, "path", None) for r in app.routes}

    @app.get("/kept")
    async def kept():
        return {}

    assert seam.runner_app_without_docs(app) is app
    client = TestClient(app)
    for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
        assert client.get(path).status_code == 404, path
    assert client.get("/kept").status_code == 200
    assert app.openapi_url is None and app.docs_url is None and app.redoc_url is None
    with pytest.raises(seam.PipecatSeamError):
        seam.runner_app_without_docs(SimpleNamespace(router=SimpleNamespace(routes=[])))


# --------------------------------------------------------------------------- SmallWebRTC connection


async def test_smallwebrtc_connection_members():
    """``_data_channel``, ``_setup_listeners`` (also for a restarted peer connection),
    Pipecat's data channel ``message`` listener and its app-message branch, which
    :func:`deliver_webrtc_app_message` replicates."""
    import json
    import time

    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pyee.asyncio import AsyncIOEventEmitter

    class Channel(AsyncIOEventEmitter):
        readyState = "open"

    _source_uses(SmallWebRTCConnection._initialize, r"self\._setup_listeners\(\)",
                 "SmallWebRTCConnection._initialize (calls _setup_listeners)")
    _source_uses(SmallWebRTCConnection.renegotiate, r"self\._initialize\(\)",
                 "SmallWebRTCConnection.renegotiate (restart_pc: _initialize)")
    _source_uses(SmallWebRTCConnection.connect, r'_pending_app_messages',
                 "SmallWebRTCConnection.connect (replays _pending_app_messages)")
    connection = SmallWebRTCConnection()
    for name in ("_data_channel", "_pending_app_messages", "_pc"):
        _has(connection, name, f"SmallWebRTCConnection.{name}")
    assert seam.webrtc_data_channel(connection) is None

    pcs: list = []
    seam.on_webrtc_peer_connection(connection, pcs.append)
    assert pcs == [connection.pc]
    connection._initialize()  # what renegotiate(restart_pc=True) does
    assert len(pcs) == 2 and pcs[1] is connection.pc and pcs[0] is not pcs[1]

    channel = Channel()
    connection.pc.emit("datachannel", channel)
    assert seam.webrtc_data_channel(connection) is channel
    listener = seam.webrtc_message_listener(channel)

    app: list = []

    @connection.event_handler("app-message")
    async def on_app_message(_, message):
        app.append(message)

    async def settle():
        for _ in range(5):
            await asyncio.sleep(0)

    typed = {"type": "tavus", "n": 1}
    await listener(json.dumps(typed))  # not connected: Pipecat queues it
    await seam.deliver_webrtc_app_message(connection, {"n": 2})
    assert connection._pending_app_messages == [typed, {"n": 2}], _upgrade(
        "SmallWebRTCConnection's message listener (queues app messages before connect)")
    connection._pending_app_messages.clear()
    connection._connect_invoked = True
    connection._last_received_time = time.time()
    assert connection.is_connected()
    await listener(json.dumps(typed))  # connected: the app-message event
    await seam.deliver_webrtc_app_message(connection, {"n": 2})
    await settle()
    assert app == [typed, {"n": 2}] and not connection._pending_app_messages, _upgrade(
        "SmallWebRTCConnection's message listener (app-message event when connected)")

    with pytest.raises(seam.PipecatSeamError, match="'message' listener"):
        seam.webrtc_message_listener(Channel())
    with pytest.raises(seam.PipecatSeamError, match="_data_channel"):
        seam.webrtc_data_channel(SimpleNamespace())
    with pytest.raises(seam.PipecatSeamError, match="_setup_listeners"):
        seam.on_webrtc_peer_connection(SimpleNamespace(), pcs.append)
    with pytest.raises(seam.PipecatSeamError, match="_pending_app_messages"):
        await seam.deliver_webrtc_app_message(SimpleNamespace(is_connected=lambda: True), {})


# --------------------------------------------------------------------------- LLM settings


def test_replace_system_addon_on_a_real_openai_service():
    """``LLMService._appended_system_instructions`` / ``_compose_system_instruction``: the
    knowledge base's per-turn part of the instruction, replaced on top of the base prompt."""
    from pipecat.services.openai.llm import OpenAILLMService

    llm = OpenAILLMService(api_key="k-dummy", settings=OpenAILLMService.Settings(
        model="m", system_instruction="You are Ava."))
    _has(llm, "_appended_system_instructions", "LLMService._appended_system_instructions")
    seam.replace_system_addon(llm, None, "Passage one.")
    assert llm.settings.system_instruction == "You are Ava.\n\nPassage one."
    seam.replace_system_addon(llm, "Passage one.", "Passage two.")
    assert llm.settings.system_instruction == "You are Ava.\n\nPassage two."
    seam.replace_system_addon(llm, "Passage two.", None)
    assert llm.settings.system_instruction == "You are Ava."
