"""Modal's Dict and Queue on the real cluster: from this process (the driver), from web
endpoints, functions and classes (examples/shared_state.py), from two replicas writing one key,
through the CLI as a subprocess, and across a SIGKILL of the actor that keeps them."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

import rayweb
from rayweb.exception import InvalidError, NotFoundError, RequestSizeError
from tests.conftest import ROOT
from tests.integration.conftest import TEST_PORT, example_app

pytestmark = pytest.mark.cluster


def test_dict_from_the_driver(ray_cluster):
    d = rayweb.Dict.from_name("t-dict", create_if_missing=True)
    d.clear()
    d["a"] = {"nested": [1, 2]}
    d[("tuple", 1)] = b"bytes"
    assert d["a"] == {"nested": [1, 2]} and d[("tuple", 1)] == b"bytes"
    assert d.get("missing") is None and d.get("missing", 7) == 7
    assert d.put("a", 2, skip_if_exists=True) is False and d["a"] == {"nested": [1, 2]}
    assert d.put("new", 1) is True
    d.update({"x": 1}, y=2)
    assert "x" in d and d.contains("y") and "zz" not in d
    assert len(d) == d.len() == 5
    assert sorted(map(str, d.keys())) == sorted(map(str, ["a", ("tuple", 1), "new", "x", "y"]))
    assert dict(d.items())["y"] == 2 and 2 in list(d.values())
    assert d.pop("y") == 2
    with pytest.raises(KeyError, match="y not in dict di-t-dict"):
        d.pop("y")
    with pytest.raises(KeyError):
        d["y"]
    del d["x"]
    assert "x" not in d
    d["fn"] = lambda v: v + 1  # noqa: E731 (the standard pickle refuses it: cloudpickle)
    assert d["fn"](1) == 2
    with pytest.raises(NotFoundError, match="rayweb dict create t-nope"):
        rayweb.Dict.from_name("t-nope").get("a")
    with pytest.raises(NotFoundError, match="t-nope"):
        rayweb.Dict.from_name("t-nope").hydrate()
    assert "t-dict" in [x.name for x in rayweb.Dict.objects.list()]

    async def aio() -> None:
        await d.put.aio("async", 1)
        assert await d.get.aio("async") == 1
        assert "async" in [k async for k in d.keys.aio()]
        assert await d.len.aio() == 5  # a, ("tuple", 1), new, fn, async

    asyncio.run(aio())
    with rayweb.Dict.ephemeral({"seed": 1}) as eph:
        assert eph["seed"] == 1 and eph.name is None
        name = eph._name
    assert name not in [x.name for x in rayweb.Dict.objects.list()]
    with pytest.raises(NotFoundError):
        rayweb.Dict.from_name(name).hydrate()  # gone with its block
    rayweb.Dict.objects.delete("t-dict")
    rayweb.Dict.objects.delete("t-dict", allow_missing=True)


def test_queue_from_the_driver(ray_cluster):
    q = rayweb.Queue.from_name("t-queue", create_if_missing=True)
    q.clear(all=True)
    q.put(1)
    q.put_many([2, 3])
    q.put("p", partition="side")
    assert q.len() == 3 and q.len(partition="side") == 1 and q.len(total=True) == 4
    assert list(q.iterate()) == [1, 2, 3] and q.len() == 3  # iterate removes nothing
    assert q.get() == 1 and q.get_many(10) == [2, 3]
    assert q.get(block=False) is None and q.get_many(3, block=False) == []
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)
    assert time.monotonic() - started >= 0.5
    # a blocked get is woken by a put from elsewhere
    threading.Timer(0.5, lambda: q.put("late")).start()
    assert q.get(timeout=30) == "late"
    with pytest.raises(RequestSizeError, match="Queue.put request is too large"):
        q.put(b"x" * (2**20 + 1))
    with pytest.raises(queue.Full):
        q.put_many(list(range(5001)), block=False)
    q.put_many(list(range(5000)), partition="full")
    started = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(1, partition="full", timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(InvalidError, match="between 1 and 64"):
        q.put(1, partition="x" * 65)
    q.clear(all=True)
    assert q.len(total=True) == 0

    async def aio() -> None:
        await q.put.aio("a")
        assert [x async for x in q.iterate.aio()] == ["a"]
        assert await q.get.aio() == "a"
        with pytest.raises(queue.Empty):
            await q.get.aio(timeout=0.2)

    asyncio.run(aio())
    with rayweb.Queue.ephemeral() as eph:
        eph.put(5)
        assert eph.get() == 5
    rayweb.Queue.objects.delete("t-queue")


def test_endpoints_functions_and_classes_share_state(ray_cluster):
    config = rayweb.Dict.from_name("shared-state-config", create_if_missing=True)
    config["settings"] = {"upper": False}  # read by the worker's @enter
    handle = rayweb.serve(example_app("shared_state.py"), port=TEST_PORT, quiet=True)
    try:
        base = handle.urls["api"]
        with httpx.Client(timeout=120) as client:
            put = client.put(base + "/settings", json={"upper": False, "by": "api"})
            assert put.json()["settings"]["by"] == "api" and config["settings"]["by"] == "api"
            ids = [
                client.post(base + "/tasks", json={"text": f"task {i} of ten"}).json()["task_id"]
                for i in range(10)
            ]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = [client.get(f"{base}/tasks/{i}") for i in ids]
                if all(r.status_code == 200 for r in got):
                    break
                time.sleep(0.3)
            assert [r.json()["text"] for r in got] == [f"task {i} of ten" for i in range(10)]
            stats = client.get(base + "/stats").json()
        assert stats["queued"] == 0 and stats["results"] >= 10
        assert {r.json()["pid"] for r in got}.isdisjoint({stats["pid"]})  # the workers' own
        results = rayweb.Dict.from_name("shared-state-results")
        assert results[ids[0]]["words"] == 4  # the driver reads what a worker wrote
    finally:
        handle.stop()


writers = rayweb.App("state-writers")


@writers.function(serialized=True, min_containers=2, max_containers=2)
@rayweb.concurrent(max_inputs=1)
def write_many(tag: str, n: int) -> int:
    d = rayweb.Dict.from_name("t-writers")
    for i in range(n):
        d["shared"] = (tag, i)
        d[f"{tag}-{i}"] = i
    return os.getpid()


def test_two_replicas_writing_one_key_last_write_wins(ray_cluster):
    rayweb.Dict.objects.create("t-writers", allow_existing=True)
    d = rayweb.Dict.from_name("t-writers")
    d.clear()
    with writers.run():
        calls = [write_many.spawn("a", 200), write_many.spawn("b", 200)]
        pids = [c.get(timeout=120) for c in calls]
    assert len(set(pids)) == 2, pids  # two replicas wrote at once
    assert d["shared"] in {("a", 199), ("b", 199)}  # one of the two last writes, whole
    assert len(d) == 401
    assert all(d[f"{tag}-{i}"] == i for tag in "ab" for i in range(200))


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rayweb.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_cli_reaches_the_cluster_that_holds_the_store(ray_cluster):
    d = rayweb.Dict.from_name("t-cli", create_if_missing=True)
    d.update({"k1": "v1", "k2": {"n": 2}})
    q = rayweb.Queue.from_name("t-cli-q", create_if_missing=True)
    q.put_many(["first", "second"])
    out = _cli("dict", "get", "t-cli", "k1")
    assert out.returncode == 0 and out.stdout.strip() == "v1", out.stderr
    out = _cli("dict", "items", "t-cli", "--json")
    assert '"k2"' in out.stdout and "'n': 2" in out.stdout, out.stderr
    assert "t-cli" in _cli("dict", "list").stdout
    assert _cli("queue", "len", "t-cli-q").stdout.strip() == "2"
    assert _cli("queue", "peek", "t-cli-q", "2").stdout.split() == ["first", "second"]
    assert _cli("queue", "clear", "t-cli-q", "-y").returncode == 0
    assert q.len() == 0
    assert _cli("dict", "clear", "t-cli", "--yes").returncode == 0 and len(d) == 0
    out = _cli("dict", "get", "t-nope", "k")
    assert out.returncode != 0 and "rayweb dict create t-nope" in out.stderr
    assert "Traceback" not in out.stderr
    assert _cli("dict", "delete", "t-cli", "-y").returncode == 0
    assert _cli("queue", "delete", "t-cli-q", "-y").returncode == 0
    assert _cli("dict", "delete", "t-cli", "-y", "--allow-missing").returncode == 0


def test_killing_the_state_actor_under_load_loses_no_acknowledged_write(ray_cluster):
    import ray

    from rayweb.services.state_actor import state_actor

    d = rayweb.Dict.from_name("t-durable", create_if_missing=True)
    d.clear()
    q = rayweb.Queue.from_name("t-durable-q", create_if_missing=True)
    q.clear(all=True)
    acked: dict[str, int] = {}
    failed: list[str] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"w{w}-{i}"
            try:
                d[key] = i
                q.put(key)
                acked[key] = i
            except Exception as exc:
                failed.append(f"{key}: {exc!r}")
            i += 1

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    pid = ray.get(state_actor().ping.remote())["pid"]
    before = len(acked)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while len(acked) <= before + 20 and time.monotonic() - killed < 60:
        time.sleep(0.05)
    recovered = time.monotonic() - killed
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    assert ray.get(state_actor().ping.remote())["pid"] != pid  # a new process
    assert not failed, failed[:5]
    assert recovered < 60, f"no write acknowledged within {recovered:.1f} s of the kill"
    items = dict(d.items())
    lost = [k for k, v in acked.items() if items.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    queued = list(q.iterate())
    assert set(acked) <= set(queued) and len(queued) == len(set(queued))  # once each
    print(f"\n{len(acked)} writes acknowledged, first write after the kill in {recovered:.2f} s")
    rayweb.Dict.objects.delete("t-durable")
    rayweb.Queue.objects.delete("t-durable-q")
