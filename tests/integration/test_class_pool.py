"""One container pool per ``@app.cls`` on the real cluster: a class's fastapi, ASGI and WSGI
web methods and its ``@method`` run in the same replica (one ``@enter``), each at its own
label; ``@concurrent`` bounds them together; a label with no replica wakes the class's pool
through the gateway's holder; proxy auth holds per web method."""

# No `from __future__ import annotations`: the classes below are shipped by value.

import concurrent.futures
import itertools
import os
import time

import httpx
import pytest
import ray
from ray import serve

import rayweb
from rayweb.services.gateway import find_gateway
from tests.integration.conftest import example_app
from tests.integration.test_cold_path import _wait_for_zero

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def pool(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    app = example_app("class_pool.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    yield handle, app
    handle.stop()


def _get(handle, tag: str, **params) -> dict:
    path = "/info" if tag == "Model.api" else ""
    r = httpx.get(handle.urls[tag] + path, params=params, timeout=60)
    assert r.status_code == 200, (tag, r.text)
    return r.json()


def test_web_methods_and_calls_share_one_container_and_one_enter(pool):
    handle, app = pool
    assert handle.urls["Model.predict"].endswith("/class-pool-model-predict")
    assert handle.urls["Model.api"].endswith("/class-pool-model-api")
    seen = [_get(handle, tag, x=2) for tag in ("Model.predict", "Model.api", "Model.legacy")]
    seen.append(app.registered_classes["Model"]().embed.remote(2))
    assert seen[0]["y"] == 20 and seen[3]["y"] == 20
    assert len({s["pid"] for s in seen}) == 1  # one container for all four
    assert {s["loads"] for s in seen} == {1}  # whose @enter ran once
    # one Serve application for the class, none per web method
    mine = [name for name in serve.status().applications if "class-pool" in name]
    assert mine == ["rayweb-fn-class-pool-model"]
    table = ray.get(find_gateway().table.remote())
    servers = [table[f"class-pool-model-{m}"]["servers"] for m in ("predict", "api", "legacy")]
    assert servers[0] == servers[1] == servers[2] and len(servers[0]) == 1


def test_concurrent_bounds_web_requests_and_calls_together(pool):
    handle, app = pool
    model = app.registered_classes["Model"]()
    with concurrent.futures.ThreadPoolExecutor(4) as workers:
        jobs = [
            workers.submit(model.embed.remote, 1, 0.7),
            workers.submit(_get, handle, "Model.predict", x=1, delay=0.7),
            workers.submit(_get, handle, "Model.api", delay=0.7),
            workers.submit(model.embed.remote, 1, 0.7),
        ]
        spans = sorted(job.result()["span"] for job in jobs)
    # Modal's default of one input per container: no two inputs of any kind overlapped
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


cold = rayweb.App("coldpool")


@cold.cls(serialized=True, cpu=0.1, min_containers=0, scaledown_window=2)
@rayweb.concurrent(max_inputs=4)
class Sleepy:
    @rayweb.enter()
    def load(self):
        self.pid = os.getpid()
        self.loaded_at = time.time()

    @rayweb.fastapi_endpoint()
    def hello(self) -> dict:
        return {"pid": self.pid, "loaded_at": self.loaded_at}

    @rayweb.fastapi_endpoint(requires_proxy_auth=True)
    def secret(self) -> dict:
        return {"pid": self.pid, "loaded_at": self.loaded_at}


def test_a_label_with_no_replica_wakes_its_class_pool(served):
    handle = served(cold)
    _wait_for_zero("coldpool-sleepy-hello", "coldpool-sleepy-secret")
    assert _replicas("rayweb-fn-coldpool-sleepy") == 0
    # refused at the gateway without waking the pool
    assert httpx.get(handle.urls["Sleepy.secret"]).status_code == 401
    relayed = ray.get(find_gateway().holder_stats.remote())["relayed"]
    woke = httpx.get(handle.urls["Sleepy.hello"], timeout=120)
    assert woke.status_code == 200, woke.text
    assert ray.get(find_gateway().holder_stats.remote())["relayed"] == relayed + 1
    # the second label is served by the container the first one woke
    from rayweb.services.store import Store

    key, secret = Store().create_token("pools")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    deadline = time.monotonic() + 30
    r = httpx.get(handle.urls["Sleepy.secret"], headers=headers)
    while r.status_code == 401 and time.monotonic() < deadline:  # the token propagates
        time.sleep(0.2)
        r = httpx.get(handle.urls["Sleepy.secret"], headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == woke.json()


def _replicas(app_name: str) -> int:
    status = serve.status().applications.get(app_name)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())
