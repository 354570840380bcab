"""Ray's autoscaler adds and removes (fake) GPU nodes for rayweb endpoints.

A `rayweb cluster up --autoscaling-config cluster/fake-gpu-autoscaling.yaml` head (Ray's
fake_multinode provider: each "node" is a raylet on this machine; no real GPUs) gets a
`gpu="L40S"` endpoint with `min_containers=0` and one with `min_containers=1`. The test shows
a GPU node added for each, the cold one's node removed after its scaledown window plus the
node idle timeout, a request to the scaled-to-zero endpoint bringing a node back and being
served, and the warm one's node staying. It prints the timings (see bench/RESULTS.md).
Everything is stopped with `rayweb cluster down` (by PID; never `ray stop`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.e2e.test_cli import _free_port
from tests.e2e.test_cluster import _tagged
from tests.e2e.test_deploy import _run

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import os

    import rayweb

    app = rayweb.App("fakegpu")


    @app.function(gpu="L40S", min_containers=0, scaledown_window=2)
    @rayweb.fastapi_endpoint()
    def cold() -> dict:
        return {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "node": os.environ.get("RAY_NODE_ID", "")}


    @app.function(gpu="L40S", min_containers=1, scaledown_window=2)
    @rayweb.fastapi_endpoint()
    def warm() -> dict:
        return {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
    """
)

WATCH = textwrap.dedent(
    """
    import json, sys, time
    from rayweb.driver import cluster
    cluster.ensure_ray(sys.argv[1])  # handles the cluster's token auth
    import ray
    from ray import serve
    replicas = {}
    while True:
        gpu_nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
        if int(time.time() * 2) % 4 == 0:  # every 2 s: what Serve runs, for a failure's message
            try:
                replicas = {
                    name: {d: dict(s.replica_states) for d, s in a.deployments.items()}
                    for name, a in serve.status().applications.items()
                }
            except Exception as exc:
                replicas = {"error": repr(exc)}
            try:  # and what holds each GPU node: its actors and resources in use
                from ray.util.state import list_actors

                avail = ray._private.state.state.available_resources_per_node()
                held = {}
                for n in gpu_nodes:
                    nid = n["NodeID"]
                    actors = list_actors(filters=[("node_id", "=", nid), ("state", "=", "ALIVE")])
                    used = {k: v - avail.get(nid, {}).get(k, 0) for k, v in n["Resources"].items()}
                    held[nid[-8:]] = {
                        "actors": [a.class_name for a in actors],
                        "used": {k: v for k, v in used.items() if v and not k.startswith("node:")},
                    }
                replicas = {"serve": replicas, "gpu_nodes": held}
            except Exception as exc:
                replicas = {"serve": replicas, "gpu_nodes": repr(exc)}
        sample = {"t": time.time(), "gpu_nodes": len(gpu_nodes), "replicas": replicas}
        print(json.dumps(sample, default=str), flush=True)
        time.sleep(0.5)
    """
)


class NodeWatch:
    """A driver subprocess that prints the number of alive GPU nodes twice a second."""

    def __init__(self, address: str, env: dict[str, str]) -> None:
        self.samples: list[tuple[float, int]] = []
        self.replicas: dict = {}  # Serve's replicas and what holds each GPU node, last sample
        self.gpu_actors: set[str] = set()  # every actor class seen on a GPU node
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WATCH, address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                sample = json.loads(line)
            except ValueError:
                continue
            self.samples.append((sample["t"], sample["gpu_nodes"]))
            self.replicas = sample.get("replicas", {})
            nodes = self.replicas.get("gpu_nodes") if isinstance(self.replicas, dict) else None
            if isinstance(nodes, dict):
                for node in nodes.values():
                    self.gpu_actors.update(node["actors"])

    def now(self) -> int | None:
        return self.samples[-1][1] if self.samples else None

    def wait_for(self, predicate, timeout: float, what: str) -> float:
        start = time.time()
        while time.time() - start < timeout:
            if self.samples and predicate(self.samples[-1][1]):
                return time.time() - start
            time.sleep(0.25)
        if self.proc.poll() is not None:
            what += f" (the watcher exited: {self.proc.stderr.read()[-2000:]})"  # type: ignore[union-attr]
        raise AssertionError(
            f"{what} within {timeout:.0f}s; last samples {self.samples[-5:]}; "
            f"Serve's replicas and the GPU nodes' actors and used resources then: {self.replicas}"
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_gpu_nodes_follow_the_endpoints(tmp_path):
    env = {**os.environ, "RAYWEB_CLUSTERS_DIR": str(tmp_path / "clusters")}
    name = f"g{uuid.uuid4().hex[:6]}"
    (tmp_path / "fakegpu.py").write_text(APP)
    port = _free_port()
    up = _run(
        "cluster", "up", "--name", name, "--num-cpus", "2",
        "--autoscaling-config", str(ROOT / "cluster" / "fake-gpu-autoscaling.yaml"),
        env=env, timeout=240,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    address = up.stdout.split("is up at ", 1)[1].split(" ", 1)[0]
    watch = NodeWatch(address, env)
    timings: dict[str, float] = {}
    try:
        watch.wait_for(lambda n: n == 0, 60, "the watcher to connect")
        start = time.monotonic()
        deployed = _run(
            "deploy", str(tmp_path / "fakegpu.py"), "--address", name, "--port", str(port),
            env=env, timeout=400,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        timings["deploy until the endpoints are RUNNING"] = time.monotonic() - start
        warm = httpx.get(f"http://127.0.0.1:{port}/fakegpu-warm", timeout=60)
        assert warm.status_code == 200 and warm.json()["gpus"] == "0"

        # The cold endpoint (min_containers=0) may get a node for its first replica or be
        # scaled to zero before one arrives; either way, once idle only the warm one's node
        # is left (scaledown window 2 s + node idle timeout 15 s).
        time.sleep(20)
        watch.wait_for(lambda n: n == 1, 180, "one GPU node (the warm endpoint's)")
        assert max(n for _t, n in watch.samples) <= 2  # one node per L40S replica

        start = time.monotonic()
        cold = httpx.get(f"http://127.0.0.1:{port}/fakegpu-cold", timeout=300)
        timings["request to a scaled-to-zero GPU endpoint, answered"] = time.monotonic() - start
        assert cold.status_code == 200, cold.text
        assert cold.json()["gpus"] == "0"  # Ray gave the replica its (fake) GPU
        watch.wait_for(lambda n: n == 2, 30, "the cold endpoint's node back")

        timings["node removed again after the request"] = watch.wait_for(
            lambda n: n == 1, 180, "the GPU node to be removed again"
        )
        time.sleep(20)  # longer than the idle timeout: the warm endpoint's node stays
        assert watch.now() == 1
        assert min(n for _t, n in watch.samples[-30:]) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/fakegpu-warm").status_code == 200
        # Only replicas run on GPU nodes: a cluster service there (a detached actor) would
        # keep its node from ever being idle (the rate limiter once did).
        assert watch.gpu_actors and all(a.startswith("ServeReplica:") for a in watch.gpu_actors), (
            watch.gpu_actors
        )
    finally:
        watch.stop()
        down = _run("cluster", "down", "--name", name, env=env, timeout=120)
        print("fake GPU autoscaling timings (s):", json.dumps(timings, indent=1))
    assert down.returncode == 0, down.stderr
    time.sleep(3)
    assert not _tagged(f"/tmp/rayweb-{name}-{os.getuid()}"), "fake GPU nodes survived"
