"""The cluster's shared rate limit: token buckets per (endpoint, client) in one async actor.

Every replica of an endpoint draws from the same bucket through :func:`shared_limiter`, in
small leases (``replica/limits.py``), so most requests need no actor call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .actors import cluster_actor

LIMITER_NAME = "rayweb-rate-limiter"

Acquire = Callable[[str, int], Awaitable[tuple[int, float]]]


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, wanted: int, now: float) -> tuple[int, float]:
        """Take up to ``wanted`` whole tokens; return (taken, seconds until one is available)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        taken = min(wanted, int(self.tokens))
        self.tokens -= taken
        wait = 0.0 if taken else (1 - self.tokens) / self.rate
        return taken, wait


class RateLimiterActor:
    """Token buckets per (endpoint, client), shared by all replicas (one async actor)."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        self.calls = 0

    async def acquire(
        self, key: str, wanted: int, rate: float, burst_s: float
    ) -> tuple[int, float]:
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != rate:
            capacity = max(1.0, rate * burst_s)
            bucket = self.buckets[key] = TokenBucket(rate, capacity, capacity, now)
        self.calls += 1
        if self.calls % 10_000 == 0:  # forget idle clients
            idle = [k for k, b in self.buckets.items() if now - b.updated > 3600]
            for k in idle:
                del self.buckets[k]
        return bucket.take(wanted, now)


def shared_limiter(endpoint: str, rate: float, burst_s: float) -> Acquire:
    """The cluster's rate limiter actor (created on first use), as an ``acquire`` function."""
    # On the head, as every cluster service: a detached actor on a worker node keeps that node
    # from ever being idle, so the autoscaler could never remove it (a GPU node, say).
    actor = cluster_actor(RateLimiterActor, LIMITER_NAME, max_concurrency=1000)

    async def acquire(client: str, wanted: int) -> tuple[int, float]:
        taken, wait = await actor.acquire.remote(f"{endpoint}|{client}", wanted, rate, burst_s)
        return int(taken), float(wait)

    return acquire


def local_limiter(rate: float, burst_s: float) -> Acquire:
    """A per-process limiter with the same interface (unit tests, single-replica use)."""
    limiter = RateLimiterActor()

    async def acquire(client: str, wanted: int) -> tuple[int, float]:
        return await limiter.acquire(client, wanted, rate, burst_s)

    return acquire
