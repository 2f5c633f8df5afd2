"""The one seam to Pipecat's internals.

Every place where we touch a Pipecat private attribute or method is a function
here, with why we need it. ``tests/test_pipecat_seam.py`` checks each one on a
real Pipecat object, so an upgrade that removes one fails loudly there, not
silently in a conversation.

The functions that read or replace an attribute check that Pipecat still has it
(:class:`PipecatSeamError` otherwise): writing a renamed attribute would only
add a new, unused one, and the conversation would go on wrong without a word.

| Pipecat member | our use | why | function |
| --- | --- | --- | --- |
| ``BaseObject._event_handlers`` | ask whether a transport declares an event | ``event_handler()`` raises on an undeclared event; no public query | :func:`has_event_handler` |
| ``VADAnalyzer._params`` | patience changed before the pipeline started | ``set_params()`` divides by the sample rate, 0 until start; ``set_sample_rate()`` re-applies ``_params`` | :func:`set_vad_params` |
| ``TurnAnalyzerUserTurnStopStrategy._turn_analyzer`` | find the Smart Turn analyzer of a stop strategy | no public accessor | :func:`turn_analyzer_of` |
| ``BaseSmartTurn._stop_ms`` (and ``params.stop_secs``) | patience changed at run time | ``_stop_ms`` is a copy of ``stop_secs`` taken in ``__init__``; no setter | :func:`set_smart_turn_stop_secs` |
| ``VADAnalyzer._vad_state`` / ``_vad_stopping_count`` / ``_vad_frames`` | how long the user has been silent inside speech (the early transcript, ``services/early_stt.py``) | the analyzer returns only SPEAKING/STOPPING, not how long it has been stopping | :func:`vad_pause_secs` |
| ``SegmentedSTTService._handle_user_stopped_speaking`` / ``_user_speaking`` / ``_audio_buffer`` | the early transcript: what has been said so far, and the segment at the VAD stop | the segment buffer and its hook have no public API (subclassing and reading) | :func:`segment_so_far` — (hook: listed, tested) |
| ``SpeechTimeoutUserTurnStopStrategy._user_speech_timeout`` | patience changed at run time | read at each VAD stop; no setter | :func:`set_speech_timeout` |
| ``WhisperSTTService._load`` | overridden by ``LocalWhisperSTTService`` to share one loaded model | the hook ``__init__`` calls to load the model (subclassing, no function) | — (listed, tested) |
| ``WhisperSTTService._device`` / ``_compute_type`` | load the shared model with them | init-only, no public accessor | :func:`whisper_device_and_compute_type` |
| ``WhisperSTTService._model`` | install the shared model | what ``_load`` must set | :func:`set_whisper_model` |
| ``WhisperSTTService._unsupported_language`` | reject a language the model lacks, as Pipecat's ``_load`` does | private check, no public one | :func:`whisper_unsupported_language` |
| ``TavusVideoService.setup`` (skipped) | ``TavusVideoRenderer.setup`` runs ``AIService.setup`` and builds our client | Pipecat's setup builds its own client, which creates a *new* conversation | :func:`setup_tavus_video_service_base` |
| ``TavusVideoService._initial_receive_bitrate`` | the renderer's client params | init-only, no public accessor | :func:`tavus_video_receive_bitrate` |
| ``TavusVideoService._on_joined`` / ``_on_participant_joined`` / ``_on_participant_left`` | callbacks of the renderer's client | the hooks Pipecat's setup wires (we override two of them) | :func:`tavus_video_callbacks` |
| ``TavusVideoService._client`` | install our client | every other method of the service uses it | :func:`set_tavus_video_client` |
| ``TavusTransportClient._api`` | our ``TavusApi`` on the conversation we created | the client builds its own in ``__init__``; no parameter | :func:`set_tavus_client_api` |
| ``TavusTransportClient._client`` | the Daily client after setup (``None``: setup failed) | setup logs a failure and carries on; no public accessor | :func:`tavus_daily_client` |
| ``TavusTransportClient._on_handle_callback`` | overridden by ``PersonaTavusClient``: a failed join is fatal; app messages go to ``PersonaTavusTransport`` | the hook every Daily event (``on_error``, ``on_app_message`` too) goes to, and only logs (subclassing, no function) | — (listed, tested) |
| ``DailyTransportClient._token`` | join a private Tavus room with its meeting token | ``TavusTransportClient`` builds the Daily client with no token; read at join | :func:`set_daily_client_token` |
| ``TavusTransport._client`` (and its ``_callbacks``) | replace the transport's client with ours, same callbacks | built in ``__init__``, used lazily by ``input()`` / ``output()`` | :func:`tavus_transport_callbacks`, :func:`set_tavus_transport_client` |
| ``TavusTransport._tavus_participant_id`` | tell the replica's app messages from the user's (not forwarded) | set by ``_on_participant_joined`` when the replica joins; no accessor | :func:`tavus_replica_participant_id` |
| ``pipecat.runner.run.logger`` (module global) | the runner's log level | ``main()`` removes every sink and adds stderr at DEBUG, no option for less | :func:`runner_logging` |
| ``pipecat.runner.run._print_dev_runner_banner`` / ``_print_startup_message`` | our one banner (persona, engines, URL of our page) | the runner prints its own, pointing at its prebuilt client | :func:`runner_banner` |
| ``pipecat.services.piper.tts.PiperVoice`` (module global) | one loaded Piper voice per process, shared by every conversation | ``PiperTTSService.__init__`` loads its own ONNX session (a thread pool and ~60 MB each); no parameter to pass one in | :func:`shared_piper_tts` |
| ``TTSService._text_aggregator`` | the first clause of a reply goes to Piper on its own (``pipeline/sentence_cut.py``) | ``TTSService.__init__`` builds its ``SimpleTextAggregator``; no parameter to pass one in (1.14) | :func:`set_tts_text_aggregator` |
| ``PiperTTSService._voice`` | warm the shared Piper voice at start-up (``session/warmup.py``) | no public accessor for the loaded voice | :func:`piper_voice_of` |
| ``pipecat.audio.turn.smart_turn.local_smart_turn_v3.ort`` (module global) | one Smart Turn ONNX session per process | ``LocalSmartTurnAnalyzerV3.__init__`` creates its own ``InferenceSession``; no parameter to pass one in | :func:`shared_smart_turn_v3` |
| ``pipecat.runner.run.app`` (module global) and its FastAPI docs routes | no ``/docs``, ``/redoc``, ``/openapi.json`` on the local server | the runner builds ``FastAPI()`` with the defaults at import, which adds those routes then (setting ``openapi_url`` later removes nothing) | :func:`runner_app_without_docs` |
| ``SmallWebRTCConnection._data_channel`` | the peer's data channel when the bot gets the connection | set by Pipecat's ``datachannel`` listener; no public accessor | :func:`webrtc_data_channel` |
| ``SmallWebRTCConnection._setup_listeners`` (wrapped on the instance) | our ``datachannel`` listener on every peer connection, also the one ``renegotiate(restart_pc=True)`` makes | ``_initialize()`` makes a new ``RTCPeerConnection`` and calls it; no event for that | :func:`on_webrtc_peer_connection` |
| the data channel's ``message`` listener of ``SmallWebRTCConnection`` (a closure) | wrapped, so that JSON without ``"type"`` is an app message | Pipecat's listener does ``json_message["type"]`` and drops the rest with an ERROR line | :func:`webrtc_message_listener` |
| ``SmallWebRTCConnection._pending_app_messages`` / ``_call_event_handler("app-message")`` | hand that JSON on exactly as Pipecat's listener hands typed JSON | the listener's app-message branch; no public way in | :func:`deliver_webrtc_app_message` |
| ``BaseObject._register_event_handler`` / ``_call_event_handler`` | our processors declare and fire events | the subclassing API for events (no function) | — (listed, tested) |
"""

from __future__ import annotations

import threading
from typing import Any


class PipecatSeamError(RuntimeError):
    """A Pipecat internal we rely on is gone: Pipecat was upgraded."""


def _missing(obj: Any, name: str) -> PipecatSeamError:
    return PipecatSeamError(
        f"Pipecat upgrade removed/changed {type(obj).__name__}.{name}; "
        "update services/pipecat_seam.py"
    )


def _get(obj: Any, name: str) -> Any:
    """``obj.name``, which must be set on the instance."""
    try:
        return vars(obj)[name]
    except (KeyError, TypeError):
        raise _missing(obj, name) from None


def _replace(obj: Any, name: str, value: Any) -> None:
    """Set ``obj.name``, which must already be set on the instance (not a new attribute)."""
    _get(obj, name)
    setattr(obj, name, value)


# --------------------------------------------------------------------------- events


def has_event_handler(obj: Any, name: str) -> bool:
    """Whether a Pipecat object (a transport, a service) declares the event ``name``.

    Why: ``event_handler(name)`` on an undeclared event raises, and transports declare
    different events (only Daily's has ``on_error``); Pipecat has no public way to ask.
    """
    return name in _get(obj, "_event_handlers")


# --------------------------------------------------------------------------- LLM settings


def replace_system_addon(llm: Any, old: str | None, new: str | None) -> None:
    """Swap one appended part of an LLM service's system instruction (``old`` -> ``new``).

    Why: the knowledge base's passages and the user's memories are a part of the system
    instruction that changes every turn, while the persona's prompt, the current
    objective's task (Flows) and ``conversation.overwrite_llm_context`` set the base.
    Pipecat composes base + appended parts (``append_system_instruction``) but can only
    append; replacing our part needs its list and its composer.
    """
    addons = _get(llm, "_appended_system_instructions")
    if old is not None and old in addons:
        addons.remove(old)
    if new:
        addons.append(new)
    compose = getattr(llm, "_compose_system_instruction", None)
    if compose is None:
        raise _missing(llm, "_compose_system_instruction")
    compose()


# --------------------------------------------------------------------------- turn taking


def set_vad_params(vad: Any, params: Any) -> None:
    """Give a ``VADAnalyzer`` new params, started or not.

    Why: ``set_params()`` computes frame counts from the sample rate, which is 0 until
    the pipeline starts (a division by zero); before that we store the params where
    ``set_sample_rate()`` picks them up at start (``VADAnalyzer._params``).
    """
    if vad.sample_rate:
        vad.set_params(params)
    else:
        _replace(vad, "_params", params)


def vad_pause_secs(vad: Any) -> float | None:
    """Seconds of silence since the user last spoke while the VAD still counts them as speaking.

    ``0.0`` while speaking, the pause so far while stopping, ``None`` when quiet (or still
    starting). Why: ``analyze_audio`` returns the state only; the early transcript needs to
    know that a short pause (shorter than ``stop_secs``) is under way
    (``VADAnalyzer._vad_state``, ``_vad_stopping_count``, ``_vad_frames``).
    """
    from pipecat.audio.vad.vad_analyzer import VADState

    state = _get(vad, "_vad_state")
    if state == VADState.SPEAKING:
        return 0.0
    if state != VADState.STOPPING or not vad.sample_rate:
        return None
    return _get(vad, "_vad_stopping_count") * _get(vad, "_vad_frames") / vad.sample_rate


def segment_so_far(stt: Any) -> bytes | None:
    """The audio a ``SegmentedSTTService`` has buffered for the segment under way, or ``None``
    if the VAD has not started one.

    Why: the early transcript transcribes it at a short pause, before the VAD stop that makes
    it a segment (``SegmentedSTTService._user_speaking``, ``_audio_buffer``).
    """
    if not _get(stt, "_user_speaking"):
        return None
    return bytes(_get(stt, "_audio_buffer"))


def turn_analyzer_of(strategy: Any) -> Any | None:
    """The turn analyzer of a ``TurnAnalyzerUserTurnStopStrategy``; ``None`` for other strategies.

    Why: patience changes the analyzer's stop time at run time, and the strategy has no
    public accessor for it (``_turn_analyzer``).
    """
    from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

    if not isinstance(strategy, TurnAnalyzerUserTurnStopStrategy):
        return None
    return _get(strategy, "_turn_analyzer")


def set_smart_turn_stop_secs(analyzer: Any, secs: float) -> None:
    """Set the silence after which a Smart Turn analyzer ends an "incomplete" turn.

    Why: ``BaseSmartTurn`` copies ``params.stop_secs`` into ``_stop_ms`` in ``__init__``
    and compares against the copy; changing ``params.stop_secs`` alone does nothing.
    """
    analyzer.params.stop_secs = secs
    _replace(analyzer, "_stop_ms", secs * 1000)


def set_speech_timeout(strategy: Any, secs: float) -> None:
    """Set a ``SpeechTimeoutUserTurnStopStrategy``'s silence timeout.

    Why: the timeout (``_user_speech_timeout``) is read each time VAD reports a stop,
    but has no setter.
    """
    _replace(strategy, "_user_speech_timeout", secs)


# --------------------------------------------------------------------------- local Whisper
# ``LocalWhisperSTTService`` overrides ``WhisperSTTService._load`` (the hook its
# ``__init__`` calls) to share one loaded model per process.


def whisper_device_and_compute_type(service: Any) -> tuple[str, str]:
    """The ``device`` and ``compute_type`` a ``WhisperSTTService`` was made with.

    Why: ``_load`` loads the model with them; they are init-only, with no accessor.
    """
    return _get(service, "_device"), _get(service, "_compute_type")


def set_whisper_model(service: Any, model: Any) -> None:
    """Install the (shared) faster-whisper model on a ``WhisperSTTService``.

    Why: that is what ``_load`` must do; transcription reads ``_model``.
    """
    _replace(service, "_model", model)


def whisper_unsupported_language(service: Any) -> str | None:
    """Pipecat's message if the loaded model lacks the service's language, else ``None``.

    Why: Pipecat's ``_load`` runs this private check after loading; ours must too.
    """
    check = getattr(service, "_unsupported_language", None)
    if not callable(check):
        raise _missing(service, "_unsupported_language()")
    return check()


# --------------------------------------------------------------------------- Tavus video renderer
# ``TavusVideoRenderer.setup`` replaces ``TavusVideoService.setup``: Pipecat's builds a
# ``TavusTransportClient`` that creates a new Tavus conversation; ours joins the one
# we created (``PersonaTavusClient``). The test compares with Pipecat's setup.


async def setup_tavus_video_service_base(service: Any, setup: Any) -> None:
    """What ``TavusVideoService.setup`` does before it builds its client: ``AIService.setup``.

    Why: skipping the parent's setup (and its client) but not the grandparent's.
    """
    from pipecat.services.ai_service import AIService

    await AIService.setup(service, setup)


def tavus_video_receive_bitrate(service: Any) -> Any:
    """The ``initial_receive_bitrate`` a ``TavusVideoService`` was made with.

    Why: Pipecat's setup passes it to its client's params; ours must too. Init-only.
    """
    return _get(service, "_initial_receive_bitrate")


def tavus_video_callbacks(service: Any) -> Any:
    """The ``TavusCallbacks`` Pipecat's ``TavusVideoService.setup`` gives its client.

    Why: they are the service's protected hooks (``_on_joined``, ``_on_participant_joined``
    — which captures the replica's video and audio — and ``_on_participant_left``).
    """
    from pipecat.transports.tavus.transport import TavusCallbacks

    hooks = {}
    for name in ("_on_joined", "_on_participant_joined", "_on_participant_left"):
        hook = getattr(service, name, None)
        if not callable(hook):
            raise _missing(service, name)
        hooks[name[1:]] = hook
    return TavusCallbacks(**hooks)


def set_tavus_video_client(service: Any, client: Any) -> None:
    """Install our ``TavusTransportClient`` on a ``TavusVideoService``.

    Why: every other method of the service (start, frames, interruptions, cleanup)
    uses ``_client``.
    """
    _replace(service, "_client", client)


# --------------------------------------------------------------------------- Tavus transport client


def set_tavus_client_api(client: Any, api: Any) -> None:
    """Replace the ``TavusApi`` a ``TavusTransportClient`` calls.

    Why: the client builds its own in ``__init__`` (no parameter), and calls it to create
    the conversation at setup, name the persona and end the conversation; ours is bound
    to the conversation we already created.
    """
    _replace(client, "_api", api)


def tavus_daily_client(client: Any) -> Any | None:
    """The ``DailyTransportClient`` of a ``TavusTransportClient``; ``None`` if setup failed.

    Why: ``setup()`` logs a failure and carries on without one; there is no accessor.
    """
    return _get(client, "_client")


def set_daily_client_token(daily_client: Any, token: str) -> None:
    """Give a ``DailyTransportClient`` the meeting token it joins with.

    Why: ``TavusTransportClient`` builds it without a token, and a private Tavus room
    needs one; the client reads ``_token`` at join.
    """
    _replace(daily_client, "_token", token)


# --------------------------------------------------------------------------- Tavus transport


def tavus_transport_callbacks(transport: Any) -> Any:
    """The ``TavusCallbacks`` a ``TavusTransport`` gave the client it built.

    Why: our client must call the transport's hooks the same way; they live on
    ``TavusTransport._client._callbacks``.
    """
    return _get(_get(transport, "_client"), "_callbacks")


def set_tavus_transport_client(transport: Any, client: Any) -> None:
    """Replace the ``TavusTransportClient`` a ``TavusTransport`` built in ``__init__``.

    Why: no parameter for it; ``input()`` / ``output()`` hand ``_client`` to the input and
    output transports when first called, so this must happen before them.
    """
    _replace(transport, "_client", client)


def tavus_replica_participant_id(transport: Any) -> str | None:
    """The replica's participant id a ``TavusTransport`` learnt; ``None`` until it joined.

    Why: ``_on_participant_joined`` sets ``_tavus_participant_id`` when the participant
    whose user name is the persona's joins (to ignore its microphone); the replica's app
    messages, Tavus's own events, must not go into the pipeline. No accessor.
    """
    return _get(transport, "_tavus_participant_id")


# --------------------------------------------------------------------------- SmallWebRTC connection
# ``transports.webrtc_messages`` makes the local data channel take JSON without a
# ``"type"`` key (a Tavus client's raw interaction messages) as app messages.

_SMALLWEBRTC_CONNECTION_MODULE = "pipecat.transports.smallwebrtc.connection"


def webrtc_data_channel(connection: Any) -> Any | None:
    """The peer's data channel of a ``SmallWebRTCConnection``; ``None`` until it arrives.

    Why: Pipecat's ``datachannel`` listener stores it in ``_data_channel``; no accessor.
    """
    return _get(connection, "_data_channel")


def on_webrtc_peer_connection(connection: Any, setup: Any) -> None:
    """Call ``setup(pc)`` on the connection's ``RTCPeerConnection`` now, and on every one it
    makes later, right after Pipecat has set up its own listeners on it.

    Why: ``renegotiate(restart_pc=True)`` closes the peer connection and ``_initialize()``
    makes a new one, whose listeners ``_setup_listeners()`` adds; there is no event for
    it. Listeners ``setup`` adds run after Pipecat's (pyee calls them in order).
    """
    original = getattr(connection, "_setup_listeners", None)
    if not callable(original) or "_setup_listeners" not in vars(type(connection)):
        raise _missing(connection, "_setup_listeners()")
    if "_pc" not in vars(connection):
        raise _missing(connection, "_pc")

    def setup_listeners() -> None:
        original()
        setup(connection.pc)

    connection._setup_listeners = setup_listeners
    setup(connection.pc)


def webrtc_message_listener(channel: Any) -> Any:
    """Pipecat's ``message`` listener on a data channel (a pyee emitter), which must be one.

    Why: it is a closure in ``SmallWebRTCConnection._setup_listeners``; it does
    ``json_message["type"]``, so JSON without that key is logged as an ERROR and dropped.
    """
    found = [listener for listener in channel.listeners("message")
             if getattr(listener, "__module__", None) == _SMALLWEBRTC_CONNECTION_MODULE]
    if len(found) != 1:
        raise PipecatSeamError(
            f"Pipecat upgrade removed/changed SmallWebRTCConnection's data channel 'message' "
            f"listener ({len(found)} found, 1 expected); update services/pipecat_seam.py"
        )
    return found[0]


async def deliver_webrtc_app_message(connection: Any, message: Any) -> None:
    """Hand ``message`` (parsed JSON) on as Pipecat's ``message`` listener hands typed JSON.

    Why: that is the listener's app-message branch: the ``app-message`` event (the
    transport makes it an ``InputTransportMessageFrame``) once the peer is connected,
    else ``_pending_app_messages``, which ``connect()`` replays.
    """
    pending = _get(connection, "_pending_app_messages")
    if connection.is_connected():
        await connection._call_event_handler("app-message", message)
    else:
        pending.append(message)


class _RunnerLogger:
    """Loguru's logger, except that ``add`` uses our level and format (see :func:`runner_logging`)."""

    def __init__(self, real: Any, add: Any):
        self._real, self._add = real, add

    def add(self, sink: Any, *args: Any, **kwargs: Any) -> int:
        return self._add(sink)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def runner_logging(add_sink: Any) -> Any:
    """Make Pipecat's development runner add its stderr sink through ``add_sink(sink)``.

    ``pipecat.runner.run.main`` does ``logger.remove(); logger.add(sys.stderr,
    level="DEBUG")``: without this every run prints Pipecat's DEBUG lines. Only that
    module's name ``logger`` is replaced; everything else logs through loguru as
    before. Returns a function that restores it.
    """
    import pipecat.runner.run as run

    real = run.__dict__.get("logger")
    if real is None or not hasattr(real, "add"):
        raise _missing(run, "logger")
    run.logger = _RunnerLogger(real, add_sink)

    def restore() -> None:
        run.logger = real

    return restore


def runner_banner(print_banner: Any) -> Any:
    """Replace the runner's two start-up banners with ``print_banner(args)`` (host, port, ...).

    Returns a function that restores them.
    """
    import pipecat.runner.run as run

    names = ("_print_dev_runner_banner", "_print_startup_message")
    real = {name: run.__dict__.get(name) for name in names}
    for name, value in real.items():
        if not callable(value):
            raise _missing(run, name)
    run._print_dev_runner_banner = lambda: None
    run._print_startup_message = print_banner

    def restore() -> None:
        for name, value in real.items():
            setattr(run, name, value)

    return restore


def runner_app_without_docs(app: Any = None) -> Any:
    """Remove the FastAPI docs and OpenAPI routes from the runner's ``app``; returns it.

    Why: ``pipecat.runner.run`` creates ``app = FastAPI()`` at import, and FastAPI adds
    ``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` in ``__init__``;
    the runner has no option to leave them out. They describe every route the runner
    mounts (transports we do not run included) to anyone who can reach the port.
    """
    if app is None:
        import pipecat.runner.run as run

        app = run.__dict__.get("app")
        if app is None or not hasattr(app, "router"):
            raise _missing(run, "app")
    names = ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")
    for name in names:
        if name not in vars(app):
            raise _missing(app, name)
    docs = {vars(app)[name] for name in names if vars(app)[name]}
    if app.docs_url and app.swagger_ui_oauth2_redirect_url:
        docs.add(app.swagger_ui_oauth2_redirect_url)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in docs]
    for name in names:
        setattr(app, name, None)
    app.openapi_schema = None
    return app


# --------------------------------------------------------------------------- shared models

_SHARED: dict[tuple, Any] = {}
_SHARED_LOCK = threading.RLock()


def _shared(key: tuple, load: Any) -> Any:
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = load()
        return _SHARED[key]


class _ModuleGlobal:
    """Within the block, ``module.name`` is ``value`` (construction only; under a lock)."""

    def __init__(self, module: Any, name: str, value: Any):
        if not hasattr(module, name):
            raise _missing(module, name)
        self._module, self._name, self._value = module, name, value

    def __enter__(self):
        _SHARED_LOCK.acquire()
        self._saved = getattr(self._module, self._name)
        setattr(self._module, self._name, self._value)

    def __exit__(self, *exc):
        setattr(self._module, self._name, self._saved)
        _SHARED_LOCK.release()


def shared_piper_tts(**kwargs: Any) -> Any:
    """``PiperTTSService(**kwargs)`` whose voice is loaded once per process and model path.

    Why: each ``PiperTTSService`` loads the voice's ONNX model into its own session
    (about 60 MB and an intra-op thread pool); one per conversation grew the bot by
    that much per session (benchmarks/soak.py). A session's ``run`` is thread-safe, and
    a voice holds no per-utterance state, so conversations share it.
    """
    import pipecat.services.piper.tts as piper_tts

    original = piper_tts.PiperVoice

    class _SharedVoice:
        @staticmethod
        def load(path: Any, *args: Any, **load_kwargs: Any) -> Any:
            key = ("piper", str(path), args, tuple(sorted(load_kwargs.items())))
            return _shared(key, lambda: original.load(path, *args, **load_kwargs))

    with _ModuleGlobal(piper_tts, "PiperVoice", _SharedVoice):
        return piper_tts.PiperTTSService(**kwargs)


def set_tts_text_aggregator(tts: Any, factory: Any) -> None:
    """Replace a TTS service's text aggregator with ``factory(aggregation_type=, language=)``,
    given the type and language of the one it has.

    Why: ``TTSService`` builds a ``SimpleTextAggregator`` in ``__init__`` and takes no
    aggregator (``_text_aggregator``); ours also ends the first clause of a reply.
    """
    current = _get(tts, "_text_aggregator")
    _replace(tts, "_text_aggregator", factory(aggregation_type=current.aggregation_type,
                                              language=current.language))


def piper_voice_of(tts: Any) -> Any:
    """The ``PiperVoice`` a ``PiperTTSService`` synthesizes with.

    Why: start-up warms the voice conversations share (``session/warmup.py``); the service
    keeps it in ``_voice``, with no accessor.
    """
    return _get(tts, "_voice")


def shared_smart_turn_v3(**kwargs: Any) -> Any:
    """``LocalSmartTurnAnalyzerV3(**kwargs)`` on one ONNX session per process and model.

    Why: the analyzer creates an ``InferenceSession`` in ``__init__`` (an intra-op
    thread pool each); sessions are stateless between ``run`` calls and ``run`` is
    thread-safe, so every conversation's analyzer can use the same one.
    """
    import pipecat.audio.turn.smart_turn.local_smart_turn_v3 as smart_turn

    ort = smart_turn.ort

    class _SharedOrt:
        def __getattr__(self, name: str) -> Any:
            return getattr(ort, name)

        @staticmethod
        def InferenceSession(path: Any, *args: Any, **session_kwargs: Any) -> Any:  # noqa: N802
            options = session_kwargs.get("sess_options")
            key = ("smart-turn", str(path), getattr(options, "intra_op_num_threads", None))
            return _shared(key, lambda: ort.InferenceSession(path, *args, **session_kwargs))

    with _ModuleGlobal(smart_turn, "ort", _SharedOrt()):
        return smart_turn.LocalSmartTurnAnalyzerV3(**kwargs)
