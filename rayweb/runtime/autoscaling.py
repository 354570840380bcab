"""Modal's ``buffer_containers`` as a Serve autoscaling policy.

Serve's default policy sizes a deployment to ``ongoing requests / target``. Modal keeps
``buffer_containers`` extra idle containers while the function is active, so bursts do not
wait for cold starts. Serve applies min/max bounds and up/down delays around this policy.
"""

from __future__ import annotations

import math
from typing import Any


class BufferedPolicy:
    """Request-based sizing plus ``buffer`` idle replicas while there is any traffic."""

    def __init__(self, buffer: int = 0) -> None:
        self.buffer = buffer

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        requests = float(ctx.total_num_requests)
        target = float(ctx.config.get_target_ongoing_requests())
        if requests <= 0:
            return ctx.capacity_adjusted_min_replicas, {}
        return math.ceil(requests / target) + self.buffer, {}
