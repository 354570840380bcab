"""How many idle workers the warm pool asks for, and when (``services/warmpool.py``): pure
decisions, no Ray (the pool itself is tested on a real raylet in
``tests/integration/test_warm_pool.py``)."""

from __future__ import annotations

import pytest

from rayweb.services.warmpool import (
    BURST_GAP_S,
    BURST_MEMORY_S,
    QUIET_S,
    WarmPool,
    max_warm_workers,
    warm_workers,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(size: int = 2, ceiling: int = 8) -> tuple[WarmPool, Clock]:
    clock = Clock()
    return WarmPool(size, raylet_pid=0, ceiling=ceiling, clock=clock), clock


def test_an_empty_pool_fills_up_to_its_size_at_once():
    pool, _ = _pool()
    assert pool.missing(0) == 2
    assert pool.missing(2) == 0


def test_no_refill_while_replicas_start_then_room_for_the_whole_burst():
    pool, clock = _pool()
    assert pool.missing(2) == 0
    # a deploy of five endpoints: both pooled workers are taken, five replicas register
    for _ in range(5):
        clock.now += 0.5
        pool.replica_started()
    assert pool.missing(0) == 0  # the deploy still needs the CPU
    clock.now += QUIET_S - 0.1
    assert pool.missing(0) == 0
    clock.now += 0.2
    assert pool.missing(0) == 5  # the next start of that app finds a worker per replica


def test_a_taken_worker_defers_the_refill():
    pool, clock = _pool()
    assert pool.missing(2) == 0
    assert pool.missing(1) == 0  # taken (or killed) just now
    clock.now += QUIET_S + 0.1
    assert pool.missing(1) == 1


def test_starts_further_apart_than_a_burst_do_not_add_up():
    pool, clock = _pool()
    for _ in range(4):
        pool.replica_started()
        clock.now += BURST_GAP_S + 0.1
    assert pool.wanted() == 2  # four bursts of one


def test_the_pool_is_capped_and_shrinks_back_after_an_hour():
    pool, clock = _pool(ceiling=3)
    for _ in range(10):
        pool.replica_started()
    assert pool.wanted() == 3
    clock.now += BURST_MEMORY_S + 1
    assert pool.wanted() == 2


def test_a_pool_that_is_off_asks_for_nothing():
    pool, clock = _pool(size=0)
    pool.replica_started()
    clock.now += QUIET_S + 1
    assert pool.off
    assert pool.missing(0) == 0


@pytest.mark.parametrize(
    ("raw", "floor", "ceiling"), [("", 2, 8), ("0", 0, 8), ("5", 5, 8), ("x", 0, 0)]
)
def test_sizes_from_the_environment(monkeypatch, raw, floor, ceiling):
    monkeypatch.setenv("RAYWEB_WARM_WORKERS", raw)
    monkeypatch.setenv("RAYWEB_WARM_WORKERS_MAX", raw if raw == "x" else "")
    assert warm_workers() == floor
    assert max_warm_workers() == ceiling
