"""rayweb's Serve autoscaling policy: request-based sizing over both data paths, plus
Modal's ``buffer_containers``.

Serve's default policy sizes a deployment to ``ongoing requests / target``, counting only
requests that went through Serve. Requests on rayweb's direct path (gateway -> replica port)
are reported by each replica as the custom metric ``rayweb_direct_ongoing`` and added here
(at least 1 while requests arrive, however short: ``RaywebReplica.record_autoscaling_stats``;
a replica that has reported nothing yet is kept).
The policy runs inside Serve's controller (on the head node).
Modal keeps ``buffer_containers`` extra idle containers while the function is active, so
bursts do not wait for cold starts. Serve applies min/max bounds and up/down delays around
this policy.
"""

from __future__ import annotations

import math
from typing import Any

from ..common import DIRECT_ONGOING


class BufferedPolicy:
    """Request-based sizing plus ``buffer`` idle replicas while there is any traffic."""

    def __init__(self, buffer: int = 0) -> None:
        self.buffer = buffer

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        requests = float(ctx.total_num_requests) + direct_requests(ctx)
        target = float(ctx.config.get_target_ongoing_requests())
        if requests <= 0:
            wanted = int(ctx.capacity_adjusted_min_replicas)
        else:
            wanted = math.ceil(requests / target) + self.buffer
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
