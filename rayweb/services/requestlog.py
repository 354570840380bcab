"""What the gateway's HAProxy says about each request: Serve's request metrics for traffic
that never passes Serve's proxy, and a minute of each route's requests for ``rayweb app list``.

HAProxy sends one line per request, when it ends, to a UDP socket on loopback that the
gateway actor holds (``LOG_FORMAT``, raw): the route's name (set in its backend), the method,
the status, the total time in ms, the termination state and the backend. The gateway actor
reads them (``RequestLog.feed``) and records Serve's own metric families with Serve's tags
(``serve_num_http_requests``, ``serve_http_request_latency_ms``,
``serve_num_http_error_requests``, ...: Serve's ``RequestIngressMetrics``, the class its
own HAProxy mode and proxies use), so one scrape of Ray's metrics endpoint
sees every request whichever path it took. Requests HAProxy hands to Serve's proxy
(unknown paths, backend ``serve``) are left to Serve's proxy, which records them itself.
A datagram never slows HAProxy down: when the reader falls that far behind, lines are dropped.

No Ray but in ``ServeMetrics``: parsing, the windows and the reader are unit-tested.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("rayweb.gateway")

# The route's name, method, status, total active ms (%Ta), termination state, backend.
LOG_FORMAT = "%[var(txn.rw_route)] %HM %ST %Ta %ts %b"
ROUTE_VAR = "txn.rw_route"  # each route's backend sets it to the route's name
SERVE_BACKEND = "serve"  # Serve's proxy records what HAProxy hands it
WINDOW_S = 60.0  # what `rayweb app list` summarizes
MAX_KEPT = 20_000  # per route, within the window (a busier route's rate is a lower bound)
RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes of lines the kernel keeps while the reader sleeps
BATCH_S = 0.05  # the reader's sleep after each batch (its wake-ups: at most 20 a second)
MAX_BATCH = 4096  # datagrams taken at one wake-up


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


class Sink(Protocol):
    """Where requests go besides the window: Serve's metrics (``ServeMetrics``)."""

    def record(self, request: Request, owner: Owner) -> None: ...

    def flush(self) -> None: ...


class RequestLog:
    """Feeds each request to ``sink`` (Serve's metrics) and keeps the last minute of each
    route's latencies. ``owner(route)``: the route's Serve application and deployment.
    Fed by the reader's thread, read by the actor's: one lock."""

    def __init__(self, sink: Sink | None, owner: Callable[[str], Owner]) -> None:
        self.sink = sink
        self.owner = owner
        self.recent: dict[str, deque[tuple[float, float]]] = {}
        self.lines = 0  # lines read, requests or not (tests, inspection)
        self._lock = threading.Lock()

    def feed(self, data: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for line in data.splitlines():
                self.lines += 1
                request = parse(line)
                if request is None:
                    continue
                if self.sink is not None:
                    self.sink.record(request, self.owner(request.route))
                if request.route:
                    kept = self.recent.setdefault(request.route, deque(maxlen=MAX_KEPT))
                    kept.append((now, request.latency_ms))

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def stats(self, now: float | None = None) -> dict[str, dict[str, float]]:
        """Per route, over the last minute: requests per second, p50 and p99 in ms."""
        now = time.monotonic() if now is None else now
        out = {}
        with self._lock:
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


class Reader:
    """Reads HAProxy's lines on a UDP socket of its own on loopback, on a thread of its own,
    in batches: after a wake-up it takes every line waiting and then sleeps ``BATCH_S``, so
    the cost of a wake-up is shared by every request of that time. (UDP, not a Unix datagram
    socket: the kernel keeps a Unix socket's queue to ``net.unix.max_dgram_qlen`` datagrams,
    often 10, and HAProxy drops what does not fit; a UDP socket keeps ``RECEIVE_BUFFER``
    bytes.) Another local process could send lines too: it can only skew the counts."""

    def __init__(self, log: RequestLog) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.log = log
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="rayweb-requests", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.closed:
            try:
                batch = [self.sock.recv(65536)]
                with contextlib.suppress(BlockingIOError):
                    while len(batch) < MAX_BATCH:
                        batch.append(self.sock.recv(65536, socket.MSG_DONTWAIT))
            except OSError:
                return  # closed
            if self.closed:
                return
            try:
                for data in batch:
                    self.log.feed(data)
                self.log.flush()
            except Exception:  # one bad line must not stop the reader
                logger.debug("the request log failed on a batch", exc_info=True)
            time.sleep(BATCH_S)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"", self.sock.getsockname())  # wakes the thread's blocking recv
        self.thread.join(timeout=2)
        self.sock.close()


class ServeMetrics:
    """Serve's own HTTP request metrics (``RequestIngressMetrics``): the latency histogram
    per request, the counters summed per batch (one ``inc(n)`` per tag set)."""

    def __init__(self) -> None:
        import ray
        from ray.serve._private.common import RequestProtocol
        from ray.serve._private.request_ingress_metrics import RequestIngressMetrics

        self.metrics = RequestIngressMetrics(
            RequestProtocol.HTTP,
            source="proxy",
            node_id=ray.get_runtime_context().get_node_id(),
            node_ip_address=ray.util.get_node_ip_address(),
        )
        self.counts: dict[tuple[str, str, str, str, str], int] = {}

    def record(self, request: Request, owner: Owner) -> None:
        route = f"/{request.route}" if request.route else ""
        key = (route, request.method, owner[0], request.status, owner[1])
        self.counts[key] = self.counts.get(key, 0) + 1
        tags = self.metrics.request_tags(
            route=route, method=request.method, application=owner[0], status_code=request.status
        )
        self.metrics.processing_latency_tracker.observe(request.latency_ms, tags=tags)

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        m = self.metrics
        for (route, method, app, status, deployment), n in counts.items():
            m.request_counter.inc(
                n, m.request_tags(route=route, method=method, application=app, status_code=status)
            )
            if int(status) < 400:
                continue
            m.request_error_counter.inc(
                n,
                m.request_error_tags(
                    route=route, method=method, application=app, status_code=status
                ),
            )
            m.deployment_request_error_counter.inc(
                n,
                m.deployment_error_tags(
                    route=route,
                    method=method,
                    application=app,
                    status_code=status,
                    deployment=deployment,
                ),
            )


def serve_metrics() -> Sink | None:
    """Serve's request metrics, or None where this Ray has no such class (the gateway then
    keeps its own window only)."""
    try:
        return ServeMetrics()
    except ImportError:
        logger.warning("rayweb: this Ray has no Serve request metrics to record into")
        return None
