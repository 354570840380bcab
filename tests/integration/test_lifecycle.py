"""@enter/@exit, failing user code and unplaceable replicas, on the shared real cluster."""

from __future__ import annotations

import time

import httpx
import pytest
from ray import serve

import rayweb
from rayweb.exception import DeploymentError, DeployTimeoutError
from tests.integration.test_data_path import gateway_table


def _assert_gone_or_deleting(name: str) -> None:
    """A failed deploy leaves nothing serving: the app is gone or being deleted."""
    app = serve.status().applications.get(name)
    assert app is None or str(app.status).endswith("DELETING"), app


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_enter_runs_once_per_replica_and_exit_at_shutdown(served, tmp_path):
    log = tmp_path / "lifecycle.log"
    app = rayweb.App("life")

    @app.cls(serialized=True, min_containers=1, max_containers=1)
    class Counter:
        @rayweb.enter()
        def setup(self):
            import os

            self.pid = os.getpid()
            with open(log, "a") as f:
                f.write(f"enter {self.pid}\n")

        @rayweb.exit()
        def teardown(self):
            with open(log, "a") as f:
                f.write(f"exit {self.pid}\n")

        @rayweb.fastapi_endpoint()
        def hit(self) -> dict:
            with open(log, "a") as f:
                f.write(f"hit {self.pid}\n")
            return {"pid": self.pid}

    handle = served(app)
    pids = {httpx.get(handle.urls["Counter.hit"]).json()["pid"] for _ in range(5)}
    assert len(pids) == 1
    lines = _lines(log)
    assert lines[0].startswith("enter ")  # before any request
    assert [ln for ln in lines if ln.startswith("enter")] == [f"enter {pids.pop()}"]
    assert sum(ln.startswith("hit") for ln in lines) == 5

    handle.stop()
    deadline = time.monotonic() + 20
    while not any(ln.startswith("exit") for ln in _lines(log)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _lines(log)[-1].startswith("exit ")
    assert "life-counter-hit" not in serve.status().applications
    with pytest.raises(rayweb.exception.ExecutionError):
        Counter.hit.get_web_url()


def test_enter_state_feeds_asgi_factory(served):
    app = rayweb.App("life2")

    @app.cls(serialized=True)
    class Api:
        @rayweb.enter()
        def load(self):
            self.greeting = "built after enter"

        @rayweb.asgi_app()
        def web(self):
            from fastapi import FastAPI

            web = FastAPI()
            greeting = self.greeting  # AttributeError here if the factory ran before @enter

            @web.get("/")
            def root():
                return {"greeting": greeting}

            return web

    url = served(app).urls["Api.web"]
    assert httpx.get(url).json() == {"greeting": "built after enter"}


def test_failing_enter_fails_the_deploy_with_the_user_traceback(served):
    app = rayweb.App("broken")

    @app.cls(serialized=True)
    class Broken:
        @rayweb.enter()
        def load_weights(self):
            raise ValueError("weights file is missing")

        @rayweb.fastapi_endpoint()
        def predict(self) -> dict:
            return {}

    start = time.monotonic()
    with pytest.raises(DeploymentError) as info:
        served(app, deploy_timeout=120)
    assert time.monotonic() - start < 60  # fails fast, long before the deadline
    err = info.value
    assert "Broken.predict" in err.args[0] and "@enter" in err.args[0]
    assert "ValueError: weights file is missing" in err.args[0]
    assert "load_weights" in err.user_traceback
    assert "raise ValueError" in err.user_traceback
    assert "ray/serve" not in err.user_traceback  # no Ray internals
    _assert_gone_or_deleting("rayweb-fn-broken-broken")  # the class's pool


def test_failing_factory_fails_the_deploy(served):
    app = rayweb.App("broken2")

    @app.function(serialized=True)
    @rayweb.asgi_app()
    def web():
        return {}["missing"]

    with pytest.raises(DeploymentError) as info:
        served(app, deploy_timeout=120)
    assert "asgi_app factory" in info.value.args[0]
    assert "KeyError" in info.value.user_traceback
    _assert_gone_or_deleting("broken2-web")


def test_unplaceable_gpu_replica_times_out_naming_what_is_missing(served):
    from tests.integration.conftest import example_app

    app = example_app("resources.py", "gpu_app")
    start = time.monotonic()
    with pytest.raises(DeployTimeoutError) as info:
        served(app, deploy_timeout=6)
    assert time.monotonic() - start < 40
    message = str(info.value)
    assert "gpu_info" in message and "GPU" in message
    assert "missing: GPU" in message
    _assert_gone_or_deleting("gpu-demo-gpu-info")


def test_unplaceable_web_server_names_its_sidecars_gpu(served):
    """A web_server's resources are held by its sidecar (bundle 1 of the replica's placement
    group): the message must name those, not the proxy replica's 0.05 CPU."""
    app = rayweb.App("nogpu-server")

    @app.function(gpu="L40S", serialized=True)
    @rayweb.web_server(8000)
    def server() -> None:
        pass

    with pytest.raises(DeployTimeoutError) as info:
        served(app, deploy_timeout=6)
    message = str(info.value)
    assert "server (nogpu-server-server)" in message
    assert "missing: GPU, accelerator_type:L40S" in message
    _assert_gone_or_deleting("nogpu-server-server")


def test_duplicate_labels_fail_before_deploying(served):
    app = rayweb.App("dup")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint(label="same")
    def one() -> int:
        return 1

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint(label="same")
    def two() -> int:
        return 2

    with pytest.raises(rayweb.exception.InvalidError, match="Duplicate URL label 'same'"):
        served(app)


def test_serve_returns_with_every_min_containers_replica_serving(served):
    """rayweb.serve returns once each replica Serve starts for a new endpoint has
    registered with the gateway (it looks at the gateway's table, not only at Serve's
    status, which says RUNNING a control-loop round later): all min_containers serve."""
    app = rayweb.App("allrep")

    @app.cls(serialized=True, min_containers=2, max_containers=2)
    class Pair:
        @rayweb.enter()
        def setup(self):
            import os

            self.pid = os.getpid()

        @rayweb.fastapi_endpoint()
        def hit(self) -> int:
            return self.pid

    handle = served(app)
    (name,) = [ep.name for ep in [*handle.endpoints, *handle.functions] if ep.tag == "Pair"]
    table = gateway_table()
    servers = {
        server
        for label, route in table.items()
        if (route["serve_app"] or label) == name
        for server in route["servers"]
    }
    assert len(servers) == 2, table
    assert httpx.get(handle.urls["Pair.hit"]).status_code == 200


def test_the_deploy_reads_the_same_statuses_as_serve_status(served):
    """rayweb watches deploys through Serve's protobuf status overview
    (``services/serve_apps.py``), not ``serve.status()``'s pydantic details: both say the
    same of every application, and names Serve does not run are left out."""
    from rayweb.services.serve_apps import app_states

    app = rayweb.App("sameview")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def ping() -> str:
        return "pong"

    handle = served(app)
    (name,) = [ep.name for ep in handle.endpoints]
    deadline = time.monotonic() + 30
    while serve.status().applications[name].status != "RUNNING":  # Serve's view lags
        assert time.monotonic() < deadline
        time.sleep(0.1)
    light = app_states()
    full = serve.status().applications
    both = set(light) & set(full)  # another test's app may finish deleting in between
    assert name in both
    assert {n: light[n].status for n in both} == {n: str(full[n].status.value) for n in both}
    assert {n: light[n].message for n in both} == {n: full[n].message for n in both}
    assert set(app_states([name, "no-such-app"])) == {name}
    handle.stop()
    assert name not in app_states()
