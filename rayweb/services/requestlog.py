"""What the gateway's HAProxy says about each request: Serve's request metrics for traffic
that never passes Serve's proxy, and a minute of each route's requests for ``rayweb app list``.

HAProxy sends one line per request, when it ends, to a Unix datagram socket in the
gateway's folder (``LOG_FORMAT``, raw): the route's name (set in its backend), the method,
the status, the total time in ms, the termination state and the backend. The gateway actor
reads them (``RequestLog.feed``) and records Serve's own metric families with Serve's tags
(``serve_num_http_requests``, ``serve_http_request_latency_ms``,
``serve_num_http_error_requests``, ...: ``record`` is Serve's ``RequestIngressMetrics``,
the class its own HAProxy mode and proxies use), so one scrape of Ray's metrics endpoint
sees every request whichever path it took. Requests HAProxy hands to Serve's proxy
(unknown paths, backend ``serve``) are left to Serve's proxy, which records them itself.
A datagram socket never slows HAProxy down: when the reader falls behind, lines are dropped.

No Ray but in ``serve_metrics``: parsing, the windows and the socket are unit-tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("rayweb.gateway")

# The route's name, method, status, total active ms (%Ta), termination state, backend.
LOG_FORMAT = "%[var(txn.rw_route)] %HM %ST %Ta %ts %b"
ROUTE_VAR = "txn.rw_route"  # each route's backend sets it to the route's name
SERVE_BACKEND = "serve"  # Serve's proxy records what HAProxy hands it
WINDOW_S = 60.0  # what `rayweb app list` summarizes
MAX_KEPT = 20_000  # per route, within the window (a busier route's rate is a lower bound)
RECEIVE_BUFFER = 4 * 1024 * 1024  # lines the kernel keeps while the reader is busy


@dataclass(frozen=True)
class Request:
    """One finished request, as HAProxy logged it."""

    route: str  # the route's name ("" when HAProxy answered before choosing one)
    method: str
    status: str  # 499 when the client went away first, as Serve's proxy counts it
    latency_ms: float


def parse(line: bytes) -> Request | None:
    """One log line (``LOG_FORMAT``); None for lines that are not a request of rayweb's
    routes (Serve's backend, a connection without a request, anything malformed)."""
    parts = line.decode("latin-1").split()
    if len(parts) != 6:
        return None
    route, method, status, total, term, backend = parts
    if backend == SERVE_BACKEND or not status.isdigit() or not total.lstrip("-").isdigit():
        return None
    if term.startswith("C"):  # the client aborted
        status = "499"
    return Request("" if route == "-" else route, method, status, float(max(0, int(total))))


# (request, (its Serve application, the deployment)): a class pool's, for its web methods
Owner = tuple[str, str]
Record = Callable[[Request, Owner], None]


class RequestLog:
    """Feeds each request to ``record`` (Serve's metrics) and keeps the last minute of each
    route's latencies. ``owner(route)``: the route's Serve application and deployment."""

    def __init__(self, record: Record | None, owner: Callable[[str], Owner]) -> None:
        self.record = record
        self.owner = owner
        self.recent: dict[str, deque[tuple[float, float]]] = {}
        self.lines = 0  # lines read, requests or not (tests, inspection)

    def feed(self, data: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for line in data.splitlines():
            self.lines += 1
            request = parse(line)
            if request is None:
                continue
            if self.record is not None:
                self.record(request, self.owner(request.route))
            if request.route:
                kept = self.recent.setdefault(request.route, deque(maxlen=MAX_KEPT))
                kept.append((now, request.latency_ms))

    def stats(self, now: float | None = None) -> dict[str, dict[str, float]]:
        """Per route, over the last minute: requests per second, p50 and p99 in ms."""
        now = time.monotonic() if now is None else now
        out = {}
        for route, kept in list(self.recent.items()):
            while kept and kept[0][0] < now - WINDOW_S:
                kept.popleft()
            if not kept:
                del self.recent[route]
                continue
            latencies = sorted(latency for _, latency in kept)
            out[route] = {
                "rate": len(latencies) / WINDOW_S,
                "p50": _percentile(latencies, 0.50),
                "p99": _percentile(latencies, 0.99),
            }
        return out


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, feed: Callable[[bytes], None]) -> None:
        self.feed = feed

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            self.feed(data)
        except Exception:  # one bad line must not stop the reader
            logger.debug("a request log line failed", exc_info=True)


async def listen(path: str, log: RequestLog) -> asyncio.BaseTransport:
    """Read HAProxy's request lines on the Unix datagram socket ``path`` (made afresh)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(path)
    os.chmod(path, 0o600)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Datagrams(log.feed), sock=sock
    )
    return transport


def socket_path(directory: str) -> str:
    """The socket's path: in the gateway's folder, or a short one of its own where that
    path is too long for a Unix socket (108 bytes)."""
    path = os.path.join(directory, "requests.sock")
    if len(path.encode()) < 100:
        return path
    return os.path.join(tempfile.mkdtemp(prefix="rayweb-"), "requests.sock")


def serve_metrics() -> Record | None:
    """Record into Serve's own HTTP request metrics (None where this Ray has no such class:
    the gateway then keeps its own window only)."""
    try:
        from ray.serve._private.common import RequestProtocol
        from ray.serve._private.request_ingress_metrics import RequestIngressMetrics
    except ImportError:
        return None
    import ray

    node = ray.get_runtime_context().get_node_id()
    metrics = RequestIngressMetrics(
        RequestProtocol.HTTP,
        source="proxy",
        node_id=node,
        node_ip_address=ray.util.get_node_ip_address(),
    )

    def record(request: Request, owner: Owner) -> None:
        application, deployment = owner
        metrics.record_request(
            route=f"/{request.route}" if request.route else "",
            method=request.method,
            application=application,
            status_code=request.status,
            latency_ms=request.latency_ms,
            is_error=int(request.status) >= 400,
            deployment_name=deployment,
        )

    return record
