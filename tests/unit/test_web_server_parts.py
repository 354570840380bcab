"""web_server pieces that need no cluster: compiled options, port mapping, proxy headers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import rayweb
from rayweb.compiler import compile_endpoint
from rayweb.replica.proxy import _forward_headers, _rewrite_location, _strip_prefix
from rayweb.replica.webserver import PORTMAP_DIR

app = rayweb.App("ws-unit")


@app.function(gpu="L40S", cpu=2, memory=512)
@rayweb.concurrent(max_inputs=16)
@rayweb.web_server(8000, startup_timeout=60)
def vllm():
    pass


def test_sidecar_holds_the_resources_and_the_proxy_almost_nothing():
    ep = compile_endpoint(vllm)
    opts = ep.deployment_options
    assert opts["ray_actor_options"] == {"num_cpus": 0.05}
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    proxy_bundle, sidecar_bundle = opts["placement_group_bundles"]
    assert proxy_bundle == {"CPU": 0.05}
    assert sidecar_bundle == {
        "CPU": 2.0,
        "GPU": 1,
        "accelerator_type:L40S": 0.001,
        "memory": 512 * 1024 * 1024,
    }
    assert ep.payload.sidecar == {
        "num_cpus": 2.0,
        "num_gpus": 1,
        "resources": {"accelerator_type:L40S": 0.001},
        "memory": 512 * 1024 * 1024,
    }
    assert opts["max_ongoing_requests"] == 16
    assert ep.payload.web.port == 8000 and ep.payload.web.startup_timeout == 60


def test_declared_port_is_mapped_for_bind_and_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assigned = s.getsockname()[1]
    code = (
        "import socket\n"
        "srv = socket.socket(); srv.bind(('0.0.0.0', 8000)); srv.listen()\n"
        "print(srv.getsockname()[1])\n"
        "cli = socket.create_connection(('127.0.0.1', 8000)); print('connected')\n"
        "other = socket.socket(); other.bind(('127.0.0.1', 0)); print(other.getsockname()[1] != 8000)\n"
    )
    env = {**os.environ, "PYTHONPATH": PORTMAP_DIR, "RAYWEB_PORT_MAP": f"8000={assigned}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(assigned), "connected", "True"]


def test_prefix_is_stripped_and_headers_forwarded():
    scope = {
        "type": "http",
        "path": "/label/a%20b/c",
        "raw_path": b"/label/a%20b/c",
        "root_path": "/label",
        "scheme": "https",
        "client": ("203.0.113.9", 5555),
        "headers": [
            (b"host", b"example.test"),
            (b"connection", b"keep-alive, x-private"),
            (b"x-private", b"1"),
            (b"te", b"trailers"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-user", b"u"),
        ],
    }
    assert _strip_prefix(scope) == ("/a%20b/c", b"/a%20b/c")
    headers = dict(_forward_headers(scope))
    assert "x-private" not in headers and "te" not in headers and "connection" not in headers
    assert headers["x-user"] == "u" and headers["host"] == "example.test"
    assert headers["X-Forwarded-For"] == "1.2.3.4, 203.0.113.9"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "example.test"
    assert headers["X-Forwarded-Prefix"] == "/label"


def test_redirect_locations_keep_the_route_prefix():
    scope = {"root_path": "/label"}
    assert _rewrite_location(b"/login", scope) == b"/label/login"
    assert _rewrite_location(b"/label/login", scope) == b"/label/login"
    assert _rewrite_location(b"https://other.test/x", scope) == b"https://other.test/x"
    assert _rewrite_location(b"//cdn.test/x", scope) == b"//cdn.test/x"
