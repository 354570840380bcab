"""Two Ray nodes on this machine (`rayweb cluster up --workers 1`: two raylets on 127.0.0.1
under the cluster's temp dir): replicas on both, traffic through the gateway reaching both,
and the worker node's raylet killed by PID under steady load: only requests in flight on it
fail, and the endpoint keeps serving from the head (time to recovery printed)."""

from __future__ import annotations

import os
import signal
import textwrap
import time
import uuid
from collections import Counter

import httpx
import psutil

from tests.e2e.clusters import start_serve, stop_serve_and_cluster
from tests.e2e.steady import SteadyLoad
from tests.e2e.test_cli import _free_port
from tests.e2e.test_deploy import _run

APP = textwrap.dedent(
    """
    import os
    import rayweb

    app = rayweb.App("twonode", limits=rayweb.Limits(rate_limit=None))
    ON_WORKER = []


    def on_worker() -> bool:
        import ray

        if not ON_WORKER:  # which node this replica runs on, asked once
            node = ray.get_runtime_context().get_node_id()
            mine = next(n for n in ray.nodes() if n["NodeID"] == node)
            ON_WORKER.append("rayweb-node-1" in mine["Resources"])
        return ON_WORKER[0]


    @app.function(min_containers=2, max_containers=2, cpu=0.4)
    @rayweb.concurrent(max_inputs=8)
    @rayweb.fastapi_endpoint()
    def where() -> dict:
        return {"worker": on_worker(), "pid": os.getpid()}
    """
)
LOAD_THREADS = 4


def _worker_raylet(temp_dir: str) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        ours = args and args[0].endswith("/raylet") and any(temp_dir in a for a in args)
        if ours and any("rayweb-node-1" in a for a in args):
            return proc
    raise AssertionError("no raylet with the worker node's resource")


def test_two_nodes_serve_through_the_gateway_and_survive_losing_the_worker(tmp_path):
    env = {**os.environ, "RAYWEB_CLUSTERS_DIR": str(tmp_path / "clusters"), "PYTHONUNBUFFERED": "1"}
    name = f"m{uuid.uuid4().hex[:6]}"
    script = tmp_path / "twonode.py"
    script.write_text(APP)
    up = _run("cluster", "up", "--name", name, "--num-cpus", "1", "--workers", "1", env=env)
    assert up.returncode == 0, up.stderr
    port = _free_port()
    serve = start_serve(script, name, port, env, "--no-reload")
    try:
        url = f"http://127.0.0.1:{port}/twonode-where-dev"
        deadline = time.monotonic() + 180
        seen: Counter = Counter()
        while time.monotonic() < deadline and len(seen) < 2:
            try:
                seen[httpx.get(url, timeout=10).json()["worker"]] += 1
            except (httpx.HTTPError, ValueError):
                time.sleep(0.5)
        assert set(seen) == {True, False}, seen  # replicas on both nodes, both reached

        with SteadyLoad(url, clients=LOAD_THREADS, pause_s=0) as load:
            time.sleep(2)
            raylet = _worker_raylet(f"/tmp/rayweb-{name}-{os.getuid()}")
            killed_at = time.monotonic()
            os.kill(raylet.pid, signal.SIGKILL)
            time.sleep(15)
        failures = load.failures
        served = [(t, answer["worker"]) for t, answer in load.answers]
        after = [t for t, _ in served if t > killed_at]
        # only what was in flight on the worker failed; the head kept answering
        assert len(failures) <= LOAD_THREADS, failures
        assert after and all(not worker for t, worker in served if t > killed_at + 10)
        gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
        print(f"failed: {len(failures)}; longest gap after the kill: {max(gaps):.2f} s")
    finally:
        stop_serve_and_cluster(serve, name, env)
