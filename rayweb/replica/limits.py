"""rayweb's limits, enforced in the replica before the user's app sees a request.

``LimitsMiddleware`` answers 429 (rate limit, with ``Retry-After``), 413 (body too large:
before reading when ``Content-Length`` says so, else as soon as the count passes the limit)
and 408 (a body slower than 16 KiB per ``body_timeout``; the gateway holds small bodies
until complete, so this is for large ones),
and closes a WebSocket with 1009 on a too-large message; ``RequestTimeout`` answers 504.

The rate limit is per client IP and shared by every replica of an endpoint: one small async
actor per cluster (``services/ratelimit.py``) keeps a token bucket per (endpoint, client);
replicas take tokens in small leases so most requests need no actor call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from ..services.ratelimit import Acquire
from ..spec import Limits
from .trust import ADMITTED_SCOPE
from .types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("rayweb.limits")
T = TypeVar("T")

LEASE_S = 0.25  # a replica may use tokens it took for this long, then gives up the rest
_NO_LEASE = (0, 0.0, math.inf)
BODY_WINDOW = 16 * 1024  # a body must bring this much per ``Limits.body_timeout``


class LimitsMiddleware:
    """Enforce :class:`~rayweb.spec.Limits` around an ASGI app."""

    def __init__(self, app: ASGIApp, limits: Limits, acquire: Acquire | None = None) -> None:
        self.app = app
        self.limits = limits
        self.acquire = acquire
        self.lease_size = max(1, int((limits.rate_limit or 0) * 0.02))
        # client -> (tokens, expires, paced): see _lease
        self.leases: dict[str, tuple[int, float, float]] = {}
        self.refills: dict[str, asyncio.Future[None]] = {}  # client -> lease renewed in flight
        self.lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        retry_after = await self._rate_limited(scope)
        if retry_after is not None:
            await _reject_rate(scope, receive, send, retry_after)
            return
        if kind == "websocket":
            await self.app(scope, self._ws_receive(receive, send), send)
        else:
            await self._http(scope, receive, send)

    async def _rate_limited(self, scope: Scope) -> float | None:
        """None if allowed, else seconds to wait."""
        if self.limits.rate_limit is None or self.acquire is None or scope.get(ADMITTED_SCOPE):
            return None  # no limit, or the gateway's holder took this request's token
        client = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        tokens, expires, paced = self.leases.get(client, _NO_LEASE)
        if tokens > 0 and now < expires:
            # the last token, spent sooner than the rate allows: the next request waits
            self.leases[client] = (
                tokens - 1,
                expires,
                paced if tokens > 1 or now >= paced else math.inf,
            )
            return None
        if client not in self.refills and (tokens > 0 or now >= paced):
            # The lease ran out of time, or of tokens no faster than the rate: the client
            # keeps under its limit, so this request goes on at once and the lease is renewed
            # meanwhile (the actor's round trip, ~3 ms, is not put before the first byte of
            # a stream or a chat turn). The renewal takes this request's token too.
            self.leases[client] = _NO_LEASE
            self.refills[client] = asyncio.ensure_future(self._renew(client))
            return None
        pending = self.refills.get(client)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        async with self.lock:
            tokens, expires, paced = self.leases.get(client, _NO_LEASE)
            if tokens > 0 and now < expires:
                self.leases[client] = (tokens - 1, expires, paced)
                return None
            taken, wait = await self.acquire(client, self.lease_size)
            if taken == 0:
                self.leases[client] = _NO_LEASE  # refused: no request on credit until a lease
                return max(wait, 0.001)
            self._lease(client, taken - 1)
            if len(self.leases) > 10_000:
                self.leases = {k: v for k, v in self.leases.items() if v[1] > now}
            return None

    def _lease(self, client: str, tokens: int) -> None:
        """``tokens`` to use for ``LEASE_S``; spent sooner than the rate allows, the next
        request waits for the shared bucket (``paced``: when running out stops counting)."""
        now = time.monotonic()
        rate = self.limits.rate_limit or math.inf
        self.leases[client] = (tokens, now + LEASE_S, now + (tokens + 1) / rate)

    async def _renew(self, client: str) -> None:
        """A new lease for ``client``, one token more for the request already let through.
        If the bucket is empty (the client spent it at other replicas), that one request is
        the overshoot, at most one per replica per lease; the next one waits for the actor."""
        assert self.acquire is not None
        try:
            taken, _ = await self.acquire(client, self.lease_size + 1)
            if taken > 1:
                self._lease(client, taken - 1)
        except Exception:
            logger.debug("renewing a rate-limit lease failed", exc_info=True)
        finally:
            self.refills.pop(client, None)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.max_request_body
        if limit is not None:
            length = _content_length(scope)
            if length is not None and length > limit:
                await _json(send, 413, {"detail": _too_large(limit)})
                return
        started = False
        refused: tuple[int, str] | None = None  # (status, detail) the client gets instead
        body_timeout = self.limits.body_timeout

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the app's answer to the cut-off body; the client gets 413/408
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        received = 0
        body_done = False
        window_start, window_bytes = time.monotonic(), 0

        async def receive_counted() -> Message:
            nonlocal received, refused, body_done, window_start, window_bytes
            if refused is not None:
                return {"type": "http.disconnect"}
            if body_done or body_timeout is None:
                message: Message = await receive()
            else:
                # A slow body: each BODY_WINDOW bytes must arrive within body_timeout.
                left = window_start + body_timeout - time.monotonic()
                try:
                    message = await _within(receive(), max(0.0, left))
                except asyncio.TimeoutError:
                    refused = (408, _too_slow(body_timeout))
                    return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                window_bytes += chunk
                if window_bytes >= BODY_WINDOW:
                    window_start, window_bytes = time.monotonic(), 0
                body_done = not message.get("more_body", False)
                if limit is not None and received > limit:
                    # Stop reading: to the app it looks like the client went away.
                    refused = (413, _too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, receive_counted, send_tracked)
        except Exception:
            if refused is None:
                raise
        if refused is not None and not started:
            status, detail = refused
            await _json(send, status, {"detail": detail}, [(b"connection", b"close")])

    def _ws_receive(self, receive: Receive, send: Send) -> Receive:
        limit = self.limits.max_websocket_message
        if limit is None:
            return receive

        async def checked() -> Message:
            message: Message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                size = len(data) if data is not None else len((message.get("text") or "").encode())
                if size > limit:
                    await send(
                        {"type": "websocket.close", "code": 1009, "reason": "message too big"}
                    )
                    return {"type": "websocket.disconnect", "code": 1009}
            return message

        return checked


class RequestTimeout:
    """504 when a request has not started its response ``seconds`` after it got its slot
    (the handler is cancelled). It sits inside the concurrency slot (``chain.py``), so time
    spent waiting for a slot does not count, as Modal's ``timeout`` counts execution only."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await _within(self.app(scope, receive, send_tracked), self.seconds)
        except asyncio.TimeoutError:
            if not started:
                await _json(send, 504, {"detail": f"Request timed out after {self.seconds:g}s."})


_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` without its task per call where Python has ``asyncio.timeout``
    (the request timeout wraps every request: the task cost ~17 of the chain's ~24 µs)."""
    if _timeout is None:
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes."


def _too_slow(seconds: float) -> str:
    return (
        f"Request body arrived too slowly (less than {BODY_WINDOW // 1024} KiB in "
        f"{seconds:g}s; rayweb.Limits(body_timeout=...))."
    )


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: list[Any] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _reject_rate(scope: Scope, receive: Receive, send: Send, retry_after: float) -> None:
    seconds = max(1, math.ceil(retry_after))
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
        return
    await _json(
        send,
        429,
        {"detail": "Too many requests from this client. Retry later."},
        [(b"retry-after", str(seconds).encode())],
    )
