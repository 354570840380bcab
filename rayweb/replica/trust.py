"""Who sent a request: the gateway's trust check, and the route prefix of a replica's own port.

No Ray here: unit-tested with plain ASGI calls.
"""

from __future__ import annotations

import hmac

from ..common import ADMITTED_HEADER, CLIENT_HEADER, KEY_HEADER, ORIGIN_HEADER
from .types import ASGIApp, Receive, Scope, Send

_KEY = KEY_HEADER.encode()
_CLIENT = CLIENT_HEADER.encode()
_ADMITTED = ADMITTED_HEADER.encode()
_ORIGIN = ORIGIN_HEADER.encode()
# Set in the scope of a request the gateway's holder already admitted (proxy auth and rate
# limit done there), so the replica does not check it again.
ADMITTED_SCOPE = "rayweb.admitted"


class GatewayTrust:
    """Take the client address from the gateway's headers when they carry the gateway key.

    ``require=True`` (the replica's own port) refuses requests without the key: nothing but
    the gateway may talk to it. On Serve's path the headers are optional (requests may reach
    Serve's proxy directly), and the client is then whatever Serve says.
    """

    def __init__(self, app: ASGIApp, key: str | None, *, require: bool) -> None:
        self.app = app
        self.key = key.encode() if key else None
        self.require = require

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        key = client = admitted = origin = None
        headers = []
        for name, value in scope.get("headers", ()):
            if name == _KEY:
                key = value
            elif name == _CLIENT:
                client = value
            elif name == _ADMITTED:
                admitted = value
            elif name == _ORIGIN:
                origin = value
            else:
                headers.append((name, value))
        trusted = bool(self.key and key is not None and hmac.compare_digest(key, self.key))
        if not trusted and self.require:
            await _refuse(scope, receive, send)
            return
        if key is not None or client is not None or admitted is not None or origin is not None:
            scope = dict(scope)
            scope["headers"] = headers
            if trusted and client:
                scope["client"] = (client.decode("latin-1"), 0)
            if trusted and admitted is not None:
                scope[ADMITTED_SCOPE] = True
            if trusted and origin is not None:
                _at_origin(scope)
        await self.app(scope, receive, send)


def _at_origin(scope: Scope) -> None:
    """A request to the endpoint's own origin: the gateway prefixed its path to route it;
    the app sees it at ``/`` again (``root_path`` empty), as on Modal."""
    root = scope.get("root_path", "") or ""
    if root and scope.get("path", "").startswith(root):
        scope["path"] = scope["path"][len(root) :] or "/"
        raw = scope.get("raw_path")
        if raw and raw.startswith(root.encode()):
            scope["raw_path"] = raw[len(root) :] or b"/"
    scope["root_path"] = ""


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b"rayweb: this port only takes requests from the cluster's rayweb gateway.\n"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RoutePrefix:
    """Set ``root_path`` to the endpoint's route prefix, as Serve's proxy does."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = "" if prefix == "/" else prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["root_path"] = scope.get("root_path", "") + self.prefix
        await self.app(scope, receive, send)
