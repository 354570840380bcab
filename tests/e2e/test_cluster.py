"""`rayweb cluster up/status/down` and serving against it with --address NAME."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid

import httpx
import psutil

from tests.conftest import EXAMPLES
from tests.e2e.test_cli import _free_port, _start, _wait_for, _wait_for_line

RAYWEB = [sys.executable, "-m", "rayweb.cli"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAYWEB, *args], capture_output=True, text=True, timeout=timeout)


def _tagged(temp_dir: str) -> list[int]:
    """Processes of the cluster, found independently of rayweb's own bookkeeping: any
    process with a file open in, or running in, the cluster's temp dir."""
    pids = []
    for proc in psutil.process_iter(["pid", "status", "cwd"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.info["cwd"] == temp_dir or any(
                f.path.startswith(temp_dir) for f in proc.open_files()
            ):
                pids.append(proc.info["pid"])
        except psutil.Error:
            pass
    return pids


IMPORTED_FIRST = """
import sys, ray, rayweb
from rayweb.driver import cluster
try:
    cluster.ensure_ray(sys.argv[1])
except rayweb.exception.InvalidError as exc:
    sys.exit(str(exc))
print("CPUs", ray.cluster_resources()["CPU"])
"""


def _connect_with_ray_imported_first(name: str) -> None:
    """A notebook that imported ray before rayweb: Ray has read its variables already. It
    connects (loopback applied afterwards) when token auth was set before Python started,
    and says what to do otherwise (instead of retrying at the machine's outward address)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAYWEB_CLUSTERS_DIR"] = os.environ["RAYWEB_CLUSTERS_DIR"]
    run = [sys.executable, "-c", IMPORTED_FIRST, name]
    ok = subprocess.run(
        run, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and "CPUs 2.0" in ok.stdout, ok.stderr[-2000:]
    refused = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "Suggestion: import rayweb before ray" in refused.stderr


def _refused_while_another_process_shares_the_port(name: str, port: int) -> None:
    """A listener with SO_REUSEPORT (a gRPC server, one of Ray's own workers) on the port:
    HAProxy would share it and hand it some of the connections. The first serve onto the
    cluster says so in one line, and leaves nothing started that would keep the next
    serve from starting its gateway."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    with holder:
        refused = _cli(
            "serve", str(EXAMPLES / "fastapi_endpoint.py"), "--address", name,
            "--port", str(port), "--no-reload",
        )  # fmt: skip
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"Port {port} on 127.0.0.1 is not available" in refused.stderr, refused.stderr
    assert f"Suggestion: --port {port + 1}" in refused.stderr
    assert "Traceback" not in refused.stderr and "(raylet)" not in refused.stderr, refused.stderr[
        -3000:
    ]


def test_cluster_lifecycle_and_serving_with_address(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYWEB_CLUSTERS_DIR", str(tmp_path / "clusters"))
    name = f"t{uuid.uuid4().hex[:6]}"
    cluster_id = f"/tmp/rayweb-{name}-{os.getuid()}"
    up = _cli("cluster", "up", "--name", name, "--num-cpus", "2", timeout=240)
    try:
        assert up.returncode == 0, up.stderr
        assert "is up at 127.0.0.1:" in up.stdout
        status = _cli("cluster", "status", "--name", name)
        assert "resources: CPU=2" in status.stdout, status.stderr[-2000:]

        port = _free_port()
        _refused_while_another_process_shares_the_port(name, port)
        proc = _start(
            [
                "serve",
                str(EXAMPLES / "fastapi_endpoint.py"),
                "--address",
                name,
                "--port",
                str(port),
                "--no-reload",
            ]
        )
        r = _wait_for(f"http://127.0.0.1:{port}/api-service-search-dev?query=k&limit=1", proc)
        assert r.json() == {"query": "k", "results": ["k-0"]}
        _wait_for_line(proc, "Serving.")
        shown = _cli("cluster", "status", "--name", name)
        assert "warm workers: " in shown.stdout and " idle on the head node" in shown.stdout, (
            shown.stdout + shown.stderr[-2000:]
        )
        listed = _cli("app", "list", "--address", name)
        assert "api-service-search-dev" in listed.stdout and "RUNNING" in listed.stdout, (
            listed.stderr[-2000:]
        )
        # the path form, or the origin where this machine resolves `*.localhost`
        forms = (f"127.0.0.1:{port}/api-service-search-dev", f"search-dev.localhost:{port}")
        assert any(form in listed.stdout for form in forms), listed.stdout
        _connect_with_ray_imported_first(name)
        stopped = _cli("app", "stop", "api-service-echo-dev", "--address", name)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        assert (
            httpx.post(f"http://127.0.0.1:{port}/api-service-echo-dev", json={}).status_code == 404
        )
        missing = _cli("app", "stop", "nope", "--address", name)
        assert missing.returncode == 1 and "No endpoint 'nope'" in missing.stderr
        proc.send_signal(2)
        assert proc.wait(90) == 0
        assert _tagged(cluster_id), "the cluster outlives the CLI that served on it"

        again = _cli("cluster", "up", "--name", name, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = _cli("cluster", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    time.sleep(3)  # anything respawned by a dying raylet would show up by now
    assert not _tagged(cluster_id), "processes of the cluster survived `cluster down`"
    assert not (tmp_path / "clusters" / f"{name}.json").exists()


def test_serve_keeps_a_local_cluster_warm_and_the_next_serve_joins_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYWEB_CLUSTERS_DIR", str(tmp_path / "clusters"))
    name = f"w{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("RAYWEB_CLUSTER", name)  # the cluster an address-less serve joins
    temp_dir = f"/tmp/rayweb-{name}-{os.getuid()}"
    example = str(EXAMPLES / "fastapi_endpoint.py")
    try:
        port = _free_port()
        first = _start(["serve", example, "--keep-warm", "--port", str(port), "--no-reload"])
        lines = _wait_for_line(first, "Serving.", timeout=180)
        assert any(f"Started the local cluster '{name}'" in line for line in lines), lines
        url = f"http://127.0.0.1:{port}/api-service-search-dev?query=w&limit=1"
        assert httpx.get(url, timeout=30).json() == {"query": "w", "results": ["w-0"]}
        first.send_signal(2)
        assert first.wait(90) == 0
        assert _tagged(temp_dir), "the kept-warm cluster stopped with the serve that started it"
        status = _cli("cluster", "status", "--name", name)
        assert "resources: CPU=" in status.stdout, status.stderr[-2000:]
        kept = re.search(r"fast start: a driver kept imported \(pid (\d+)\)", status.stdout)
        assert kept, status.stdout
        server = psutil.Process(int(kept.group(1)))

        # no flag, no address: the running cluster serves (no Ray of its own is started), in
        # a fork of the driver kept imported beside it, in this command's output
        second = _start(["serve", example, "--port", str(port), "--no-reload"])
        lines = _wait_for_line(second, "Serving.", timeout=180)
        assert any(f"On the running local cluster '{name}'" in line for line in lines), lines
        assert httpx.get(url, timeout=30).status_code == 200
        assert not any(
            "gcs_server" in " ".join(p.cmdline()) for p in psutil.Process(second.pid).children(True)
        ), "the second serve started a Ray of its own"
        (forked,) = server.children()  # the serve runs there, not in `second`'s process
        assert forked.cwd() == os.getcwd() != server.cwd()  # it took the command's folder
        second.send_signal(2)  # Ctrl-C reaches the fork; its exit code comes back
        assert second.wait(90) == 0
        assert not server.children()
        assert httpx.get(url, timeout=30).status_code == 404  # stopped: the endpoint is gone

        both = _cli("serve", example, "--keep-warm", "--address", "local")
        assert both.returncode == 1 and "Suggestion: drop one of them" in both.stderr
    finally:
        down = _cli("cluster", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    time.sleep(3)
    assert not _tagged(temp_dir), "processes of the kept-warm cluster survived `cluster down`"
