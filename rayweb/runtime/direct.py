"""A replica's own HTTP server: the endpoint's app on uvicorn, behind the cluster's gateway.

Requests that come this way skip Serve's proxy and its per-request machinery; uvicorn's flow
control gives backpressure both ways (a slow reader pauses the upload, a slow client pauses
the download), so memory stays bounded. The server runs on the replica's user-code event
loop, so the app, its lifespan state and its clients live on one loop whichever path a
request takes.

No Ray here: the trust and counting middlewares are unit-tested with plain ASGI calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Iterator

import uvicorn

from .adapters import ASGIApp, Receive, Scope, Send
from .gateway import CLIENT_HEADER, KEY_HEADER

logger = logging.getLogger("rayweb.direct")
_KEY = KEY_HEADER.encode()
_CLIENT = CLIENT_HEADER.encode()


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
        key = client = None
        headers = []
        for name, value in scope.get("headers", ()):
            if name == _KEY:
                key = value
            elif name == _CLIENT:
                client = value
            else:
                headers.append((name, value))
        trusted = bool(self.key and key is not None and hmac.compare_digest(key, self.key))
        if not trusted and self.require:
            await _refuse(scope, receive, send)
            return
        if key is not None or client is not None:
            scope = dict(scope)
            scope["headers"] = headers
            if trusted and client:
                scope["client"] = (client.decode("latin-1"), 0)
        await self.app(scope, receive, send)


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


class Counted:
    """Counts requests and WebSockets in flight (drain at shutdown, autoscaling stats) and,
    with ``slots``, lets at most that many run at once (``max_ongoing_requests``).

    The gateway sends each replica up to ``QUEUE_FACTOR`` times its slots, so requests that
    wait for a slot wait *here*, where they are counted and Serve's autoscaler sees them,
    rather than in HAProxy's queue, which it cannot see.
    """

    def __init__(self, app: ASGIApp, slots: asyncio.Semaphore | None = None) -> None:
        self.app = app
        self.slots = slots
        self.ongoing = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.ongoing += 1
        self.idle.clear()
        try:
            if self.slots is None:
                await self.app(scope, receive, send)
            else:
                async with self.slots:
                    await self.app(scope, receive, send)
        finally:
            self.ongoing -= 1
            if self.ongoing == 0:
                self.idle.set()


QUEUE_FACTOR = 4


class DirectServer:
    """uvicorn on a free port of ``host``, on the running event loop."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        ws_max_size: int | None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.counted = Counted(app, slots)
        self.host = host
        config = uvicorn.Config(
            self.counted,
            lifespan="off",  # Serve runs the app's lifespan once, on this same loop
            log_config=None,
            log_level="warning",
            access_log=False,
            ws_max_size=ws_max_size or 16 * 1024 * 1024,
            timeout_keep_alive=120,  # longer than the gateway's, so HAProxy closes first
            timeout_graceful_shutdown=None,
            proxy_headers=False,  # the client comes from the gateway's header (GatewayTrust)
        )
        self.server = _QuietServer(config)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("rayweb: the replica's HTTP server stopped at start")
            await asyncio.sleep(0.01)

    @property
    def ongoing(self) -> int:
        return self.counted.ongoing

    async def stop(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for requests in flight, then close."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.counted.idle.wait(), timeout=grace_s)
        self.server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                logger.warning("the replica's HTTP server failed while stopping", exc_info=True)


class _QuietServer(uvicorn.Server):
    """uvicorn's Server without signal handling: it runs inside a Ray actor's thread."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
