"""A gateway on every node (``RAYWEB_GATEWAY_NODES=every``) on two Ray nodes on this machine
(`rayweb cluster up --workers 1`): the worker node runs an HAProxy of its own (on a port of
its own: both nodes have 127.0.0.1), requests entering there reach the replicas on both
nodes, it answers KubeRay's ``/-/healthz``, paths it does not route go on through the head to
Serve's proxy, and a new endpoint reaches it without a restart."""

from __future__ import annotations

import json
import os
import textwrap
import time
import uuid
from collections import Counter

import httpx

from tests.e2e.clusters import gateway_call, start_serve, stop_serve_and_cluster
from tests.e2e.test_cli import _free_port
from tests.e2e.test_deploy import _run

APP = textwrap.dedent(
    """
    import os
    import rayweb

    app = rayweb.App("everynode", limits=rayweb.Limits(rate_limit=None))


    def on_worker() -> bool:
        import ray

        node = ray.get_runtime_context().get_node_id()
        mine = next(n for n in ray.nodes() if n["NodeID"] == node)
        return "rayweb-node-1" in mine["Resources"]


    @app.function(min_containers=2, max_containers=2, cpu=0.4)
    @rayweb.fastapi_endpoint()
    def where() -> dict:
        return {"worker": on_worker(), "pid": os.getpid()}
    """
)
LATER = """

@app.function(cpu=0.1, min_containers=1)
@rayweb.fastapi_endpoint()
def later() -> str:
    return "new"
"""


def _both_nodes(url: str, limit_s: float) -> Counter:
    deadline = time.monotonic() + limit_s
    seen: Counter = Counter()
    while time.monotonic() < deadline and len(seen) < 2:
        try:
            seen[httpx.get(url, timeout=10).json()["worker"]] += 1
        except (httpx.HTTPError, ValueError, KeyError):
            time.sleep(0.5)
    return seen


def test_a_gateway_on_every_node_reaches_every_replica(tmp_path):
    env = {
        **os.environ,
        "RAYWEB_CLUSTERS_DIR": str(tmp_path / "clusters"),
        "RAYWEB_GATEWAY_NODES": "every",
        "PYTHONUNBUFFERED": "1",
    }
    name = f"n{uuid.uuid4().hex[:6]}"
    script = tmp_path / "everynode.py"
    script.write_text(APP)
    up = _run("cluster", "up", "--name", name, "--num-cpus", "1", "--workers", "1", env=env)
    assert up.returncode == 0, up.stderr
    address = json.loads((tmp_path / "clusters" / f"{name}.json").read_text())["address"]
    port = _free_port()
    serve = start_serve(script, name, port, env)
    try:
        head_url = f"http://127.0.0.1:{port}/everynode-where-dev"
        assert set(_both_nodes(head_url, 180)) == {True, False}
        deadline = time.monotonic() + 60
        gateways: dict = {}
        while time.monotonic() < deadline and not gateways:
            gateways = gateway_call(address, "node_gateways")
            time.sleep(1)
        assert len(gateways) == 1, gateways  # the worker node's
        host, node_port = next(iter(gateways.values()))
        assert host == "127.0.0.1" and node_port != port  # its own port on this machine
        node_url = f"http://127.0.0.1:{node_port}"
        # entering at the worker node: replicas on both nodes answer
        assert set(_both_nodes(f"{node_url}/everynode-where-dev", 60)) == {True, False}
        # KubeRay's check, answered on every node; a path no route has goes on to the head's
        # HAProxy, then Serve's proxy (on the head's loopback), which says it has no such route
        health = httpx.get(f"{node_url}/-/healthz", timeout=10)
        assert (health.status_code, health.text) == (200, "success")
        unknown = httpx.get(f"{node_url}/no-such-endpoint", timeout=10)
        assert unknown.status_code == 404 and "no-such-endpoint" in unknown.text
        # a new endpoint (a save under `rayweb serve`) reaches the node's gateway too
        script.write_text(APP + LATER)
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline:
            answer = httpx.get(f"{node_url}/everynode-later-dev", timeout=10)
            if answer.status_code == 200:
                break
            time.sleep(1)
        assert answer is not None and answer.json() == "new", answer and answer.text
        # a new domain for the endpoints' own origins (`rayweb deploy --domain`) reaches it too
        gateway_call(address, "set_domain", "apps.test")
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            headers = {"Host": "everynode-later-dev.apps.test"}
            answer = httpx.get(f"{node_url}/", headers=headers, timeout=10)
            if answer.status_code == 200:
                break
            time.sleep(1)
        assert answer is not None and answer.json() == "new", answer and answer.text
    finally:
        stop_serve_and_cluster(serve, name, env)
