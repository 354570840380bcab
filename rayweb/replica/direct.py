"""A replica's own HTTP server: the endpoint's app on uvicorn, behind the cluster's gateway.

Requests that come this way skip Serve's proxy and its per-request machinery; uvicorn's flow
control gives backpressure both ways (a slow reader pauses the upload, a slow client pauses
the download), so memory stays bounded. The server runs on the replica's user-code event
loop, so the app, its lifespan state and its clients live on one loop whichever path a
request takes.

No Ray here: unit-tested with a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from .types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("rayweb.direct")


class Counted:
    """Counts requests and WebSockets in flight; with ``slots``, lets at most that many run
    at once (``max_ongoing_requests``, shared by both data paths).

    On a replica's own port one ``Counted`` without slots sits outermost: its count is what
    the replica reports to Serve's autoscaler and what the drain at shutdown waits for. The
    gateway sends each replica as many connections as it has slots (the compiler's
    ``gateway_maxconn``); requests beyond them wait in HAProxy's queue, which the gateway
    publishes to the autoscaling policy, and go to the first replica with a free slot.
    """

    def __init__(
        self,
        app: ASGIApp,
        slots: int | asyncio.Semaphore | None = None,
        *,
        full_status: int | None = None,
    ) -> None:
        self.app = app
        # A semaphore is shared with others (the web methods and calls of a class's pool).
        self.slots = asyncio.Semaphore(slots) if isinstance(slots, int) and slots else slots or None
        self.full_status = full_status  # refuse at once when every slot is taken
        self.ongoing = 0
        self.arrived = 0  # requests ever started here (the autoscaler's "any traffic?")
        self.idle = asyncio.Event()
        self.idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.full_status is not None and self.slots is not None and self.slots.locked():
            await _refuse(scope, receive, send, self.full_status)
            return
        self.ongoing += 1
        self.arrived += 1
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


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int) -> None:
    """A full replica's answer: ``status`` with Retry-After (a WebSocket: close 1013)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1013})
        return
    body = b'{"detail": "Too many concurrent requests: this container is at max_concurrency."}'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PrefixDispatch:
    """Sends each request to the app of the longest label prefix its path starts with
    (``/label`` or ``/label/...``); 404 for others."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = sorted(apps.items(), key=lambda item: -len(item[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        for prefix, app in self.apps:
            if path == prefix or path.startswith(prefix + "/"):
                await app(scope, receive, send)
                return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http":
            body = b'{"detail": "Not Found"}'
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class DirectServer:
    """uvicorn on a free port of ``host``, on the running event loop."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        ws_max_size: int | None,
    ) -> None:
        self.counted = Counted(app)
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
        self._arrived_seen = 0

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

    @property
    def arrived(self) -> int:
        return self.counted.arrived

    def sample(self) -> int:
        """What the replica reports to Serve's autoscaler: requests in flight here, and at
        least one if any arrived since the last sample.

        Serve samples every few seconds (a fifth of ``look_back_period_s``): a short
        request between two samples would be invisible, and sparse traffic would look like
        none and scale the endpoint to zero."""
        arrived = self.counted.arrived
        recent = arrived != self._arrived_seen
        self._arrived_seen = arrived
        return max(self.counted.ongoing, 1 if recent else 0)

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
