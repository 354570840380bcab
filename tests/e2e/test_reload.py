"""Hot reload of a real `rayweb serve` subprocess: edit the file, watch the endpoint change."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.steady import SteadyLoad
from tests.e2e.test_cli import _free_port, _wait_for, _wait_for_line

APP = textwrap.dedent(
    """
    import os
    import rayweb

    app = rayweb.App("hot")


    @app.function()
    @rayweb.concurrent(max_inputs=8)
    @rayweb.fastapi_endpoint()
    def a() -> dict:
        return {"version": "v1", "pid": os.getpid()}


    @app.cls()
    class B:
        @rayweb.enter()
        def load(self):
            self.ready = True

        @rayweb.fastapi_endpoint()
        def b(self) -> dict:
            return {"version": "b1", "pid": os.getpid()}


    @app.function(min_containers=1)
    def backend() -> str:
        return "f1"


    @app.function()
    @rayweb.concurrent(max_inputs=8)
    @rayweb.fastapi_endpoint()
    async def c() -> dict:
        return {"backend": await backend.remote.aio(), "pid": os.getpid()}
    """
)


@pytest.fixture
def dev_server(tmp_path: Path):
    script = tmp_path / "hot_app.py"
    script.write_text(APP)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayweb.cli", "serve", str(script), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    _wait_for(f"{base}/hot-a-dev", proc)
    lines = _wait_for_line(proc, "Watching for changes")
    yield script, base, lines
    proc.send_signal(signal.SIGINT)
    proc.wait(90)


def _edit(script: Path, old: str, new: str) -> None:
    script.write_text(script.read_text().replace(old, new))


def _until(predicate, limit_s: float = 60) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < limit_s, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


@contextlib.contextmanager
def _steady_load(url: str, key: str = "version") -> Iterator[tuple[list[str], set[str]]]:
    """Requests to ``url`` one after another while the block runs: (failures, the values
    of ``key`` seen in the answers; filled in when the block ends)."""
    seen: set[str] = set()
    with SteadyLoad(url) as load:
        time.sleep(0.5)
        yield load.failures, seen
        time.sleep(0.5)
    seen.update(load.seen(key))


def test_saving_redeploys_only_what_changed_without_failing_requests(dev_server):
    script, base, lines = dev_server
    b_pid = httpx.get(f"{base}/hot-b-b-dev").json()["pid"]
    a_pid = httpx.get(f"{base}/hot-a-dev").json()["pid"]
    with _steady_load(f"{base}/hot-a-dev") as (failures, _seen):
        _edit(script, '"v1"', '"v2"')
        _until(lambda: httpx.get(f"{base}/hot-a-dev").json()["version"] == "v2")
        time.sleep(0.5)
    assert failures == []
    assert httpx.get(f"{base}/hot-b-b-dev").json()["pid"] == b_pid  # b was not redeployed
    # Only a's source changed: its replica swapped the code in place (same process).
    assert httpx.get(f"{base}/hot-a-dev").json()["pid"] == a_pid
    assert any("swapped in new code: a" in line for line in lines), lines[-5:]


def test_changing_options_redeploys_in_a_new_process(dev_server):
    script, base, lines = dev_server
    a_pid = httpx.get(f"{base}/hot-a-dev").json()["pid"]
    _edit(script, "@app.function()", "@app.function(max_containers=3)")
    _until(lambda: httpx.get(f"{base}/hot-a-dev").json()["pid"] != a_pid, limit_s=120)
    assert any("redeploying a" in line for line in lines), lines[-5:]


def test_a_broken_save_keeps_the_last_good_version(dev_server):
    script, base, lines = dev_server
    script.write_text(script.read_text() + "\ndef broken(:\n")
    _until(lambda: any("SyntaxError" in line for line in lines))
    assert httpx.get(f"{base}/hot-a-dev").json()["version"] == "v1"
    assert any("the last good version keeps serving" in line for line in lines)

    script.write_text(APP.replace('"v1"', '"v3"'))
    _until(lambda: httpx.get(f"{base}/hot-a-dev").json()["version"] == "v3")


def test_a_new_version_that_fails_to_start_keeps_the_old_one(dev_server):
    script, base, lines = dev_server
    _edit(script, "self.ready = True", "raise RuntimeError('bad weights')")
    _edit(script, '"b1"', '"b2"')
    _until(lambda: any("failed to start" in line for line in lines), limit_s=120)
    assert httpx.get(f"{base}/hot-b-b-dev").json()["version"] == "b1"
    assert any("bad weights" in line for line in lines)


def test_saving_a_backend_function_redeploys_it_and_its_callers_see_the_new_code(dev_server):
    script, base, lines = dev_server
    assert httpx.get(f"{base}/hot-c-dev").json()["backend"] == "f1"
    a_pid = httpx.get(f"{base}/hot-a-dev").json()["pid"]
    c_pid = httpx.get(f"{base}/hot-c-dev").json()["pid"]
    # the endpoint keeps calling the function while it is redeployed
    with _steady_load(f"{base}/hot-c-dev", "backend") as (failures, seen):
        _edit(script, 'return "f1"', 'return "f2"')
        _until(lambda: httpx.get(f"{base}/hot-c-dev").json()["backend"] == "f2", limit_s=120)
    assert failures == []
    assert seen == {"f1", "f2"}
    assert any("redeploying backend" in line for line in lines), lines[-5:]
    # The web endpoints' code did not change: neither was touched.
    assert httpx.get(f"{base}/hot-a-dev").json()["pid"] == a_pid
    assert httpx.get(f"{base}/hot-c-dev").json()["pid"] == c_pid


def test_a_class_pool_swaps_new_source_and_redeploys_new_options_without_failing(dev_server):
    script, base, lines = dev_server
    url = f"{base}/hot-b-b-dev"
    b_pid = httpx.get(url).json()["pid"]
    with _steady_load(url) as (failures, seen):  # only the source: swapped in place
        _edit(script, '"b1"', '"b2"')
        _until(lambda: httpx.get(url).json()["version"] == "b2")
    assert failures == [] and seen == {"b1", "b2"}
    assert httpx.get(url).json()["pid"] == b_pid  # the same container, new code
    assert any("swapped in new code: B" in line for line in lines), lines[-5:]
    with _steady_load(url) as (failures, seen):  # an option: new containers
        _edit(script, "@app.cls()", "@app.cls(max_containers=2)")
        _until(lambda: httpx.get(url).json()["pid"] != b_pid, limit_s=120)
    assert failures == [] and seen == {"b2"}
    assert any("redeploying B" in line for line in lines), lines[-5:]
