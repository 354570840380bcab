"""Modal's function calls on the real cluster: web endpoints calling backend functions and a
model class (examples/backend_functions.py), a job queue with spawn + poll
(examples/job_queue.py), and every call form from this process (the driver)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import rayweb
from rayweb.exception import (
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    InvalidError,
    NotFoundError,
    OutputExpiredError,
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


@pytest.fixture(scope="module")
def jobs(ray_cluster):
    handle = rayweb.serve(example_app("job_queue.py"), port=TEST_PORT, quiet=True)
    try:
        yield handle.urls["api"]
    finally:
        handle.stop()


def test_spawn_then_poll_from_another_endpoint_and_another_process(jobs):
    submitted = httpx.post(jobs + "/submit", json={"text": "hello", "seconds": 2}, timeout=120)
    call_id = submitted.json()["call_id"]
    assert call_id.startswith("fc-")
    first = httpx.get(f"{jobs}/result/{call_id}", timeout=30)
    assert first.status_code == 202 and first.json() == {"status": "pending"}
    deadline = time.monotonic() + 60
    while (polled := httpx.get(f"{jobs}/result/{call_id}", timeout=30)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert polled.json()["result"]["text"] == "HELLO"
    # the same id from this process (the results live on the cluster, not in a replica)
    assert rayweb.FunctionCall.from_id(call_id).get(timeout=10)["text"] == "HELLO"
    with pytest.raises(OutputExpiredError):
        rayweb.FunctionCall.from_id("fc-never-spawned").get(timeout=1)


def test_a_web_endpoint_finds_a_backend_by_name(jobs):
    submitted = httpx.post(jobs + "/submit-by-name", json={"text": "by name", "seconds": 0})
    call_id = submitted.json()["call_id"]
    assert rayweb.FunctionCall.from_id(call_id).get(timeout=60)["text"] == "BY NAME"


def test_a_cancelled_call_raises_input_cancellation(jobs):
    call_id = httpx.post(jobs + "/submit", json={"text": "x", "seconds": 30}, timeout=120).json()[
        "call_id"
    ]
    assert httpx.post(f"{jobs}/cancel/{call_id}", timeout=30).status_code == 200
    with pytest.raises(InputCancellation):
        rayweb.FunctionCall.from_id(call_id).get(timeout=10)


@pytest.fixture(scope="module")
def batched(ray_cluster):
    app = example_app("batched_inference.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    try:
        yield app, handle.urls["classify"]
    finally:
        handle.stop()


def test_batched_functions_get_lists_from_single_calls(batched):
    app, url = batched
    word_counts = app.registered_functions["word_counts"]
    texts = ["a b", "c", "d e f", "g", "h i", "j", "k l m n", "o"]
    counts = list(word_counts.map(texts))
    assert [c["words"] for c in counts] == [len(t.split()) for t in texts]  # in order
    assert max(c["batch"] for c in counts) > 1, counts  # 8 inputs, wait_ms=500: batched
    assert all(c["batch"] <= 8 for c in counts)
    assert word_counts.remote(texts="x y")["words"] == 2  # keywords bind by name
    with pytest.raises(InvalidError, match="takes 1 positional arguments, but one invoc"):
        word_counts.remote("a", "b")  # fails alone, with Modal's message
    # a batched method behind a web endpoint: concurrent requests share forward passes
    with ThreadPoolExecutor(8) as pool:
        got = list(
            pool.map(
                lambda i: httpx.get(url, params={"text": "w " * i, "boost": 1}, timeout=120),
                range(8),
            )
        )
    assert [r.status_code for r in got] == [200] * 8
    answers = [r.json() for r in got]
    assert [a["long"] for a in answers] == [i + 1 >= 3 for i in range(8)]
    assert max(a["batch"] for a in answers) > 1 and all(a["batch"] <= 4 for a in answers)
    assert max(a["n"] for a in answers) < 8  # fewer forward passes than requests


def test_app_run_retries_and_timeouts(ray_cluster, tmp_path: Path):
    app = rayweb.App("run-ctx")

    @app.function(
        serialized=True, retries=rayweb.Retries(max_retries=3, initial_delay=0.1), timeout=60
    )
    def flaky(counter: str) -> int:
        path = Path(counter)
        attempts = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(attempts))
        if attempts < 3:
            raise RuntimeError(f"attempt {attempts} failed")
        return attempts

    @app.function(serialized=True, timeout=2)
    def sleepy() -> None:
        time.sleep(5)

    @app.function(serialized=True)
    @rayweb.batched(max_batch_size=4, wait_ms=10)
    def short(xs: list[int]) -> list[int]:
        return xs[:-1]

    with app.run():
        assert flaky.remote(str(tmp_path / "n")) == 3  # two failures, retried
        with pytest.raises(FunctionTimeoutError, match="timed out after 2 seconds"):
            sleepy.remote()
        with pytest.raises(InvalidError, match="must be a list of equal length as its inputs"):
            short.remote(1)
    with pytest.raises(NotFoundError):  # torn down on exit
        flaky.remote(str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m")


def test_a_replica_killed_mid_call_fails_the_call_clearly_and_a_new_one_serves(ray_cluster):
    import signal

    app = rayweb.App("killed-mid-call")

    @app.function(serialized=True, min_containers=1, max_containers=1)
    def where(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    with app.run():
        pid = where.remote(0)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(where.remote, 60)
            time.sleep(2)
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises(ExecutionError, match="failed outside its code"):
                running.result(timeout=90)  # never hangs
            assert time.monotonic() - started < 60
        deadline = time.monotonic() + 120
        while True:  # Serve replaces the replica; calls reach the new one
            try:
                assert where.remote(0) != pid
                break
            except ExecutionError:
                assert time.monotonic() < deadline
                time.sleep(1)


def test_spawn_map_hands_every_input_over_and_returns(served, tmp_path):
    app = rayweb.App("spawn-map")

    @app.function(serialized=True)
    @rayweb.concurrent(max_inputs=8)
    def record(i: int, folder: str) -> None:
        if i == 3:
            raise ValueError("a failed input is logged, not raised to the caller")
        (Path(folder) / str(i)).write_text(str(i * i))

    served(app)
    assert record.spawn_map(range(40), kwargs={"folder": str(tmp_path)}) is None
    asyncio.run(record.spawn_map.aio(range(40, 50), kwargs={"folder": str(tmp_path)}))
    expected = {str(i) for i in range(50)} - {"3"}
    deadline = time.monotonic() + 120
    while {p.name for p in tmp_path.iterdir()} != expected:
        assert time.monotonic() < deadline, sorted(p.name for p in tmp_path.iterdir())
        time.sleep(0.2)
    assert (tmp_path / "7").read_text() == "49"
    with pytest.raises(TypeError, match="unexpected keyword"):
        record.spawn_map(range(2), order_outputs=False)


def test_app_deploy_puts_the_functions_on_the_connected_cluster(ray_cluster):
    from rayweb.driver.status import delete_apps
    from rayweb.services.registry import forget_deployed
    from rayweb.spec import function_app_name

    app = rayweb.App("deployed-from-code")

    @app.function(serialized=True)
    def triple(x: int) -> int:
        return 3 * x

    name = function_app_name("deployed-from-code", "triple", dev=False)
    assert app.deploy() is app
    try:
        assert triple.remote(5) == 15
        assert rayweb.Function.from_name("deployed-from-code", "triple").remote(2) == 6
    finally:
        delete_apps([name])
        forget_deployed(name)
