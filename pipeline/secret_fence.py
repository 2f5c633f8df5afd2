"""``SecretFence``: no secret leaves the bot in a message to the client.

The one chokepoint for everything a client receives on the data channel (SmallWebRTC),
as a Daily app message, or in the Tavus room: every transport sends exactly the
``OutputTransportMessageFrame`` / ``OutputTransportMessageUrgentFrame``s that reach
its *output* processor, and this processor sits right before it (``session.builder``).
What reaches the client through it:

- RTVI ``error`` messages. A service that fails (an LLM endpoint answering 401 with the
  key echoed in its body) pushes an ``ErrorFrame`` upstream; Pipecat's ``RTVIProcessor``,
  which the ``PipelineWorker`` puts first in the pipeline, turns it into an
  ``OutputTransportMessageUrgentFrame`` (``RTVIProcessor._send_error_frame``) and pushes
  that downstream through the whole pipeline to the output, so through here. The same
  for ``RTVIProcessor.send_error``, RTVI ``error-response``s and every message
  ``RTVIObserver`` sends (``send_rtvi_message`` -> ``RTVIProcessor.push_transport_message``).
- Our interactions events (``system.error`` included), pushed downstream by
  ``InteractionsProcessor`` right after the input.

Error messages (RTVI ``error`` / ``error-response``, ``system.error``) get the whole of
:func:`config.redact.redact_text`: known secrets, credential shapes and secret-named
``key=value`` pairs; every other message the known secrets and credential shapes only
(a client tool's argument may legitimately be called ``token``).

Pipecat's output transports also send urgent messages pushed *upstream* into them; the
processors after the output (the interruption fence, the assistant aggregator) push none.

Being that chokepoint, it is also the **RTVI gate**: Pipecat's RTVI messages (transcripts,
speaking and metrics events; most of a short session's traffic) go out only once an RTVI
client has asked for them. Such a client (our local page, Pipecat's client SDK) sends
``client-ready``, which Pipecat answers with ``bot-ready``; until that ``bot-ready`` passes
here every RTVI message is dropped, so a Tavus front end in a Daily room (which speaks only
the Interactions Protocol) never receives any. RTVI errors are the exception: the last
:data:`HELD_RTVI_ERRORS` are held and sent right after ``bot-ready`` (a failing greeting
races the client's ``client-ready``), redacted as every message is.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pipecat.frames.frames import (
    Frame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from config.redact import redact_data

_RTVI_ERRORS = {"error", "error-response"}
HELD_RTVI_ERRORS = 20  # RTVI errors from before bot-ready, sent after it (the newest)


def is_error_message(message: Any) -> bool:
    """An RTVI error (response) or our ``system.error`` event."""
    if not isinstance(message, dict):
        return False
    if message.get("label") == "rtvi-ai":
        return message.get("type") in _RTVI_ERRORS
    return message.get("event_type") == "system.error"


def redact_message(message: Any, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """``message`` as the client may see it (the same object when nothing was hidden)."""
    return redact_data(message, secrets, names=is_error_message(message))


class SecretFence(FrameProcessor):
    """Hides secrets in every transport message on its way to the output transport.

    ``secrets``: known secrets beyond the process's registered ones
    (``config.redact.register_secrets``), e.g. ``AppConfig.secrets()``. ``rtvi_gate``: drop
    RTVI messages until ``bot-ready`` (see the module docstring); off, every RTVI message
    goes out.
    """

    def __init__(self, secrets: list[str] | tuple[str, ...] = (), *, rtvi_gate: bool = True,
                 **kwargs):
        super().__init__(name="secret-fence", **kwargs)
        self._secrets = tuple(secrets)
        self._rtvi_open = not rtvi_gate
        self._held: deque[Frame] = deque(maxlen=HELD_RTVI_ERRORS)

    @property
    def rtvi_client(self) -> bool:
        """Whether an RTVI client asked for RTVI messages (they go out)."""
        return self._rtvi_open

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            frame.message = redact_message(frame.message, self._secrets)
            if not self._rtvi_open and is_rtvi_message(frame.message):
                if frame.message.get("type") == "bot-ready":
                    self._rtvi_open = True
                    await self.push_frame(frame, direction)
                    while self._held:
                        await self.push_frame(self._held.popleft(), direction)
                elif is_error_message(frame.message):
                    self._held.append(frame)  # for an RTVI client that is about to be ready
                return  # no RTVI client asked for it (yet)
        await self.push_frame(frame, direction)


def is_rtvi_message(message: Any) -> bool:
    """One of Pipecat's RTVI messages."""
    return isinstance(message, dict) and message.get("label") == "rtvi-ai"
