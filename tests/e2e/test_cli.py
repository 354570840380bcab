"""The real ``rayweb`` CLI as a subprocess, each run with its own embedded Ray and port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import EXAMPLES, ROOT

RAYWEB = [sys.executable, "-m", "rayweb.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        RAYWEB + args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"rayweb exited early ({proc.returncode}):\n{out}\n{err}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{url} never answered 200:\n{proc.communicate()[1]}")


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 60) -> list[str]:
    """Read stderr until a line contains ``text`` (the CLI's own readiness message)."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if text in line:
                found.set()

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"never saw {text!r}:\n{''.join(lines)}"
    return lines


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_serve_example_then_ctrl_c_stops_everything():
    port = _free_port()
    proc = _start(["serve", str(EXAMPLES / "fastapi_endpoint.py"), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    r = _wait_for(f"{base}/api-service-search-dev?query=cli&limit=1", proc)
    assert r.json() == {"query": "cli", "results": ["cli-0"]}
    assert httpx.post(f"{base}/api-service-echo-dev", json={"k": 2}).json() == {
        "received": {"k": 2}
    }
    children = _descendants(proc.pid)
    assert children, "the embedded Ray should run as children of the CLI"
    err_lines = _wait_for_line(proc, "Serving.")

    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=90) == 0, "".join(err_lines)
    assert "api-service-search-dev" in out  # the URL table
    time.sleep(0.5)  # let the reader thread drain the last lines
    assert "Stopped." in "".join(err_lines)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.info for p in alive] if alive else ''}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/-/routes", timeout=2)


def test_serve_module_ref_with_timeout(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "service.py").write_text(
        textwrap.dedent("""
        import rayweb
        other = rayweb.App("mod-app")

        @other.function()
        @rayweb.fastapi_endpoint()
        def ping() -> str:
            return "pong"
    """)
    )
    port = _free_port()
    proc = _start(
        ["serve", "-m", "mypkg.service::other", "--port", str(port), "--timeout", "25"],
        cwd=tmp_path,
    )
    r = _wait_for(f"http://127.0.0.1:{port}/mod-app-ping-dev", proc)
    assert r.json() == "pong"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert "Timeout of 25s reached." in err


def test_failing_enter_exits_non_zero_with_the_user_traceback(tmp_path):
    script = tmp_path / "broken_enter.py"
    script.write_text(
        textwrap.dedent("""
        import rayweb
        app = rayweb.App("broken-cli")

        @app.cls()
        class Model:
            @rayweb.enter()
            def load(self):
                raise FileNotFoundError("model.bin")

            @rayweb.fastapi_endpoint()
            def predict(self) -> dict:
                return {}
    """)
    )
    proc = _start(["serve", str(script), "--port", str(_free_port()), "--deploy-timeout", "120"])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1
    # the class's pool, which serves its web method
    assert "endpoint 'Model' (" in err and "serving Model.predict)" in err
    assert "failed to start: @enter raised" in err
    assert 'broken_enter.py", line' in err and "raise FileNotFoundError" in err
    assert "ray/serve/_private" not in err


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import rayweb\napp = rayweb.App('x'\n", "SyntaxError"),
        ("import rayweb\nraise RuntimeError('boom at import')\n", "boom at import"),
        ("import rayweb\nnot_an_app = 3\n", "Could not find a rayweb App"),
    ],
)
def test_bad_files_fail_fast_with_a_clear_error(tmp_path, source, expected):
    script = tmp_path / "bad.py"
    script.write_text(source)
    proc = subprocess.run(
        RAYWEB + ["serve", str(script)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert expected in proc.stderr


def test_missing_file_and_version():
    proc = subprocess.run(RAYWEB + ["serve", "nope.py"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "File not found: nope.py" in proc.stderr
    version = subprocess.run(RAYWEB + ["--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("rayweb ")


def test_taken_port_fails_fast_with_a_suggestion():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            RAYWEB + ["serve", str(EXAMPLES / "fastapi_endpoint.py"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1
    assert f"Port {port} on 127.0.0.1 is not available" in proc.stderr
    assert f"--port {port + 1}" in proc.stderr


def _gone(children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"


def _never_left_running(proc: subprocess.Popen) -> None:
    """After a failed test: stop the CLI and its embedded Ray (a second Ctrl-C kills it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for child in _descendants(proc.pid):
                child.kill()
            proc.kill()


def test_ctrl_c_during_start_up_is_honoured_and_leaves_nothing():
    port = _free_port()
    proc = _start(["serve", str(EXAMPLES / "fastapi_endpoint.py"), "--port", str(port)])
    try:
        _interrupt_start_up(proc)
    finally:
        _never_left_running(proc)


def _interrupt_start_up(proc: subprocess.Popen) -> None:
    """Ctrl-C while Ray itself is starting (its agents are up, ``ray.init`` still waits):
    every process seen below the CLI until it exits must be gone after."""
    seen: dict[int, psutil.Process] = {}
    watching = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            for child in _descendants(proc.pid):
                seen.setdefault(child.pid, child)
            watching.set()
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any("Agent" in _name(p) for p in list(seen.values())):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, (out, err)  # interrupted, not served
    assert "Serving." not in err
    _gone(list(seen.values()))


def _name(process: psutil.Process) -> str:
    try:
        return str(process.name())
    except psutil.Error:
        return ""


def test_gateway_restart_is_printed_and_a_second_ctrl_c_stops_at_once():
    port = _free_port()
    proc = _start(["serve", str(EXAMPLES / "fastapi_endpoint.py"), "--port", str(port)])
    try:
        _restart_then_stop_hard(proc, f"http://127.0.0.1:{port}")
    finally:
        _never_left_running(proc)


def _restart_then_stop_hard(proc: subprocess.Popen, base: str) -> None:
    lines = _wait_for_line(proc, "Serving.", timeout=120)
    children = _descendants(proc.pid)
    masters = [  # the master's workers are haproxy processes too, forked from it
        p for p in children if p.name() == "haproxy" and p.parent().name() != "haproxy"
    ]
    assert len(masters) == 1, [p.cmdline() for p in children]
    masters[0].kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "started again" not in "".join(lines):
        time.sleep(0.1)
    assert "rayweb: the gateway's HAProxy was killed by SIGKILL; started again" in "".join(lines)
    assert _wait_for(f"{base}/api-service-search-dev?query=x&limit=1", proc).status_code == 200
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # stopping: the endpoints are being deleted
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 128 + signal.SIGINT
    _gone(children)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/-/routes", timeout=2)
