"""How many idle workers the warm pool asks for, and when (``services/warmpool.py``): pure
decisions, no Ray (the pool itself is tested on a real raylet in
``tests/integration/test_warm_pool.py``)."""

from __future__ import annotations

import pytest

from rayweb.services.warmpool import (
    BURST_GAP_S,
    BURST_MEMORY_S,
    BUSY_MAX,
    QUIET_S,
    CpuMeter,
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


def test_the_floor_refills_at_once_and_the_pool_grows_for_an_app_that_stopped():
    pool, clock = _pool()
    assert pool.missing(2) == 0
    # a deploy of five endpoints: both pooled workers are taken, five replicas register
    for _ in range(5):
        clock.now += 0.5
        pool.replica_started()
    assert pool.missing(0) == 2  # the floor at once: the next replica to wake needs one
    assert pool.missing(2) == 0  # and no more while the app runs
    for _ in range(5):  # the app stops (a restart of `rayweb serve` is likely next)
        clock.now += 0.3
        pool.replica_stopped()
    # one more per round, for as long as the CPUs are not busy
    assert pool.missing(2) == 1
    assert pool.missing(3, busy=BUSY_MAX + 0.1) == 0
    assert pool.missing(3, busy=BUSY_MAX - 0.1) == 1
    assert pool.missing(4) == 1
    assert pool.missing(5) == 0  # the next start of that app finds a worker per replica


def test_a_busy_node_gets_its_floor_but_no_more():
    pool, _ = _pool()
    for _ in range(5):
        pool.replica_stopped()
    assert pool.missing(0, busy=0.9) == 2  # the next replica to wake needs one
    assert pool.missing(2, busy=0.9) == 0
    assert pool.missing(2, busy=0.1) == 1


def test_growth_waits_while_replicas_start():
    pool, clock = _pool()
    for _ in range(4):
        pool.replica_stopped()
    pool.replica_started()
    assert pool.missing(2) == 0  # a replica is starting
    clock.now += QUIET_S + 0.1
    assert pool.missing(2) == 1
    assert pool.missing(2) == 0  # fewer than the 3 there should be: one was just taken
    clock.now += QUIET_S + 0.1
    assert pool.missing(2) == 1


def test_stops_further_apart_than_a_burst_do_not_add_up():
    pool, clock = _pool()
    for _ in range(4):  # an endpoint scaling to zero now and then
        pool.replica_stopped()
        clock.now += BURST_GAP_S + 0.1
    assert pool.wanted() == 2  # four bursts of one


def test_the_pool_is_capped_and_shrinks_back_after_an_hour():
    pool, clock = _pool(ceiling=3)
    for _ in range(10):
        pool.replica_stopped()
    assert pool.wanted() == 3
    clock.now += BURST_MEMORY_S + 1
    assert pool.wanted() == 2


def test_a_pool_that_is_off_asks_for_nothing():
    pool, clock = _pool(size=0)
    pool.replica_stopped()
    clock.now += QUIET_S + 1
    assert pool.off
    assert pool.missing(0) == 0


def test_the_cpu_meter_reads_how_busy_the_cpus_were(tmp_path):
    stat = tmp_path / "stat"
    meter = CpuMeter(str(stat))
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n")
    assert meter.busy() is None  # nothing to compare with yet
    stat.write_text("cpu  250 0 150 1000 0 0 0 0 0 0\n")  # 200 busy of 400
    assert meter.busy() == pytest.approx(0.5)
    assert CpuMeter(str(tmp_path / "missing")).busy() is None


@pytest.mark.parametrize(
    ("raw", "floor", "ceiling"), [("", 2, 8), ("0", 0, 8), ("5", 5, 8), ("x", 0, 0)]
)
def test_sizes_from_the_environment(monkeypatch, raw, floor, ceiling):
    monkeypatch.setenv("RAYWEB_WARM_WORKERS", raw)
    monkeypatch.setenv("RAYWEB_WARM_WORKERS_MAX", raw if raw == "x" else "")
    assert warm_workers() == floor
    assert max_warm_workers() == ceiling
