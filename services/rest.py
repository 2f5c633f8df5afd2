"""A small JSON REST client for the Tavus and Daily APIs: retries, backoff, clear errors.

Retries (with exponential backoff, honouring ``Retry-After``) on 429, 5xx,
timeouts and connection errors; never on other 4xx. Errors name the service,
the status and what to do; they never contain the API key.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from loguru import logger

from config.errors import AgentError

RETRY_STATUSES = {429, 500, 502, 503, 504}


class ApiError(AgentError):
    """A REST call failed; ``status`` is the HTTP status (None: no response)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class RestClient:
    """JSON over HTTP with retries. ``key_env`` names the variable behind the key (for messages)."""

    service: str
    base_url: str
    headers: dict[str, str]
    session: aiohttp.ClientSession
    key_env: str
    attempts: int = 4
    backoff_secs: float = 0.5
    max_backoff_secs: float = 8.0
    timeout_secs: float = 15.0

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff_secs)
            except ValueError:
                pass
        base = min(self.backoff_secs * (2 ** (attempt - 1)), self.max_backoff_secs)
        return base * (0.75 + random.random() / 2)

    async def request(
        self, method: str, path: str, *, json: Any = None, what: str | None = None
    ) -> Any:
        """One call; returns the decoded JSON body (None when empty). Raises :class:`ApiError`."""
        what = what or f"{method} {path}"
        url = self.url(path)
        last: str = ""
        status: int | None = None
        for attempt in range(1, self.attempts + 1):
            retry_after = None
            try:
                async with self.session.request(
                    method, url, headers=self.headers, json=json,
                    timeout=aiohttp.ClientTimeout(total=self.timeout_secs),
                ) as response:
                    status = response.status
                    text = await response.text()
                    if 200 <= status < 300:
                        if not text.strip():
                            return None
                        try:
                            return await response.json(content_type=None)
                        except ValueError:
                            raise ApiError(
                                f"{self.service}: {what} answered {status} with a body that is not JSON",
                                status,
                            ) from None
                    detail = _detail(text)
                    if status not in RETRY_STATUSES:
                        raise ApiError(self._message(what, status, detail), status)
                    retry_after = response.headers.get("Retry-After")
                    last = f"{status} {detail}".strip()
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                status = None
                last = f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})".rstrip(": )") + ")"
            if attempt < self.attempts:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    f"{self.service}: {what} failed ({last}); retry {attempt}/{self.attempts - 1} "
                    f"in {delay:.1f}s"
                )
                await asyncio.sleep(delay)
        if status == 429:
            raise ApiError(
                f"{self.service}: {what} was rate limited (429) {self.attempts} times; "
                "wait a minute and try again", status,
            )
        if status is not None:
            raise ApiError(
                f"{self.service}: {what} failed with a server error ({last}) after "
                f"{self.attempts} attempts; the service may be down, try again later", status,
            )
        raise ApiError(f"{self.service}: {what} failed: {last} after {self.attempts} attempts")

    def _message(self, what: str, status: int, detail: str) -> str:
        if status in (401, 403):
            return (
                f"{self.service} rejected the API key ({status} {detail}): check {self.key_env}"
            ).replace("  ", " ")
        if status == 404:
            return f"{self.service}: {what}: not found (404{', ' + detail if detail else ''})"
        return f"{self.service}: {what} was refused ({status}{': ' + detail if detail else ''})"


def _detail(text: str) -> str:
    """The human part of an error body (``error``/``message``/``info``), shortened."""
    import json as _json

    text = text.strip()
    try:
        body = _json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message", "info", "detail") if body.get(k)]
        if parts:
            return "; ".join(parts)[:300]
    return text[:200]
