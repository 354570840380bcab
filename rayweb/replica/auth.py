"""Proxy auth inside the replica: 401 before any user code runs.

Token hashes come from the ``rayweb-store`` actor and are refreshed at most every
``REFRESH_S`` seconds, so a revocation reaches every replica within seconds. A secret
verified once (scrypt, ~20 ms) is remembered as a SHA-256 digest for that key, so later
requests cost a dict lookup and a constant-time compare; so is a secret found wrong (up to
``REJECTED_PER_KEY`` per key, forgotten when the tokens change), so repeating a wrong secret
costs no scrypt either. The rate limit runs before this (``chain.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable

from ..tokens import parse_credentials, verify_secret
from .types import ASGIApp, Receive, Scope, Send

REFRESH_S = 1.0
UNKNOWN_KEY_REFRESH_S = 0.2  # unknown keys may re-check this often (bounds a flood's cost)
REJECTED_PER_KEY = 64
REJECTED_KEYS = 10_000
FetchHashes = Callable[[int], Awaitable[tuple[int, dict[str, tuple[str, str]] | None]]]


class ProxyAuthMiddleware:
    """Reject requests and WebSocket upgrades without a valid, unrevoked token."""

    def __init__(
        self, app: ASGIApp, fetch: FetchHashes, key_header: str, secret_header: str
    ) -> None:
        self.app = app
        self.fetch = fetch
        self.key_header, self.secret_header = key_header, secret_header
        self.version = -1
        self.hashes: dict[str, tuple[str, str]] = {}
        self.verified: dict[str, bytes] = {}  # key -> sha256(secret) known to be valid
        self.rejected: dict[str, set[bytes]] = {}  # key -> sha256(secret)s known to be wrong
        self.fetched_at = 0.0
        self.lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        credentials = parse_credentials(
            scope.get("headers", []), self.key_header, self.secret_header
        )
        problem = "missing credentials" if credentials is None else None
        if credentials is not None and not await self._valid(*credentials):
            problem = "invalid credentials"
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": problem})
            return
        body = json.dumps({"detail": f"rayweb: {problem} for proxy authorization"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="rayweb"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _valid(self, key: str, secret: str) -> bool:
        await self._refresh(REFRESH_S)
        if key not in self.hashes:
            await self._refresh(UNKNOWN_KEY_REFRESH_S)  # a token created a moment ago
        stored = self.hashes.get(key)
        if stored is None:
            return False
        digest = hashlib.sha256(secret.encode()).digest()
        known = self.verified.get(key)
        if known is not None:
            return hmac.compare_digest(known, digest)
        if digest in self.rejected.get(key, ()):
            return False
        # scrypt is deliberately slow: keep it off the event loop
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_secret, secret, *stored)
        if ok:
            self.verified[key] = digest
        else:
            self._reject(key, digest)
        return ok

    def _reject(self, key: str, digest: bytes) -> None:
        if key not in self.rejected and len(self.rejected) >= REJECTED_KEYS:
            self.rejected.pop(next(iter(self.rejected)))  # the oldest key
        wrong = self.rejected.setdefault(key, set())
        if len(wrong) >= REJECTED_PER_KEY:
            wrong.pop()
        wrong.add(digest)

    async def _refresh(self, max_age: float) -> None:
        if time.monotonic() - self.fetched_at < max_age:
            return
        async with self.lock:
            if time.monotonic() - self.fetched_at < max_age:
                return
            version, hashes = await self.fetch(self.version)
            if hashes is not None:
                self.hashes = hashes
                self.verified = {k: v for k, v in self.verified.items() if k in hashes}
                self.rejected = {}  # a key may have a new secret now
            self.version = version
            self.fetched_at = time.monotonic()


def store_fetch() -> FetchHashes:
    from ..services.store_actor import store_actor

    actor = store_actor()

    async def fetch(version: int) -> tuple[int, dict[str, tuple[str, str]] | None]:
        result: tuple[int, dict[str, tuple[str, str]] | None]
        result = await actor.token_hashes.remote(version)
        return result

    return fetch
