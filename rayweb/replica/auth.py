"""Proxy auth inside the replica: 401 before any user code runs.

Token hashes come from the ``rayweb-store`` actor through ``tokens.TokenCheck`` (cached,
refreshed within seconds of a revocation, verified and wrong secrets remembered so a
repeated secret costs no scrypt). The rate limit runs before this (``chain.py``). A request
the gateway's holder already admitted (``x-rayweb-admitted``, trusted only with the gateway
key: ``trust.py``) is not checked again.
"""

from __future__ import annotations

import json

from ..tokens import FetchHashes, TokenCheck, parse_credentials
from .trust import ADMITTED_SCOPE
from .types import ASGIApp, Receive, Scope, Send


class ProxyAuthMiddleware:
    """Reject requests and WebSocket upgrades without a valid, unrevoked token."""

    def __init__(
        self, app: ASGIApp, fetch: FetchHashes, key_header: str, secret_header: str
    ) -> None:
        self.app = app
        self.check = TokenCheck(fetch)
        self.key_header, self.secret_header = key_header, secret_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get(ADMITTED_SCOPE):
            await self.app(scope, receive, send)
            return
        credentials = parse_credentials(
            scope.get("headers", []), self.key_header, self.secret_header
        )
        problem = "missing credentials" if credentials is None else None
        if credentials is not None and not await self.check.valid(*credentials):
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
