"""The RayService that `rayweb deploy --kuberay` renders, run on this machine: a Ray head and
one worker started with the ``rayStartParams`` and environment its pod templates give
(loopback addresses, free ports and temp folders in place of the pod's), its
``serveConfigV2`` submitted through the dashboard's Serve REST API as KubeRay submits it,
then traffic on the head's ``serve`` port: KubeRay's head check (``GET /-/healthz``), an
endpoint whose replica runs on the worker, reached through the gateway's direct path, and
Serve's own proxy only on loopback behind it; for a class, its web method is served by the
class's pool (one application), as under `rayweb serve`."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray
import yaml

from rayweb.driver import local_cluster
from rayweb.driver.import_refs import load_app
from rayweb.driver.kuberay import STORE_DIR, VOLUME_ROOT, render_rayservice
from tests.conftest import EXAMPLES
from tests.e2e.clusters import gateway_call
from tests.e2e.test_cli import _free_port


def _env(container: dict, paths: dict[str, str]) -> dict[str, str]:
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    return {name: paths.get(value, value) for name, value in env.items()}


CASES = {
    # example: (path, the answer's check, the gateway route its replica registers)
    "fastapi_endpoint": (
        "/api-service-search?query=k8s&limit=1",
        lambda body: body == {"query": "k8s", "results": ["k8s-0"]},
        "api-service-search",
    ),
    "class_pool": (
        "/class-pool-model-predict?x=3",
        lambda body: body["y"] == 30 and body["loads"] == 1,
        "class-pool-model-predict",
    ),
}


@pytest.mark.parametrize("example", sorted(CASES))
def test_the_rendered_rayservice_serves_through_the_gateway(tmp_path, monkeypatch, example):
    path, check, route = CASES[example]
    app = load_app(str(EXAMPLES / f"{example}.py"))
    manifest = render_rayservice(
        app, module=example, ray_version=ray.__version__, domain="apps.test"
    )
    cluster_spec = manifest["spec"]["rayClusterConfig"]
    head, worker = cluster_spec["headGroupSpec"], cluster_spec["workerGroupSpecs"][0]
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    gateway = next(a["args"]["gateway"] for a in config["applications"] if "gateway" in a["args"])
    serve_port = next(
        p["containerPort"]
        for p in head["template"]["spec"]["containers"][0]["ports"]
        if p["name"] == "serve"
    )
    assert gateway["port"] == serve_port  # the gateway owns the head's `serve` port
    assert config["http_options"]["host"] == "127.0.0.1"  # Serve's proxy: loopback only
    # This machine's addresses and folders for the pod's (traffic stays on loopback here).
    port, proxy_port = _free_port(), _free_port()
    for application in config["applications"]:
        application["args"]["gateway"] |= {"host": "127.0.0.1", "port": port}
        application["args"]["gateway"]["serve_port"] = proxy_port
    config["http_options"]["port"] = proxy_port
    paths = {VOLUME_ROOT: str(tmp_path / "volumes"), STORE_DIR: str(tmp_path / "store")}
    env = _env(head["template"]["spec"]["containers"][0], paths)
    env |= _env(worker["template"]["spec"]["containers"][0], paths)
    env["PYTHONPATH"] = str(EXAMPLES)  # the app's module, as baked into the image
    monkeypatch.setenv("RAYWEB_CLUSTERS_DIR", str(tmp_path / "clusters"))
    name = f"k{uuid.uuid4().hex[:6]}"
    cluster = local_cluster.up(
        name,
        head_cpus=int(head["rayStartParams"]["num-cpus"]),
        num_cpus=int(worker["rayStartParams"]["num-cpus"]),
        workers=1,
        extra_env=env,
    )
    try:
        put = httpx.put(
            f"{cluster.dashboard}/api/serve/applications/",
            json=config,
            headers=_ray_token(),  # as KubeRay sends the cluster's token
            timeout=60,
        )
        assert put.status_code == 200, put.text
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{url}{path}", timeout=10)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        assert check(answer.json()), answer.text
        # KubeRay's check that puts the head in the serve Service (answered by HAProxy: an
        # app whose URLs are all a class pool's has no Serve route, and Serve's proxy says 503)
        health = httpx.get(f"{url}/-/healthz", timeout=10)
        assert (health.status_code, health.text) == (200, "success")
        # the Ingress' hosts: each endpoint at the root of its own origin under the domain
        rest = path[len(route) + 1 :]
        at_origin = httpx.get(
            url + (rest if rest.startswith("/") else "/" + rest),
            headers={"Host": f"{route}.apps.test"},
            timeout=10,
        )
        assert at_origin.status_code == 200 and check(at_origin.json()), at_origin.text
        # the replica (on the worker: the head has no CPU) registered its own port with the
        # gateway, so requests take the direct path, not Serve's proxy
        table = gateway_call(cluster.address, "table")
        assert table[route]["servers"], table
        if example == "class_pool":  # the web method is served by its class's application
            assert table[route]["serve_app"] == "rayweb-fn-class-pool-model"
            assert route not in {a["name"] for a in config["applications"]}
    finally:
        local_cluster.down(name)


def _ray_token() -> dict[str, str]:
    """The header Ray's token auth (on by default) asks of REST clients."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path.home() / ".ray" / "auth_token"
    if token is None and path.exists():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}
