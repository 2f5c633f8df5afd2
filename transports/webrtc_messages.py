"""The local page's data channel takes any JSON object as an app message.

Pipecat's ``SmallWebRTCConnection`` reads each data-channel message as JSON and does
``json_message["type"]``: a message without a ``"type"`` key is dropped with an ERROR
line. Tavus's clients send the Interactions Protocol's messages as they are
(``{"message_type": "conversation", "event_type": "conversation.respond", ...}``), with
no ``"type"``. :func:`accept_untyped_app_messages` wraps Pipecat's ``message`` listener
on the connection's data channels: a JSON object without ``"type"`` goes on as an app
message (an ``InputTransportMessageFrame`` carrying the object exactly as sent, as
Daily's app messages do), the way Pipecat hands on typed ones; everything else (the
``ping`` keepalive, signalling, RTVI, typed JSON, JSON that is not an object, not JSON)
reaches Pipecat's listener unchanged.

Both orders are covered: a data channel already open when the bot gets the connection
is wrapped at once; one that arrives later is wrapped by our ``datachannel`` listener,
which runs right after Pipecat's (the one that adds its ``message`` listener), on this
peer connection and on any that ``renegotiate(restart_pc=True)`` makes. The Pipecat
internals involved go through :mod:`services.pipecat_seam`.

Cost per message: a raw message is parsed once, here (about 2 us for a respond; Pipecat
does not see it). A ping, or JSON that starts ``{"type"`` (our page puts it first), is
not parsed here; other typed JSON (``"type"`` not the first key: RTVI's) is parsed here
and again by Pipecat's listener.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from loguru import logger

from services import pipecat_seam as seam

_WRAPPED = "_persona_wraps"  # set on our listener: the Pipecat listener it wraps
_INSTALLED: weakref.WeakSet = weakref.WeakSet()


def untyped_object(message: Any) -> dict | None:
    """``message`` parsed, if it is a JSON object without ``"type"``; else ``None``.

    Not parsed: Pipecat's keepalive (``ping...``, as its listener tells it) and JSON that
    starts ``{"type"`` (an object whose first key is ``"type"``: our page's messages).
    """
    if isinstance(message, str):
        if message.startswith(("ping", '{"type"')):
            return None
    elif isinstance(message, (bytes, bytearray)):
        if message.startswith(b'{"type"'):
            return None
    else:
        return None
    try:
        parsed = json.loads(message)
    except (ValueError, RecursionError):  # UnicodeDecodeError included; Pipecat's logs it
        return None
    return parsed if type(parsed) is dict and "type" not in parsed else None


def wrap_data_channel(connection: Any, channel: Any) -> bool:
    """Put our listener in place of Pipecat's ``message`` listener on ``channel``.

    False if it already is (nothing changed).
    """
    if any(hasattr(listener, _WRAPPED) for listener in channel.listeners("message")):
        return False
    pipecat_on_message = seam.webrtc_message_listener(channel)

    async def on_message(message: Any) -> None:
        parsed = untyped_object(message)
        if parsed is None:
            await pipecat_on_message(message)
            return
        try:
            await seam.deliver_webrtc_app_message(connection, parsed)
        except Exception as exc:  # noqa: BLE001 - as Pipecat's listener: log, never raise
            # (the message itself is never logged: it may carry what the user said)
            logger.error(f"A data-channel app message could not be handed on: "
                         f"{type(exc).__name__}: {exc}")

    setattr(on_message, _WRAPPED, pipecat_on_message)
    channel.remove_listener("message", pipecat_on_message)
    channel.on("message", on_message)
    logger.debug(f"Data channel {getattr(channel, 'label', '?')!r} ({channel.readyState}): "
                 'JSON without "type" goes on as app messages')
    return True


def accept_untyped_app_messages(connection: Any) -> None:
    """Make ``connection`` (a ``SmallWebRTCConnection``) take JSON without ``"type"`` as
    app messages, on its data channel now and on every one that arrives later.

    Idempotent. Raises :class:`~services.pipecat_seam.PipecatSeamError` if Pipecat's
    connection changed so that this no longer fits.
    """
    if connection in _INSTALLED:
        return

    def on_peer_connection(pc: Any) -> None:
        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:  # after Pipecat's: its listener is there
            try:
                wrap_data_channel(connection, channel)
            except seam.PipecatSeamError as exc:  # not into aiortc's SCTP handling
                logger.error(f"Data channel left as Pipecat made it: {exc}")

    # No await from here on: no message can slip between the two.
    seam.on_webrtc_peer_connection(connection, on_peer_connection)
    channel = seam.webrtc_data_channel(connection)
    if channel is not None:
        wrap_data_channel(connection, channel)
    _INSTALLED.add(connection)
