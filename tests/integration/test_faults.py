"""Faults under steady load: each of the processes a request depends on is killed by PID
(SIGKILL) while a client keeps sending requests; the test counts failed requests and the
time until the endpoint answers again. Every row must recover by itself; the gateway's own
processes (HAProxy worker and master, the gateway actor) must lose no request for a
keep-alive client that retries idempotent requests.

``python bench/faults.py`` runs this module and writes the table to bench/RESULTS.md
(``RAYWEB_FAULTS_REPORT`` names the JSON-lines file the rows go to).
"""

# No `from __future__ import annotations`: the endpoint below is shipped by value.

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psutil
import pytest
import ray

import rayweb
from rayweb.services.gateway import find_gateway
from tests.integration.test_cold_path import _gateway_side_pids
from tests.integration.test_data_path import BOUND_MIB, PeakRSS

pytestmark = pytest.mark.cluster

RETRY_FOR_S = 5.0  # how long the client retries one idempotent request
RETRY_STATUS = {502, 503, 504}

fault_app = rayweb.App("faults")


@fault_app.function(serialized=True, min_containers=1, max_containers=1)
@rayweb.concurrent(max_inputs=8)
@rayweb.fastapi_endpoint()
def pid() -> int:
    import os

    return os.getpid()


@dataclass
class Load:
    """One client thread: a GET every ~20 ms over one keep-alive connection, each retried
    (transport errors, 502/503/504) for up to ``RETRY_FOR_S``."""

    url: str
    done: threading.Event = field(default_factory=threading.Event)
    ok: list[float] = field(default_factory=list)  # when each request succeeded
    failed_attempts: list[float] = field(default_factory=list)
    failed_requests: int = 0
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.done.is_set():
                started = time.monotonic()
                while True:
                    try:
                        response = client.get(self.url)
                        if response.status_code not in RETRY_STATUS:
                            response.raise_for_status()
                            self.pids.add(response.json())
                            self.ok.append(time.monotonic())
                            break
                    except httpx.HTTPError:
                        pass
                    self.failed_attempts.append(time.monotonic())
                    if time.monotonic() - started > RETRY_FOR_S or self.done.is_set():
                        self.failed_requests += 1
                        break
                    time.sleep(0.05)
                time.sleep(0.02)

    def outage_s(self, since: float) -> float:
        """From the first failed attempt after ``since`` to the next success (0: none)."""
        failures = [t for t in self.failed_attempts if t >= since]
        if not failures:
            return 0.0
        after = [t for t in self.ok if t > failures[-1]]
        return (after[0] if after else time.monotonic()) - failures[0]

    def wait_recovered(self, since: float, timeout: float = 60.0) -> float | None:
        """Seconds from ``since`` until requests succeed again for 2 s in a row."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            failures = [t for t in self.failed_attempts if t >= since]
            last_failure = failures[-1] if failures else since
            good = [t for t in self.ok if t > last_failure]
            if good and good[-1] - good[0] >= 2.0:
                return good[0] - since
            time.sleep(0.1)
        return None


def _process(fragment: str) -> int:
    for proc in psutil.process_iter(["cmdline"]):
        if fragment in " ".join(proc.info["cmdline"] or []):
            return int(proc.pid)
    raise AssertionError(f"no process with {fragment!r} in its command line")


def _victim(name: str, url: str) -> int:
    gateway = find_gateway()
    master = ray.get(gateway.haproxy_pid.remote())
    return {
        "haproxy worker": lambda: psutil.Process(master).children()[0].pid,
        "haproxy master": lambda: master,
        "gateway actor": lambda: ray.get(gateway.pid.remote()),
        "replica": lambda: httpx.get(url, timeout=10).json(),
        "serve proxy": lambda: _process("ProxyActor"),
        "serve controller": lambda: _process("ServeController"),
    }[name]()


@pytest.fixture(scope="module")
def fault_handle(ray_cluster: None) -> Iterator[tuple[str, str]]:
    """(URL, Serve app name) of the endpoint, served once for every fault."""
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(fault_app, port=TEST_PORT, quiet=True)
    try:
        yield handle.urls["pid"], handle.endpoints[0].name
    finally:
        handle.stop()


GATEWAY_PARTS = ("haproxy worker", "haproxy master", "gateway actor")


@pytest.mark.parametrize("victim", [*GATEWAY_PARTS, "replica", "serve proxy", "serve controller"])
def test_killed_process_recovers_under_load(fault_handle: tuple[str, str], victim: str) -> None:
    url, name = fault_handle
    before = ray.get(find_gateway().events.remote(0))[0]
    with Load(url) as load:
        assert load.wait_recovered(time.monotonic() - 0.1, timeout=30) is not None, "no steady load"
        target = _victim(victim, url)
        # what else serves the request (its growth while the victim is gone and comes back)
        survivors = [p for g in _gateway_side_pids().values() for p in g]
        survivors += [_process("ServeController"), httpx.get(url, timeout=10).json()]
        with PeakRSS([p for p in survivors if p != target]) as peak:
            killed_at = time.monotonic()
            os.kill(target, signal.SIGKILL)
            recovery = load.wait_recovered(killed_at)
            time.sleep(1.0)
    row = {
        "victim": victim,
        "requests": len(load.ok) + load.failed_requests,
        "failed_requests": load.failed_requests,
        "failed_attempts": len([t for t in load.failed_attempts if t >= killed_at]),
        "outage_s": round(load.outage_s(killed_at), 3),
        "recovery_s": None if recovery is None else round(recovery, 3),
        "worst_growth_mib": round(max(peak.growth_mib().values(), default=0.0), 1),
    }
    report = os.environ.get("RAYWEB_FAULTS_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(json.dumps(row) + "\n")
    print(row)
    assert recovery is not None, f"{victim}: no recovery within 60 s: {row}"
    assert row["worst_growth_mib"] <= BOUND_MIB, row
    if victim in GATEWAY_PARTS:
        assert load.failed_requests == 0, row
        # the gateway kept its table (the endpoint still goes straight to its replica) and
        # logged the restart for `rayweb serve` to print
        gateway = find_gateway()
        assert name in ray.get(gateway.table.remote(), timeout=60)
        _, lines = ray.get(gateway.events.remote(before), timeout=30)
        assert len(lines) == 1, lines
        expected = "actor restarted" if victim == "gateway actor" else "HAProxy"
        assert expected in lines[0], lines
    if victim == "replica":
        assert target in load.pids and len(load.pids) == 2, "no new replica answered"
