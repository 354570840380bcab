"""The reverse proxy a ``@web_server`` replica runs in front of its sidecar's server.

HTTP streams both ways (request bodies as they arrive, response chunks as produced), every
method, redirects passed through (not followed), hop-by-hop headers dropped and
``X-Forwarded-For/-Proto/-Host/-Prefix`` set; WebSockets relay text, binary, subprotocols and
close codes. The route prefix is stripped, so the upstream server sees its own paths. An
unreachable upstream is a 502, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .types import Message, Receive, Scope, Send

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
}
WS_HANDSHAKE = {
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}


def _strip_prefix(scope: Scope) -> tuple[str, bytes]:
    """The upstream path: the request's path without the route prefix (root_path)."""
    root = scope.get("root_path", "") or ""
    path = scope.get("path", "/")
    raw = scope.get("raw_path") or path.encode()
    raw = raw.split(b"?", 1)[0]
    if root and path.startswith(root):
        path = path[len(root) :]
        if raw.startswith(root.encode()):
            raw = raw[len(root.encode()) :]
    return (path or "/"), (raw or b"/")


def _forward_headers(scope: Scope, *, websocket: bool = False) -> list[tuple[str, str]]:
    raw: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
    named_in_connection = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    drop = HOP_BY_HOP | named_in_connection | {b"x-forwarded-for"}
    if websocket:
        drop |= WS_HANDSHAKE
    out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k.lower() not in drop]
    client = scope.get("client")
    prior = [v.decode("latin-1") for k, v in raw if k.lower() == b"x-forwarded-for"]
    chain = ", ".join([*prior, client[0]] if client else prior)
    if chain:
        out.append(("X-Forwarded-For", chain))
    host = next((v.decode("latin-1") for k, v in raw if k.lower() == b"host"), None)
    scheme = scope.get("scheme", "ws" if websocket else "http")
    out.append(("X-Forwarded-Proto", {"ws": "http", "wss": "https"}.get(scheme, str(scheme))))
    if host:
        out.append(("X-Forwarded-Host", host))
    if scope.get("root_path"):
        out.append(("X-Forwarded-Prefix", scope["root_path"]))
    return out


class ReverseProxy:
    """An ASGI app that forwards everything to ``http://host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=4),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _url(self, scope: Scope, scheme: str) -> Any:
        from yarl import URL

        _, raw = _strip_prefix(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        text = f"{scheme}://{self.host}:{self.port}{raw.decode('latin-1')}"
        return URL(text + (f"?{query}" if query else ""), encoded=True)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        import aiohttp

        headers = _forward_headers(scope)
        has_body = any(
            k.lower() in (b"content-length", b"transfer-encoding")
            for k, _ in scope.get("headers", [])
        )
        body = _request_body(receive) if has_body else None
        try:
            response = await self._client().request(
                scope["method"],
                self._url(scope, "http"),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except (aiohttp.ClientError, OSError) as exc:
            await _plain(send, 502, f"Bad gateway: the web server is not reachable ({exc}).")
            return
        async with response:
            out = [
                (k, _rewrite_location(v, scope) if k.lower() == b"location" else v)
                for k, v in response.raw_headers
                if k.lower() not in HOP_BY_HOP
            ]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            try:
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, OSError):
                pass  # upstream broke mid-body: end the response; the client sees it short
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        import aiohttp

        first = await receive()
        if first["type"] != "websocket.connect":
            return
        try:
            upstream = await self._client().ws_connect(
                self._url(scope, "ws"),
                headers=_forward_headers(scope, websocket=True),
                protocols=tuple(scope.get("subprotocols", ())),
                autoclose=False,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            await send({"type": "websocket.close", "code": 1008 if exc.status < 500 else 1011})
            return
        except (aiohttp.ClientError, OSError):
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
        to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
        try:
            await _upstream_to_client(upstream, send)
        finally:
            to_upstream.cancel()
            with contextlib.suppress(BaseException):
                await to_upstream
            await upstream.close()


def _rewrite_location(value: bytes, scope: Scope) -> bytes:
    """A redirect to ``/path`` on the upstream means ``/<label>/path`` to the client."""
    root = (scope.get("root_path") or "").encode()
    is_path = value.startswith(b"/") and not value.startswith(b"//")
    prefixed = value == root or value.startswith(root + b"/")
    return root + value if root and is_path and not prefixed else value


async def _client_to_upstream(receive: Receive, upstream: Any) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])
            else:
                await upstream.send_str(message.get("text") or "")
        elif message["type"] == "websocket.disconnect":
            await upstream.close(code=message.get("code", 1000))
            return


async def _upstream_to_client(upstream: Any, send: Send) -> None:
    import aiohttp

    code, reason = 1000, ""
    while True:  # not `async for`: it hides the CLOSE message and so the close code
        message = await upstream.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": message.data})
        elif message.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": message.data})
        elif message.type == aiohttp.WSMsgType.CLOSE:
            code, reason = int(message.data or 1000), str(message.extra or "")
            break
        elif message.type == aiohttp.WSMsgType.ERROR:
            code = 1011
            break
        else:  # CLOSING / CLOSED
            code = upstream.close_code or 1000
            break
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})
