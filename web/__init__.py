"""Our own browser page for the local WebRTC transport.

Pipecat's prebuilt page loads daily-js from Daily's CDN before it opens the
microphone, so it never connects on a machine without internet. This page
uses only ``getUserMedia`` and ``RTCPeerConnection`` against the runner's
``/api/offer`` endpoint and makes no request off the machine. It is served at
``/``; the prebuilt page stays at ``/client/`` for users with internet.
"""

from __future__ import annotations

from pathlib import Path

PAGE_DIR = Path(__file__).resolve().parent


def mount_local_page(app=None) -> None:
    """Serve ``index.html`` at ``/`` on the runner's FastAPI app (before its own routes)."""
    from fastapi.responses import FileResponse

    if app is None:
        from pipecat.runner.run import app

    @app.get("/", include_in_schema=False)
    async def local_page():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/local.js", include_in_schema=False)
    async def local_script():
        return FileResponse(PAGE_DIR / "local.js", media_type="text/javascript")
