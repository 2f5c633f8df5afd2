"""Our own browser page for the local WebRTC transport.

Pipecat's prebuilt page loads daily-js from Daily's CDN before it opens the
microphone, so it never connects on a machine without internet. This page
uses only ``getUserMedia`` and ``RTCPeerConnection`` against the runner's
``/api/offer`` endpoint and makes no request off the machine. It is served at
``/``; the prebuilt page stays at ``/client/`` for users with internet.

``/page-info`` tells the page who it is talking to (the persona's name, whether it greets
first), from the ``describe`` callable the caller passes (bot.py: the loaded app).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE_DIR = Path(__file__).resolve().parent


def page_info(app_config: Any) -> dict[str, Any]:
    """What the page shows about the conversation, from an ``AppConfig`` (or nothing)."""
    options = getattr(app_config, "options", None)
    if options is None:
        return {}
    return {"persona_name": options.persona_name, "greets": bool(options.greet),
            "echo_mode": bool(options.echo)}


def mount_local_page(app=None, describe: Callable[[], Any] | None = None) -> None:
    """Serve ``index.html`` at ``/`` on the runner's FastAPI app (before its own routes).

    ``describe`` returns the app's ``AppConfig`` (called once, at the first ``/page-info``).
    """
    from fastapi.responses import FileResponse, JSONResponse
    from loguru import logger

    info: dict[str, Any] = {}

    if app is None:
        from pipecat.runner.run import app

    @app.get("/", include_in_schema=False)
    async def local_page():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/local.js", include_in_schema=False)
    async def local_script():
        return FileResponse(PAGE_DIR / "local.js", media_type="text/javascript")

    @app.get("/page-info", include_in_schema=False)
    def local_page_info():  # sync: FastAPI runs it in a thread (describe may block)
        if describe is not None and not info:
            try:
                info.update(page_info(describe()) or {"persona_name": None})
            except Exception as exc:  # noqa: BLE001 - the page still works without a name
                logger.warning(f"page info unavailable: {exc}")
                info["persona_name"] = None
        return JSONResponse(info)
