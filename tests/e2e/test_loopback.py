"""A notebook's embedded Ray binds and advertises 127.0.0.1 only, whatever the import order:
Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported, and the compiler imports
Ray before the embedded Ray starts (before that, replicas registered with the gateway at
the machine's outward address)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.test_cli import _free_port

SCRIPT = """
import json, sys
if sys.argv[1] == "ray-first":
    import ray  # as a notebook that used Ray before
import rayweb
from rayweb.driver import cluster

app = rayweb.App("loopback")


@app.function(serialized=True)
@rayweb.fastapi_endpoint()
def f():
    return "ok"


handle = rayweb.serve(app, port=int(sys.argv[2]), quiet=True)
import ray
from rayweb.services.gateway import find_gateway

table = ray.get(find_gateway().table.remote())
hosts = [s["host"] for route in table.values() for s in route["servers"].values()]
print("FOUND " + json.dumps({"replicas": hosts, "node": ray.util.get_node_ip_address()}))
handle.stop()
cluster.stop_embedded()
"""


@pytest.mark.parametrize("order", ["rayweb-first", "ray-first"])
def test_an_embedded_ray_is_loopback_only_whatever_the_import_order(order):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, order, str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("FOUND ")), None)
    assert line is not None, run.stderr[-3000:]
    found = json.loads(line.removeprefix("FOUND "))
    assert found["node"] == "127.0.0.1"
    assert found["replicas"] and set(found["replicas"]) == {"127.0.0.1"}, found
