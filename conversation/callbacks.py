"""Callbacks to the conversation's ``callback_url``, delivered at least once, never on the audio path.

Each callback is written to the database first (``deliveries``, with a
delivery id), then posted by one delivery thread with its own event loop, so a
slow or dead receiver never delays a conversation. Failures (non-2xx, timeout,
connection refused) are retried with exponential backoff and jitter
(``CALLBACK_BACKOFF_SECS`` doubling up to 5 min, ``CALLBACK_MAX_ATTEMPTS``
attempts); what is still pending when the process exits is retried on the
next start.

The body is the Tavus callback envelope (``properties``, ``conversation_id``,
``webhook_url``, ``event_type``, ``message_type``, ``timestamp``), the same
bytes on every attempt. One conversation's callbacks are delivered in order
(the next waits until the previous one is delivered or given up). Headers: ``X-Delivery-Id`` (the same on every attempt
of one callback: receivers dedupe on it) and ``X-Delivery-Attempt``; with
``CALLBACK_SIGNING_SECRET`` set, ``X-Signature: t=<unix>,v1=<hex>`` where
``v1 = HMAC-SHA256(secret, "<t>.<body>")``.

Secrets: the properties of every payload have the process's known secrets and every
credential shape hidden (``config.redact``) before they are stored or sent; log lines
name the callback URL without its query string or userinfo (``safe_url``: a receiver's
token is often in the query, and a failing receiver is logged on every retry).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import threading
import time
from typing import Any

from loguru import logger

from config.redact import redact_data, redact_text, safe_url
from conversation.records import ConversationStore, iso_now

MAX_BACKOFF_SECS = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` header value for ``body``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_secs: float = 300) -> bool:
    """Check an ``X-Signature`` header (for receivers; used by the tests)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_secs:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def envelope(conversation_id: str, url: str | None, event_type: str, message_type: str,
             properties: dict[str, Any]) -> dict[str, Any]:
    """A callback payload as Tavus sends it."""
    return {
        "properties": properties,
        "conversation_id": conversation_id,
        "webhook_url": url or "",
        "event_type": event_type,
        "message_type": message_type,
        "timestamp": iso_now(),
    }


class CallbackDispatcher:
    """Persists conversation events and delivers the callbacks in a thread of its own."""

    def __init__(
        self,
        store: ConversationStore,
        *,
        secret: str | None = None,
        timeout_secs: float = 10.0,
        max_attempts: int = 8,
        backoff_secs: float = 1.0,
        concurrency: int = 4,
    ):
        self.store = store
        self.secret = secret
        self.timeout_secs = timeout_secs
        self.max_attempts = max_attempts
        self.backoff_secs = backoff_secs
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._in_flight: set[str] = set()

    # ------------------------------------------------------------------ producing

    def emit(self, conversation_id: str, callback_url: str | None, event_type: str,
             message_type: str, properties: dict[str, Any]) -> dict[str, Any]:
        """Record the event (for verbose reads) and, with a ``callback_url``, queue its callback.

        Returns at once; the database write and the delivery happen elsewhere.
        """
        properties = redact_data(properties, names=False)
        payload = envelope(conversation_id, callback_url, event_type, message_type, properties)

        def write() -> None:
            self.store.add_event(conversation_id, payload)
            if callback_url:
                self.store.add_delivery(conversation_id, event_type, callback_url, payload)
                self.wake()

        self.store.submit(write)
        return payload

    def emit_payload(self, conversation_id: str, callback_url: str, event_type: str,
                     payload: dict[str, Any], *, record: dict[str, Any] | None = None) -> None:
        """Queue a callback whose body is not the conversation envelope (an objective's
        ``{conversation_id, objective_name, output_variables}``, a guardrail's), delivered
        as durably as the others. ``record``: the event to keep for verbose reads, if the
        caller has not recorded one already."""
        payload = redact_data(payload, names=False)

        def write() -> None:
            if record is not None:
                self.store.add_event(conversation_id, redact_data(record, names=False))
            self.store.add_delivery(conversation_id, event_type, callback_url, payload)
            self.wake()

        self.store.submit(write)

    def wake(self) -> None:
        """Look for due deliveries now."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ the delivery thread

    def start(self) -> CallbackDispatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="callbacks", daemon=True)
            self._thread.start()
            self._ready.wait(10)
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        self._ready.set()
        try:
            self._loop.run_until_complete(self._worker())
        finally:
            self._loop.close()

    async def _worker(self) -> None:
        import aiohttp

        semaphore = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession() as http:
            while not self._stopping:
                try:
                    due = await self.store.call(self.store.due_deliveries, time.time())
                except RuntimeError:  # the store was closed
                    return
                fresh = [d for d in due if d["delivery_id"] not in self._in_flight]
                for item in fresh:
                    self._in_flight.add(item["delivery_id"])
                    asyncio.create_task(self._deliver(http, semaphore, item))
                try:
                    next_due = await self.store.call(self.store.next_due)
                except RuntimeError:  # the store was closed meanwhile
                    return
                if next_due is None or (due and not fresh) or next_due <= time.time():
                    wait = 30.0  # nothing scheduled, or all due ones in flight: a finish wakes us
                else:
                    wait = min(next_due - time.time(), 30.0)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def _deliver(self, http, semaphore: asyncio.Semaphore, item: dict[str, Any]) -> None:
        import aiohttp

        delivery_id = item["delivery_id"]
        attempt = item["attempts"] + 1
        body = item["payload"].encode()
        headers = {"Content-Type": "application/json", "User-Agent": "persona-video-agent",
                   "X-Delivery-Id": delivery_id, "X-Delivery-Attempt": str(attempt)}
        if self.secret:
            headers["X-Signature"] = sign(self.secret, int(time.time()), body)
        error: str | None = None
        try:
            async with semaphore:
                async with http.post(item["url"], data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=self.timeout_secs)) as r:
                    if not 200 <= r.status < 300:
                        error = f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # noqa: BLE001 - a bad URL etc.: count it as a failed attempt
            error = f"{type(exc).__name__}: {exc}"
        url = safe_url(item["url"])
        if error is not None:  # an exception may quote the URL, token and all
            error = redact_text(error.replace(item["url"], url))
        try:
            if error is None:
                await self.store.call(self.store.delivery_attempted, delivery_id, ok=True)
                logger.info(f"Callback {item['event_type']} delivered ({delivery_id}, attempt {attempt})")
                return
            if attempt >= self.max_attempts:
                await self.store.call(self.store.delivery_attempted, delivery_id, ok=False, error=error)
                logger.error(f"Callback {item['event_type']} to {url} failed {attempt} times "
                             f"({error}); giving up ({delivery_id})")
                return
            delay = min(self.backoff_secs * 2 ** (attempt - 1), MAX_BACKOFF_SECS)
            delay *= 0.8 + random.random() * 0.4
            await self.store.call(self.store.delivery_attempted, delivery_id, ok=False, error=error,
                             next_attempt_at=time.time() + delay)
            logger.warning(f"Callback {item['event_type']} to {url}: {error}; "
                           f"retry {attempt}/{self.max_attempts - 1} in {delay:.1f}s")
        finally:
            self._in_flight.discard(delivery_id)
            self._wake.set()

    # ------------------------------------------------------------------ shutting down

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread (pending deliveries stay in the database)."""
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> int:
        return self.store.run(self.store.pending_count, timeout=10)

    def drain(self, timeout: float) -> int:
        """Wait (blocking) until nothing due is pending, or ``timeout``; returns what is left."""
        self.store.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = self.store.run(self.store.due_deliveries, time.time() + 0.5, timeout=10)
            if not due and not self._in_flight:
                break
            time.sleep(0.05)
        left = self.pending()
        if left:
            logger.info(f"{left} callback(s) still pending; they are retried on the next start")
        return left


def transcript_properties(replica_id: str | None, system_prompt: str | None,
                          transcript: list[dict[str, Any]]) -> dict[str, Any]:
    """``application.transcription_ready`` properties: the whole transcript with roles."""
    items = []
    if system_prompt:
        items.append({"role": "system", "content": system_prompt})
    items += transcript
    return {"replica_id": replica_id or "", "transcript": items}

