"""Modal's function calls on the real cluster: web endpoints calling backend functions and a
model class (examples/backend_functions.py) and every call form from this process (the
driver); the job queue is in test_job_queue.py (a module of its own, so the backend example's
replicas are gone before it starts)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

import rayweb
from rayweb.exception import (
    ExecutionError,
    InvalidError,
    NotFoundError,
)
from tests.integration.conftest import TEST_PORT, example_app

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def backend(ray_cluster):
    app = example_app("backend_functions.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    try:
        yield app, handle.urls["api"]
    finally:
        handle.stop()


def test_a_web_endpoint_calls_a_model_class_in_its_own_replicas(backend):
    _, url = backend
    got = httpx.get(url + "/predict", params={"x": 2, "scale": 3}, timeout=120).json()
    assert got["y"] == 6 and got["scale"] == 3
    assert got["pid"] != got["web_pid"]  # the class runs in its own replica
    other = httpx.get(url + "/predict", params={"x": 2}, timeout=120).json()
    assert other["y"] == 2 and other["scale"] == 1  # another parameter set, another instance


def test_map_and_async_fan_out_from_an_endpoint(backend):
    _, url = backend
    assert httpx.get(url + "/squares", params={"n": 12}, timeout=120).json() == [
        i * i for i in range(12)
    ]
    # 20 concurrent 1 s calls from one async endpoint: the event loop is never blocked
    got = httpx.get(url + "/naps", params={"n": 20, "seconds": 1}, timeout=120).json()
    assert got["n"] == 20
    assert got["elapsed"] < 10, got  # one after another they would take 20 s


def test_a_remote_exception_keeps_its_type_message_and_traceback(backend):
    app, url = backend
    got = httpx.get(url + "/error", params={"message": "no such user"}, timeout=120).json()
    assert got["type"] == "ValueError" and got["message"] == "no such user"
    assert "Remote traceback" in got["notes"][0] and "raise ValueError" in got["notes"][0]
    fail = app.registered_functions["fail"]
    with pytest.raises(ValueError, match="from the driver") as caught:
        fail.remote("from the driver")
    assert "backend_functions.py" in "".join(caught.value.__notes__)


def test_remote_gen_streams_items_as_they_are_produced(backend):
    app, url = backend
    countdown = app.registered_functions["countdown"]
    arrived = []
    for item in countdown.remote_gen(4, every=0.4):
        arrived.append((time.time(), item))
    assert [item["left"] for _, item in arrived] == [4, 3, 2, 1]
    # each item reached us right after it was produced, not all at the end
    assert all(at - item["at"] < 0.3 for at, item in arrived), arrived
    assert arrived[-1][0] - arrived[0][0] > 0.9
    # and through a web endpoint as SSE, event by event
    stamps = []
    with httpx.stream("GET", url + "/countdown", params={"n": 3}, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                stamps.append((time.time(), json.loads(line[6:])))
    assert [item["left"] for _, item in stamps] == [3, 2, 1]
    assert all(at - item["at"] < 0.3 for at, item in stamps), stamps


def test_every_call_form_from_the_driver(backend):
    app, _ = backend
    square = app.registered_functions["square"]
    assert square.remote(7) == 49
    assert asyncio.run(square.remote.aio(8)) == 64
    assert list(square.map([1, 2, 3])) == [1, 4, 9]
    assert list(square.starmap([(4,), (5,)])) == [16, 25]
    assert square.for_each(range(3)) is None

    async def amap() -> list[int]:
        return [y async for y in square.map.aio(range(4))]

    assert asyncio.run(amap()) == [0, 1, 4, 9]
    model = app.registered_classes["Model"]
    assert model(scale=5).predict.remote(2)["y"] == 10
    call = square.spawn(9)
    assert call.object_id.startswith("fc-")
    assert rayweb.FunctionCall.from_id(call.object_id).get(timeout=60) == 81
    fail = app.registered_functions["fail"]
    assert list(fail.map(["a"], return_exceptions=True))[0].args == ("a",)


def test_functions_and_classes_looked_up_by_name(backend):
    square = rayweb.Function.from_name("backend", "square")
    assert square.remote(6) == 36  # the first call finds the app and asks what it is
    assert list(square.map([1, 2, 3])) == [1, 4, 9]
    assert asyncio.run(square.remote.aio(3)) == 9
    assert rayweb.FunctionCall.from_id(square.spawn(5).object_id).get(timeout=60) == 25
    countdown = rayweb.Function.from_name("backend", "countdown")

    async def stream() -> list[int]:
        return [item["left"] async for item in countdown.remote_gen.aio(2, every=0.01)]

    assert asyncio.run(stream()) == [2, 1]
    with pytest.raises(InvalidError, match="Use `.remote_gen"):
        countdown.remote(1)  # known after the first call, as for a local function
    with pytest.raises(ValueError, match="by name"):
        rayweb.Function.from_name("backend", "fail").remote("by name")
    model = rayweb.Cls.from_name("backend", "Model")
    assert model(scale=4).predict.remote(2)["y"] == 8
    assert model().predict.remote(2)["y"] == 2
    with pytest.raises(NotFoundError, match="has no such method. Its methods: predict"):
        model().nope.remote()
    with pytest.raises(NotFoundError, match="Lookup failed for Function 'nothing' from the 'b"):
        rayweb.Function.from_name("backend", "nothing").remote()
    with pytest.raises(NotFoundError, match="Lookup failed for Cls 'Model' from the 'nowhere'"):
        rayweb.Cls.from_name("nowhere", "Model")().predict.remote(1)
    with pytest.raises(ExecutionError, match="looked up by name"):
        square.local(1)
    with pytest.raises(InvalidError, match=r"Cls.from_name\('backend', 'Model'\)"):
        rayweb.Function.from_name("backend", "Model.predict")


def test_misuse_gets_modal_s_errors(backend):
    app, _ = backend
    countdown, square = app.registered_functions["countdown"], app.registered_functions["square"]
    with pytest.raises(InvalidError, match="Use `.remote_gen"):
        countdown.remote(3)
    with pytest.raises(InvalidError, match="non-generator"):
        square.remote_gen(3)
    with pytest.raises(InvalidError, match="webhook function cannot be invoked"):
        app.registered_functions["api"].remote()
    with pytest.raises(TypeError, match="Argument 0 of square.remote"):
        square.remote(threading.Lock())


def test_a_function_of_an_app_that_is_not_running_says_how_to_run_it(ray_cluster):
    idle = rayweb.App("idle-app")

    @idle.function(serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(NotFoundError, match=r"with app.run\(\):"):
        f.remote()
