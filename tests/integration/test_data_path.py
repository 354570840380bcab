"""rayweb's data path through the gateway: direct routing, bounded memory with slow peers,
the gateway key, draining at shutdown and autoscaling on direct-path requests."""

# No `from __future__ import annotations`: endpoints below are shipped by value, and FastAPI
# must see their real `Request` annotations.

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time

import httpx
import psutil
import pytest
import ray
from ray import serve

import rayweb
from rayweb.common import CLIENT_HEADER, KEY_HEADER
from rayweb.services.gateway import find_gateway

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024
GIB = 1024 * MIB
BOUND_MIB = 256


def gateway_table() -> dict:
    return ray.get(find_gateway().table.remote())


def wait_registered(app_name: str, replicas: int = 1, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        route = gateway_table().get(app_name)
        if route and len(route["servers"]) >= replicas:
            return route
        time.sleep(0.2)
    raise AssertionError(f"{app_name} not registered with the gateway: {gateway_table()}")


class PeakRSS:
    """Peak resident memory of some processes, sampled every 50 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):  # an old HAProxy worker that left
                self.procs.append(psutil.Process(pid))
        self.base = {p.pid: p.memory_info().rss for p in self.procs}
        self.peak = dict(self.base)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.05):
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def growth_mib(self) -> dict[int, float]:
        return {pid: (self.peak[pid] - self.base[pid]) / MIB for pid in self.peak}


def serving_pids(replica_pid: int) -> dict[str, list[int]]:
    """Every process a request passes on either path: HAProxy (master and workers), the
    replica, and Serve's proxy."""
    master = psutil.Process(ray.get(find_gateway().haproxy_pid.remote()))
    proxies = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "ProxyActor" in " ".join(p.info["cmdline"] or [])
    ]
    return {
        "haproxy": [master.pid] + [c.pid for c in master.children()],
        "replica": [replica_pid],
        "Serve proxy": proxies,
    }


slow_app = rayweb.App("data-path", limits=rayweb.Limits(rate_limit=None, request_timeout=600))


@slow_app.function(serialized=True, min_containers=1, max_containers=1)
@rayweb.asgi_app()
def slow():
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    api = FastAPI()

    @api.get("/pid")
    async def pid(request: Request):
        return {"pid": os.getpid(), "server_port": request.scope["server"][1]}

    @api.post("/upload")
    async def upload(request: Request):
        total = 0
        async for chunk in request.stream():  # reads at ~64 MiB/s: far slower than loopback
            total += len(chunk)
            await asyncio.sleep(len(chunk) / (64 * MIB))
        return {"bytes": total}

    @api.get("/download")
    async def download(n: int):
        async def body():
            block = b"d" * MIB
            for _ in range(n // MIB):
                yield block

        return StreamingResponse(body())

    return api


def test_slow_peers_keep_every_process_within_256_mib(served):
    handle = served(slow_app)
    url = handle.urls["slow"]
    route = wait_registered("data-path-slow")
    info = httpx.get(url + "/pid").json()
    # The request went straight to the replica's own port, not through Serve's proxy.
    (server,) = route["servers"].values()
    assert info["server_port"] == server["port"]
    pids = serving_pids(info["pid"])
    everyone = [pid for group in pids.values() for pid in group]

    def chunks():
        block = b"u" * MIB
        for _ in range(GIB // MIB):
            yield block

    # Over a percent-encoded prefix (`-` as %2D): the gateway matches the decoded path, as
    # Serve does, so this too goes to the replica's own port rather than Serve's proxy.
    encoded = url.replace("/data-path-slow", "/data%2Dpath%2Dslow")
    with PeakRSS(everyone) as peak:
        r = httpx.post(encoded + "/upload", content=chunks(), timeout=600)
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": GIB}
    upload = peak.growth_mib()

    with PeakRSS(everyone) as peak:
        got = 0
        with httpx.stream("GET", url + "/download", params={"n": GIB}, timeout=600) as resp:
            for chunk in resp.iter_raw(MIB):
                got += len(chunk)
                time.sleep(1 / 64)  # ~64 MiB/s
    assert got == GIB
    download = peak.growth_mib()

    for case, growth in (("upload", upload), ("download", download)):
        for role, group in pids.items():
            worst = max(growth[pid] for pid in group)
            assert worst <= BOUND_MIB, f"{case}: {role} grew {worst:.0f} MiB (bound {BOUND_MIB})"


cold_app = rayweb.App("cold", limits=rayweb.Limits(max_request_body=MIB))


@cold_app.function(serialized=True, min_containers=0, scaledown_window=2)
@rayweb.fastapi_endpoint(method="POST")
def sink(body: dict) -> dict:
    return body


def _raw_post(url: str, length: int) -> str:
    """A POST declaring ``length`` bytes that sends 1 MiB of it; the reply's first bytes."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            f"POST {parts.path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n".encode()
        )
        with contextlib.suppress(OSError):
            sock.sendall(b"x" * MIB)
        return sock.recv(65536).decode(errors="replace")


def test_declared_oversized_body_is_refused_by_the_gateway_without_waking_a_replica(served):
    handle = served(cold_app)
    url = handle.urls["sink"]
    assert gateway_table()["cold-sink"]["max_body"] == MIB  # declared by the deploy
    deadline = time.monotonic() + 90  # min_containers=0: its first replica goes away
    while _running_replicas("cold-sink") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running_replicas("cold-sink") == 0
    for path in (url, url.replace("/cold-sink", "/cold%2Dsink")):
        reply = _raw_post(path, 5_000_000_000)
        assert reply.startswith("HTTP/1.1 413"), reply
        assert f"larger than the limit of {MIB} bytes" in reply
    time.sleep(2)
    assert _running_replicas("cold-sink") == 0, "a refused request woke the endpoint"
    # a request within the limit still wakes it and is served
    assert httpx.post(url, json={"k": 1}, timeout=120).json() == {"k": 1}


def test_replica_port_refuses_requests_without_the_gateway_key(served):
    handle = served(slow_app)
    route = wait_registered("data-path-slow")
    (server,) = route["servers"].values()
    assert server["host"] == "127.0.0.1"  # the test cluster is loopback-only
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    direct = f"http://{server['host']}:{server['port']}/data-path-slow/pid"
    assert httpx.get(direct).status_code == 403
    spoof = {KEY_HEADER: "guess", CLIENT_HEADER: "203.0.113.9"}
    assert httpx.get(direct, headers=spoof).status_code == 403
    assert httpx.get(handle.urls["slow"] + "/pid").status_code == 200


concurrency_app = rayweb.App("scaling", limits=rayweb.Limits(rate_limit=None))


@concurrency_app.function(serialized=True, min_containers=1, max_containers=3, scaledown_window=2)
@rayweb.fastapi_endpoint()
async def busy(seconds: float = 1.0) -> dict:
    await asyncio.sleep(seconds)
    return {"pid": os.getpid()}


def _running_replicas(app_name: str) -> int:
    status = serve.status().applications.get(app_name)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


def test_direct_path_requests_drive_serve_autoscaling(served):
    """Serve never sees these requests; replicas report them as a custom metric."""
    handle = served(concurrency_app)
    wait_registered("scaling-busy")
    url = handle.urls["busy"]
    deadline = time.monotonic() + 60
    pids = set()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        while time.monotonic() < deadline and _running_replicas("scaling-busy") < 2:
            # three at a time against one replica that takes one (max_inputs=1)
            futures = [pool.submit(httpx.get, url, params={"seconds": 3}, timeout=120)]
            futures += [pool.submit(httpx.get, url, params={"seconds": 3}, timeout=120)]
            futures += [pool.submit(httpx.get, url, params={"seconds": 3}, timeout=120)]
            for f in futures:
                r = f.result()
                assert r.status_code == 200
                pids.add(r.json()["pid"])
    assert _running_replicas("scaling-busy") >= 2, serve.status().applications["scaling-busy"]
    route = wait_registered("scaling-busy", replicas=2)
    assert len(route["servers"]) >= 2


def test_stopping_a_replica_drains_direct_requests(served):
    """Deleting the endpoint stops its replica while a direct request runs: the replica
    leaves the gateway first, then waits for the request before it exits."""
    handle = served(concurrency_app)
    wait_registered("scaling-busy")
    url = handle.urls["busy"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow_call = pool.submit(httpx.get, url, params={"seconds": 4}, timeout=120)
        time.sleep(1)
        serve.delete("scaling-busy")  # returns once the replica is gone
        assert slow_call.done()
        r = slow_call.result()
    assert r.status_code == 200
    assert not gateway_table().get("scaling-busy", {}).get("servers")  # deregistered


sparse_app = rayweb.App("sparse", limits=rayweb.Limits(rate_limit=None))


@sparse_app.function(serialized=True, min_containers=0, scaledown_window=10)
@rayweb.fastapi_endpoint()
def tick() -> dict:
    return {"pid": os.getpid()}


def test_sparse_traffic_inside_the_scaledown_window_never_scales_to_zero(served):
    """A request every 2 s, each a few ms: Serve samples replicas every second here (a 10 s
    window: a 5 s look-back), so without the replica reporting its recent arrivals this
    traffic looked like none and the endpoint scaled to zero (then each request after it
    waited for a cold start)."""
    handle = served(sparse_app)
    wait_registered("sparse-tick")
    settle = time.monotonic() + 30  # serve() returns at the first replica registered; Serve
    while _running_replicas("sparse-tick") < 1 and time.monotonic() < settle:  # counts it
        time.sleep(0.1)  # as RUNNING a control-loop round later
    url = handle.urls["tick"]
    pids, slowest, lowest = set(), 0.0, 99
    deadline = time.monotonic() + 30  # 3 windows of 10 s, 6 of Serve's look-back
    while time.monotonic() < deadline:
        started = time.monotonic()
        r = httpx.get(url, timeout=120)
        slowest = max(slowest, time.monotonic() - started)
        assert r.status_code == 200, r.text
        pids.add(r.json()["pid"])
        lowest = min(lowest, _running_replicas("sparse-tick"))
        time.sleep(2.0)
    assert lowest >= 1, "the endpoint scaled to zero under traffic"
    assert len(pids) == 1, "a new replica was started: the first one went away"
    assert slowest < 3.0, f"a request waited {slowest:.1f} s (a cold start)"
