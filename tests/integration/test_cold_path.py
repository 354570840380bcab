"""Requests to endpoints with no replica: the gateway's holder keeps them (Serve's proxy,
which reads whole bodies into memory, never sees them), wakes the endpoint and relays the
body with backpressure; refusals (401, 429) come from the gateway without waking it."""

# No `from __future__ import annotations`: endpoints below are shipped by value.

import os
import time

import httpx
import psutil
import pytest
import ray
from ray import serve

import rayweb
from rayweb.services.gateway import find_gateway
from rayweb.services.store import Store
from tests.integration.test_data_path import BOUND_MIB, GIB, MIB, PeakRSS

pytestmark = pytest.mark.cluster


cold = rayweb.App("coldpath", limits=rayweb.Limits(rate_limit=None, request_timeout=600))


@cold.function(serialized=True, min_containers=0, scaledown_window=2)
@rayweb.asgi_app()
def plain():
    import asyncio

    from fastapi import FastAPI, Request

    api = FastAPI()

    @api.post("/upload")
    async def upload(request: Request):  # reads at ~64 MiB/s, far slower than loopback
        me = psutil.Process()
        start = peak = me.memory_info().rss
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            await asyncio.sleep(len(chunk) / (64 * MIB))
            peak = max(peak, me.memory_info().rss) if total % (16 * MIB) < len(chunk) else peak
        return {"bytes": total, "pid": os.getpid(), "growth_mib": (peak - start) / MIB}

    return api


@cold.function(serialized=True, min_containers=0, scaledown_window=2)
@rayweb.asgi_app()
def encoded():
    import asyncio

    from fastapi import FastAPI, Request

    api = FastAPI()

    @api.post("/upload")
    async def upload(request: Request):
        me = psutil.Process()
        start = peak = me.memory_info().rss
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            await asyncio.sleep(len(chunk) / (64 * MIB))
            peak = max(peak, me.memory_info().rss) if total % (16 * MIB) < len(chunk) else peak
        return {"bytes": total, "pid": os.getpid(), "growth_mib": (peak - start) / MIB}

    return api


def _replicas(app_name: str) -> int:
    """The endpoint's replicas in any state (starting, running, stopping)."""
    status = serve.status().applications.get(app_name)
    if status is None:
        return 0
    return sum(sum(d.replica_states.values()) for d in status.deployments.values())


def _wait_for_zero(*apps: str, timeout: float = 120) -> None:
    """Until no replica exists in any state and none is still registered (a stopping replica
    serves what the gateway sends it until it deregisters; a starting one registers soon),
    twice in a row."""

    def warm() -> bool:
        gateway = find_gateway()
        table, settled = ray.get([gateway.table.remote(), gateway.settled.remote()])
        # until HAProxy serves the table, a dropped replica still gets requests directly
        return not settled or any(_replicas(a) or table[a]["servers"] for a in apps)

    deadline = time.monotonic() + timeout  # min_containers=0: the deploy's replica goes away
    cold_checks = 0
    while cold_checks < 2 and time.monotonic() < deadline:
        cold_checks = 0 if warm() else cold_checks + 1
        time.sleep(0.5)
    assert cold_checks >= 2, "the endpoints never scaled to zero"


def _gateway_side_pids() -> dict[str, list[int]]:
    """HAProxy (master and workers), the gateway actor (where the holder runs), Serve's proxy."""
    gateway = find_gateway()
    master = psutil.Process(ray.get(gateway.haproxy_pid.remote()))
    proxies = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "ProxyActor" in " ".join(p.info["cmdline"] or [])
    ]
    return {
        "haproxy": [master.pid] + [c.pid for c in master.children()],
        "gateway actor": [ray.get(gateway.pid.remote())],
        "Serve proxy": proxies,
    }


def test_a_1_gib_chunked_upload_to_a_scaled_to_zero_endpoint_stays_within_256_mib(served):
    handle = served(cold)
    names = ("coldpath-plain", "coldpath-encoded")
    _wait_for_zero(*names)
    pids = _gateway_side_pids()
    everyone = [pid for group in pids.values() for pid in group]

    def chunks():  # no Content-Length: chunked, as a proxy or a generator client sends it
        block = b"u" * MIB
        for _ in range(GIB // MIB):
            yield block

    urls = {
        "plain": handle.urls["plain"],
        # `-` as %2D: the holder matches the decoded path too
        "encoded": handle.urls["encoded"].replace("/coldpath-encoded", "/coldpath%2Dencoded"),
    }
    for case, url in urls.items():
        # each went through the holder (not Serve's proxy, which would read the whole body)
        gateway = find_gateway()
        stats, table = ray.get([gateway.holder_stats.remote(), gateway.table.remote()])
        before = {app: (_replicas(app), table[app]["servers"]) for app in names}
        with PeakRSS(everyone) as peak:
            r = httpx.post(url + "/upload", content=chunks(), timeout=600)
        assert r.status_code == 200, (case, r.text)
        after = ray.get(gateway.holder_stats.remote())["relayed"]
        assert after >= stats["relayed"] + 1, f"{case} was not relayed; before it: {before}"
        got = r.json()
        assert got["bytes"] == GIB, case
        assert got["growth_mib"] <= BOUND_MIB, f"{case}: the replica grew {got['growth_mib']:.0f}"
        growth = peak.growth_mib()
        for role, group in pids.items():
            worst = max(growth.get(pid, 0.0) for pid in group)
            assert worst <= BOUND_MIB, f"{case}: {role} grew {worst:.0f} MiB (bound {BOUND_MIB})"
        print(case, {role: max(growth.get(p, 0.0) for p in g) for role, g in pids.items()}, got)


guarded = rayweb.App("coldguard")


@guarded.function(serialized=True, min_containers=0, scaledown_window=2)
@rayweb.fastapi_endpoint(requires_proxy_auth=True)
def locked() -> dict:
    return {"locked": "open"}


# One request per 200 s: the token the warm-up request takes is not back when it is cold.
@guarded.function(
    serialized=True,
    min_containers=0,
    scaledown_window=2,
    limits=rayweb.Limits(rate_limit=0.005, rate_limit_burst_s=1),
)
@rayweb.fastapi_endpoint()
def throttled() -> dict:
    return {"throttled": "no"}


def test_refusals_for_a_scaled_to_zero_endpoint_do_not_wake_it(served):
    handle = served(guarded)
    assert httpx.get(handle.urls["throttled"], timeout=120).status_code == 200  # takes the token
    _wait_for_zero("coldguard-locked", "coldguard-throttled")
    missing = httpx.get(handle.urls["locked"])
    assert missing.status_code == 401, missing.text
    assert missing.json() == {"detail": "rayweb: missing credentials for proxy authorization"}
    wrong = httpx.get(
        handle.urls["locked"], headers={"Modal-Key": "wk-nope", "Modal-Secret": "ws-nope"}
    )
    assert wrong.status_code == 401 and "invalid credentials" in wrong.text
    limited = httpx.get(handle.urls["throttled"])
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1
    time.sleep(3)
    assert _replicas("coldguard-locked") == 0, "a 401 woke the endpoint"
    assert _replicas("coldguard-throttled") == 0, "a 429 woke the endpoint"
    key, secret = Store().create_token("cold-path")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    deadline = time.monotonic() + 10  # a new token reaches the gateway within ~0.2 s
    while (r := httpx.get(handle.urls["locked"], headers=headers, timeout=120)).status_code == 401:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert r.json() == {"locked": "open"}  # admitted at the gateway, woken, served
