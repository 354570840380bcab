"""`rayweb deploy` onto a `rayweb cluster up` cluster: code shipped with the deploy, serving
after the CLI exits, in-place update without failed requests, a failing new version leaving
the old one serving, `rayweb app logs [-f]`, and `cluster down` freeing the gateway port."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.e2e.steady import SteadyLoad
from tests.e2e.test_cli import _free_port

RAYWEB = [sys.executable, "-m", "rayweb.cli"]

APP = textwrap.dedent(
    """
    import rayweb

    from helper import VERSION

    app = rayweb.App("shipped")


    @app.cls(min_containers=1)
    class Greeter:
        @rayweb.enter()
        def start(self):
            FAIL_AT_ENTER
            print(f"greeter {VERSION} ready", flush=True)

        @rayweb.fastapi_endpoint()
        def hello(self, who: str = "world") -> dict:
            print(f"hello {who} from {VERSION}", flush=True)
            return {"version": VERSION, "who": who}
    """
)


def _write(project: Path, version: str, fail: bool = False) -> None:
    fail_line = 'raise RuntimeError("database unreachable")' if fail else "pass"
    (project / "app.py").write_text(APP.replace("FAIL_AT_ENTER", fail_line))
    (project / "helper.py").write_text(f"VERSION = {version!r}\n")


def _run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The rayweb CLI, run from / (so nothing resolves against the repository)."""
    return subprocess.run(
        [*RAYWEB, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd="/"
    )


def test_deploy_update_rollback_and_logs(tmp_path, monkeypatch):
    import os

    env = {**os.environ, "RAYWEB_CLUSTERS_DIR": str(tmp_path / "clusters"), "PYTHONUNBUFFERED": "1"}
    name = f"d{uuid.uuid4().hex[:6]}"
    project = tmp_path / "project"
    project.mkdir()
    port = _free_port()
    up = _run("cluster", "up", "--name", name, "--num-cpus", "2", env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    try:
        _write(project, "v1")
        first = _run(
            "deploy", str(project / "app.py"), "--address", name, "--port", str(port), env=env
        )
        assert first.returncode == 0, first.stderr[-3000:]
        url = f"http://127.0.0.1:{port}/shipped-greeter-hello"
        assert url in first.stdout  # the URL table; the CLI has exited
        assert "Code shipped as gcs://" in first.stderr  # uploaded, not read from this disk
        assert httpx.get(url, params={"who": "a"}).json() == {"version": "v1", "who": "a"}

        # The cluster runs the shipped snapshot: local edits alone change nothing.
        _write(project, "v2")
        with SteadyLoad(url, pause_s=0.02) as load:
            time.sleep(1)
            assert load.seen("version") == {"v1"}
            second = _run(
                "deploy", str(project / "app.py"), "--address", name, "--port", str(port), env=env
            )
            time.sleep(1)
        failures, versions = load.failures, load.seen("version")
        assert second.returncode == 0, second.stderr[-3000:]
        assert failures == [], failures[:5]
        assert versions == {"v1", "v2"}
        assert httpx.get(url).json()["version"] == "v2"

        # A version whose @enter fails: the deploy fails with the reason, v2 keeps serving.
        _write(project, "v3", fail=True)
        third = _run(
            "deploy", str(project / "app.py"), "--address", name, "--port", str(port), env=env
        )
        assert third.returncode == 1
        assert "database unreachable" in third.stderr
        assert "Traceback" in third.stderr and "/ray/" not in third.stderr
        assert httpx.get(url).json()["version"] == "v2"
        listed = _run("app", "list", "--address", name, env=env)
        assert "shipped-greeter-hello" in listed.stdout and "RUNNING" in listed.stdout, (
            listed.stdout
        )

        # Logs: what the replica printed, and new lines with -f.
        logs = _run("app", "logs", "shipped-greeter-hello", "--address", name, env=env)
        assert logs.returncode == 0, logs.stderr[-2000:]
        assert "greeter v2 ready" in logs.stdout
        follower = subprocess.Popen(
            [*RAYWEB, "app", "logs", "shipped-greeter-hello", "--address", name, "-f"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            seen: list[str] = []

            def read() -> None:
                for line in follower.stdout:  # type: ignore[union-attr]
                    seen.append(line)

            threading.Thread(target=read, daemon=True).start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any("hello follower" in s for s in seen):
                httpx.get(url, params={"who": "follower"})
                time.sleep(1)
            assert any("hello follower from v2" in s for s in seen), seen[-10:]
        finally:
            follower.send_signal(2)
            follower.wait(30)
        missing = _run("app", "logs", "nope", "--address", name, env=env)
        assert missing.returncode == 1 and "No endpoint 'nope'" in missing.stderr
    finally:
        down = _run("cluster", "down", "--name", name, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    time.sleep(2)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, a listener not
        s.bind(("127.0.0.1", port))  # the gateway (HAProxy) went down with the cluster
