"""The gateway's warm pool (``services/warmpool.py``): idle Ray workers with Serve's and
rayweb's replica code already imported, taken by the next replica, replaced when taken or
killed."""

# No `from __future__ import annotations`: endpoints below are shipped by value.

import os
import signal
import time

import httpx
import psutil
import pytest
import ray

import rayweb
from rayweb.services.actors import cluster_actor
from rayweb.services.gateway import find_gateway
from rayweb.services.ratelimit import LIMITER_NAME, RateLimiterActor
from rayweb.services.warmpool import DEFAULT_WARM_WORKERS, pooled_workers
from tests.integration.test_cold_path import _wait_for_zero

pytestmark = pytest.mark.cluster

warm = rayweb.App("warmpool")


@warm.function(serialized=True, min_containers=0, scaledown_window=2)
@rayweb.fastapi_endpoint()
def where() -> dict:
    import sys

    return {"pid": os.getpid(), "preloaded": "ray.serve._private.replica" in sys.modules}


def _raylet() -> int:
    """The head node's raylet: the gateway actor's parent."""
    return psutil.Process(ray.get(find_gateway().pid.remote())).ppid()


def _title(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _full_pool(raylet: int, timeout: float = 60) -> list[int]:
    """The pooled workers, once there are as many as the pool keeps and all are idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        idle = [pid for pid in pooled_workers(raylet) if _title(pid).startswith("ray::IDLE")]
        if len(idle) >= DEFAULT_WARM_WORKERS:
            return idle
        time.sleep(0.2)
    raise AssertionError(f"the warm pool never filled up: {pooled_workers(raylet)}")


def test_a_woken_replica_starts_in_a_warm_preloaded_worker(served):
    handle = served(warm)
    _wait_for_zero("warmpool-where")
    # The cluster's rate limiter starts at the first request to a sleeping endpoint (the
    # holder's admission): in a fresh cluster it would take a pooled worker too.
    limiter = cluster_actor(RateLimiterActor, LIMITER_NAME, max_concurrency=1000)
    ray.get(limiter.acquire.remote("warmpool|test", 1, 1.0, 1.0))
    pool = _full_pool(_raylet())
    r = httpx.get(handle.urls["where"], timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["pid"] in pool, (r.json(), pool)
    assert r.json()["preloaded"]
    # the worker it took is replaced
    refilled = _full_pool(_raylet())
    assert r.json()["pid"] not in refilled


def test_a_killed_warm_worker_is_replaced(ray_cluster):
    raylet = _raylet()
    pool = _full_pool(raylet)  # (more than the floor when an app stopped here before)
    victim = pool[0]
    os.kill(victim, signal.SIGKILL)  # a worker the pool asked Ray to start
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        idle = [pid for pid in pooled_workers(raylet) if _title(pid).startswith("ray::IDLE")]
        if victim not in idle and len(idle) >= len(pool):
            break
        time.sleep(0.2)
    assert victim not in idle
    assert len(idle) >= len(pool), (pool, idle)  # as many as before the kill
