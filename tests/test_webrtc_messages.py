"""``transports.webrtc_messages``: JSON without ``"type"`` on the local data channel is an
app message, and every other message reaches Pipecat's listener as before.

No bot: a real ``SmallWebRTCConnection`` with Pipecat's own listeners, fed through a
stand-in data channel (a pyee emitter, as aiortc's is) or over a real aiortc data
channel between two in-process peers (loopback, no network).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from loguru import logger
from pyee.asyncio import AsyncIOEventEmitter

from services import pipecat_seam as seam
from transports.webrtc_messages import (
    accept_untyped_app_messages,
    untyped_object,
    wrap_data_channel,
)

RAW = {"message_type": "conversation", "event_type": "conversation.respond",
       "conversation_id": "c1", "properties": {"text": "hi"}}
TYPED = {"type": "tavus", "message_type": "conversation", "event_type": "conversation.echo",
         "properties": {"text": "hi"}}
RTVI = {"label": "rtvi-ai", "type": "client-ready", "id": "r1", "data": {"version": "1.0.0"}}
TRACK_OFF = {"type": "signalling",
             "message": {"type": "trackStatus", "receiver_index": 0, "enabled": False}}


class FakeChannel(AsyncIOEventEmitter):
    """What Pipecat's ``datachannel`` listener uses of an aiortc ``RTCDataChannel``."""

    readyState = "open"

    def send(self, data):
        pass


def _connection():
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

    return SmallWebRTCConnection()


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


class Seen:
    """What a connection did with the messages fed to it."""

    def __init__(self, connection):
        self.connection = connection
        self.app: list = []
        self.tracks: list = []

        @connection.event_handler("app-message")
        async def on_app_message(_, message):
            self.app.append(message)

        @connection.event_handler("track-status")
        async def on_track_status(_, index, enabled):
            self.tracks.append((index, enabled))

    @property
    def pending(self):
        return list(self.connection._pending_app_messages)


@pytest.fixture
def errors():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="ERROR", format="{message}")
    yield lines
    logger.remove(sink)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("message, expected", [
    (json.dumps(RAW), RAW),
    (json.dumps(RAW).encode(), RAW),
    (" \n" + json.dumps(RAW), RAW),
    ("{}", {}),
    (json.dumps({"properties": {"type": "nested"}}), {"properties": {"type": "nested"}}),
    (json.dumps(TYPED), None),
    ('{"type": oops', None),  # not parsed here: Pipecat's listener logs it, as before
    (json.dumps({"event_type": "x", "type": "tavus"}), None),
    (json.dumps(TYPED).encode(), None),
    (json.dumps(RTVI), None),
    (json.dumps(TRACK_OFF), None),
    ('{"\\u0074ype": "tavus"}', None),  # an escaped "type" is a "type"
    ("ping", None),
    ("ping-1733000000", None),
    ("not json", None),
    ("[1, 2]", None),
    ('"a string"', None),
    ("42", None),
    (b"\xff\xfe\x00", None),
    ('{"a": ' * 100_000, None),  # too deep for json (RecursionError): Pipecat's listener logs it
    (None, None),
])
def test_untyped_object(message, expected):
    assert untyped_object(message) == expected


# --------------------------------------------------------------------------- Pipecat's listener, wrapped


@pytest.mark.parametrize("order", ["channel-first", "connection-first"])
async def test_both_orders_wrap_pipecats_listener(order):
    connection = _connection()
    channel = FakeChannel()
    if order == "channel-first":  # open before the bot got the connection
        connection.pc.emit("datachannel", channel)
        assert seam.webrtc_data_channel(connection) is channel
        accept_untyped_app_messages(connection)
    else:  # arrives later: our datachannel listener runs after Pipecat's
        accept_untyped_app_messages(connection)
        connection.pc.emit("datachannel", channel)
    (listener,) = channel.listeners("message")
    assert listener.__module__ == "transports.webrtc_messages"
    accept_untyped_app_messages(connection)  # idempotent
    assert wrap_data_channel(connection, channel) is False
    assert channel.listeners("message") == [listener]

    seen = Seen(connection)
    channel.emit("message", json.dumps(RAW))
    await _settle()
    assert seen.pending == [RAW]  # not connected yet: queued, as Pipecat queues typed ones
    connection._connect_invoked = True  # what connect() sets; the peer is "connected":
    connection._last_received_time = time.time()
    channel.emit("message", json.dumps(RAW))
    await _settle()
    assert seen.app == [RAW]


async def test_a_restarted_peer_connection_is_wrapped_too():
    """``renegotiate(restart_pc=True)`` closes the peer connection and ``_initialize()``s a new one."""
    connection = _connection()
    accept_untyped_app_messages(connection)
    old = connection.pc
    old.remove_all_listeners()  # what renegotiate does first
    connection._initialize()
    assert connection.pc is not old
    channel = FakeChannel()
    connection.pc.emit("datachannel", channel)
    (listener,) = channel.listeners("message")
    assert listener.__module__ == "transports.webrtc_messages"
    channel.emit("message", json.dumps(RAW))
    await _settle()
    assert connection._pending_app_messages == [RAW]


@pytest.mark.parametrize("connected", [False, True], ids=["queued", "connected"])
async def test_everything_else_is_exactly_as_pipecat_alone(connected, errors):
    """The same messages into a wrapped and a bare connection: the same outcome, except
    that the wrapped one takes the JSON objects without "type"."""
    messages = ["ping", "ping-42", json.dumps(TYPED), json.dumps(RTVI), json.dumps(TRACK_OFF),
                "not json", "[1, 2]", "42", json.dumps(TYPED).encode(), b"\xff\x00",
                '{"type": oops', '{"a": ' * 100_000]
    outcomes = []
    for wrapped in (False, True):
        connection = _connection()
        channel = FakeChannel()
        connection.pc.emit("datachannel", channel)
        if wrapped:
            accept_untyped_app_messages(connection)
        if connected:
            connection._connect_invoked = True
            connection._last_received_time = time.time() - 1
        seen = Seen(connection)
        errors.clear()
        before = connection._last_received_time
        for message in messages:
            channel.emit("message", message)
        await _settle()
        pinged = connection._last_received_time != before
        outcomes.append((list(seen.app), seen.pending, list(seen.tracks), list(errors), pinged))
        # ... and the one difference
        errors.clear()
        channel.emit("message", json.dumps(RAW))
        await _settle()
        got = seen.app if connected else seen.pending
        if wrapped:
            assert got[-1] == RAW and not errors
        else:
            assert RAW not in got and "Error parsing JSON message" in errors[0]
    assert outcomes[0] == outcomes[1]
    app, pending, tracks, logged, pinged = outcomes[1]
    assert (app if connected else pending) == [TYPED, RTVI, TYPED]
    assert tracks == [(0, False)] and pinged
    assert sum("Error parsing JSON message" in line for line in logged) == 6


async def test_a_failure_to_hand_on_is_logged_without_the_message(errors):
    connection = _connection()
    channel = FakeChannel()
    connection.pc.emit("datachannel", channel)
    accept_untyped_app_messages(connection)
    connection._pending_app_messages = None  # breaks .append
    channel.emit("message", json.dumps(RAW))
    await _settle()
    assert len(errors) == 1 and "could not be handed on" in errors[0]
    assert "conversation.respond" not in errors[0] and "hi" not in errors[0].split(":", 1)[0]


def test_a_changed_pipecat_is_a_seam_error():
    channel = FakeChannel()
    channel.on("message", lambda m: None)  # not Pipecat's
    with pytest.raises(seam.PipecatSeamError, match="'message' listener"):
        wrap_data_channel(object(), channel)


# --------------------------------------------------------------------------- over a real data channel


@pytest.mark.parametrize("order", ["channel-open-first", "connection-first"])
async def test_raw_messages_over_a_real_data_channel(order):
    from aiortc import RTCPeerConnection, RTCSessionDescription

    connection = _connection()
    if order == "connection-first":
        accept_untyped_app_messages(connection)
    seen = Seen(connection)
    peer = RTCPeerConnection()
    channel = peer.createDataChannel("chat")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    try:
        await peer.setLocalDescription(await peer.createOffer())
        await connection.initialize(sdp=peer.localDescription.sdp, type="offer")
        answer = connection.get_answer()
        await peer.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(opened.wait(), 20)
        deadline = time.monotonic() + 10
        while seam.webrtc_data_channel(connection) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if order == "channel-open-first":
            assert seam.webrtc_data_channel(connection).readyState == "open"
            accept_untyped_app_messages(connection)
        channel.send(json.dumps(RAW))  # before connect(): queued, replayed by connect()
        channel.send(json.dumps(TYPED))
        deadline = time.monotonic() + 10
        while len(seen.pending) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen.pending == [RAW, TYPED]
        while connection.pc.connectionState != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await connection.connect()
        channel.send("ping")
        channel.send(json.dumps({**RAW, "properties": {"text": "again"}}))
        channel.send(json.dumps(RTVI))
        deadline = time.monotonic() + 10
        while len(seen.app) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen.app == [RAW, TYPED, {**RAW, "properties": {"text": "again"}}, RTVI]
    finally:
        await peer.close()
        await connection.disconnect()
