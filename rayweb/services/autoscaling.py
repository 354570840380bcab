"""rayweb's Serve autoscaling policy: request-based sizing over both data paths, plus
Modal's ``buffer_containers``.

Serve's default policy sizes a deployment to ``ongoing requests / target``, counting only
requests that went through Serve. Requests on rayweb's direct path (gateway -> replica port)
are reported by each replica as the custom metric ``rayweb_direct_ongoing`` and added here
(at least 1 while requests arrive, however short: ``RaywebReplica.record_autoscaling_stats``;
a replica that has reported nothing yet is kept), and requests waiting in the gateway's
HAProxy queue (beyond the connections each replica takes), which the gateway publishes in
its folder on the head node every second (``write_queued``, read by ``QueuedFigures``).
The policy runs inside Serve's controller (on the head node).
Modal keeps ``buffer_containers`` extra idle containers while the function is active, so
bursts do not wait for cold starts. Serve applies min/max bounds and up/down delays around
this policy.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..common import DIRECT_ONGOING

QUEUED_FILE = "queued.json"  # in the gateway's folder: {"time": t, "queued": {app: n}}
QUEUED_STALE_S = 5.0  # older figures (a gateway that stopped publishing) count as none


class BufferedPolicy:
    """Request-based sizing plus ``buffer`` idle replicas while there is any traffic."""

    def __init__(self, buffer: int = 0, queued_path: str | None = None) -> None:
        self.buffer = buffer
        self.queued = QueuedFigures(Path(queued_path) if queued_path else None)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        requests = float(ctx.total_num_requests) + direct_requests(ctx)
        requests += self.queued.get(getattr(ctx, "app_name", None))
        target = float(ctx.config.get_target_ongoing_requests())
        if requests <= 0:
            wanted = int(ctx.capacity_adjusted_min_replicas)
        else:
            wanted = math.ceil(requests / target) + self.buffer
        # A container holding a sticky session is not scaled away (Modal's rule); Serve
        # picks which replicas stop, so this keeps their number, not each one.
        wanted = max(wanted, self.queued.pinned(getattr(ctx, "app_name", None)))
        if unreported(ctx):
            # A replica that has not sent its first sample yet (Serve takes seconds) is not
            # idle, only unknown: never scale it away, or a fresh endpoint with traffic
            # scales to zero before its numbers arrive.
            wanted = max(wanted, int(ctx.current_num_replicas))
        return wanted, {}


def unreported(ctx: Any) -> bool:
    """Whether some running replica has no direct-path sample in the look-back window."""
    reported = (ctx.aggregated_metrics or {}).get(DIRECT_ONGOING, {})
    return any(replica not in reported for replica in ctx.running_replicas or [])


def direct_requests(ctx: Any) -> float:
    """Requests in flight on the direct path, summed over the running replicas."""
    metrics = ctx.aggregated_metrics or {}
    return float(sum(metrics.get(DIRECT_ONGOING, {}).values()))


def write_queued(
    directory: Path, queued: dict[str, float], pinned: dict[str, int] | None = None
) -> None:
    """Publish requests waiting in HAProxy's queue per app, and how many of each app's
    replicas hold sticky sessions (the gateway, every second)."""
    tmp = directory / (QUEUED_FILE + ".tmp")
    tmp.write_text(json.dumps({"time": time.time(), "queued": queued, "pinned": pinned or {}}))
    tmp.replace(directory / QUEUED_FILE)


class QueuedFigures:
    """The gateway's published queue figures (``write_queued``), read again only when the
    file changes. One per policy instance; the file is in the gateway's folder of this Ray
    session unless a path is given."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._seen: tuple[int, int, int] | None = None  # inode, mtime, size of what was read
        self._data: dict[str, Any] = {}

    def path(self) -> Path | None:
        if self._path is None:
            with contextlib.suppress(Exception):
                import ray

                session = ray._private.worker.global_worker.node.get_session_dir_path()
                self._path = Path(session) / "rayweb-gateway" / QUEUED_FILE
        return self._path

    def pinned(self, app: str | None, now: float | None = None) -> int:
        """Replicas of ``app`` that hold sticky sessions (``@rayweb.sessioned()``)."""
        return int(self._figure("pinned", app, now))

    def get(self, app: str | None, now: float | None = None) -> float:
        """Requests for ``app`` waiting in the gateway's HAProxy queue (0 if none are known)."""
        return self._figure("queued", app, now)

    def _figure(self, kind: str, app: str | None, now: float | None) -> float:
        path = self.path()
        if app is None or path is None:
            return 0.0
        try:
            stat = os.stat(path)
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # mtimes are coarse (a tick)
            if seen != self._seen:
                self._data, self._seen = json.loads(path.read_text()), seen
        except (OSError, ValueError):
            return 0.0
        now = time.time() if now is None else now
        if now - float(self._data.get("time", 0)) > QUEUED_STALE_S:
            return 0.0
        return float(self._data.get(kind, {}).get(app, 0))
