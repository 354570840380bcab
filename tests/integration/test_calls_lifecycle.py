"""Modal's function calls on the real cluster, each test with its own app: @batched,
`with app.run()` with retries and timeouts, a replica killed mid-call, spawn_map and
App.deploy() (a module apart from test_function_calls.py, whose example app stays up for its
whole module)."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import rayweb
from rayweb.exception import ExecutionError, FunctionTimeoutError, InvalidError, NotFoundError
from tests.integration.conftest import TEST_PORT, example_app

pytestmark = pytest.mark.cluster


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
