"""Transports of the development runner, named after the persona."""

from __future__ import annotations

from typing import Any

from config.options import ConversationOptions
from services.voice_isolation import input_filter


def _video(video: bool) -> dict[str, Any]:
    """Video out for a replica (Pipecat's Tavus example: live 1280x720)."""
    if not video:
        return {}
    return dict(video_out_enabled=True, video_out_is_live=True, video_out_width=1280,
                video_out_height=720)


def _video_in(fps: float | None) -> dict[str, Any]:
    """The user's camera and screen share in, for perception (``fps``: its sampling rate; the
    transport passes on at least one frame a second and perception samples below that)."""
    if not fps:
        return {}
    import math

    from pipecat.transports.base_transport import VideoInSourceParams

    rate = max(1, math.ceil(fps))
    return dict(video_in_enabled=True,
                video_in_sources={"camera": VideoInSourceParams(framerate=rate),
                                  "screenVideo": VideoInSourceParams(framerate=rate)})


def transport_params(options: ConversationOptions, video: bool = False,
                     perception_fps: float | None = None) -> dict[str, Any]:
    """Parameter factories per runner transport: audio in and out, video out with a replica,
    the user's video in when the conversation perceives it (``perception_fps``).

    Participant audio goes through the persona's voice isolation filter, if any.
    ``enable_closed_captions`` also turns on Daily's transcription, which Daily's own UI
    shows as captions.
    """
    from pipecat.transports.base_transport import TransportParams

    def webrtc():
        return TransportParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_in_filter=input_filter(options.flow),
            **_video(video), **_video_in(perception_fps),
        )

    def daily():
        from pipecat.transports.daily.transport import DailyParams

        return DailyParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_in_filter=input_filter(options.flow),
            transcription_enabled=options.closed_captions, **_video(video),
            **_video_in(perception_fps),
        )

    return {"webrtc": webrtc, "daily": daily}


async def make_transport(runner_args: Any, options: ConversationOptions, video: bool = False,
                         perception_fps: float | None = None) -> Any:
    """The transport for a runner session; in Daily rooms the bot shows the persona's name.

    On the local page's WebRTC connection, JSON without a ``"type"`` key (a Tavus client's
    interaction messages as they are) is an app message too
    (:mod:`transports.webrtc_messages`). Pipecat hands no app message on before the
    transport exists (it registers the handler), so nothing is lost by doing it here.
    """
    from pipecat.runner.types import DailyRunnerArguments
    from pipecat.runner.utils import create_transport

    params = transport_params(options, video, perception_fps)
    if isinstance(runner_args, DailyRunnerArguments):
        from pipecat.transports.daily.transport import DailyTransport

        return DailyTransport(
            runner_args.room_url, runner_args.token, options.persona_name, params=params["daily"]()
        )
    connection = getattr(runner_args, "webrtc_connection", None)
    if connection is not None:
        from transports.webrtc_messages import accept_untyped_app_messages

        accept_untyped_app_messages(connection)
    return await create_transport(runner_args, params)
