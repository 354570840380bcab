"""Named Dicts and Queues outlive the Ray that served them: written by one embedded Ray,
read by the CLI with no Ray at all, then by a new Ray; and a second cluster on the same store
is refused with a clear error instead of forking the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

RAYWEB = [sys.executable, "-m", "rayweb.cli"]
START_RAY = (
    "import ray, rayweb, json, sys, time\n"
    "ray.init(num_cpus=1, object_store_memory=100 * 2**20, include_dashboard=False)\n"
)


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "RAYWEB_STORE_DIR": str(store), "PYTHONUNBUFFERED": "1"}


def _python(store: Path, body: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    code = START_RAY + textwrap.dedent(body) + "ray.shutdown()\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(store),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        RAYWEB + list(args), cwd=ROOT, env=_env(store), capture_output=True, text=True, timeout=60
    )


def test_dicts_and_queues_survive_a_restart_of_ray(tmp_path):
    store = tmp_path / "store"
    first = _python(
        store,
        """
        d = rayweb.Dict.from_name("persist", create_if_missing=True)
        d["model"] = {"version": 3}
        d.update({i: i * i for i in range(100)})
        q = rayweb.Queue.from_name("persist-q", create_if_missing=True)
        q.put_many(["a", "b", "c"])
        q.put("side", partition="p")
        assert q.get() == "a"
        """,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # no Ray running: the CLI reads (and writes) the store's files directly
    assert _cli(store, "dict", "get", "persist", "model").stdout.strip() == "{'version': 3}"
    assert _cli(store, "queue", "len", "persist-q", "--total").stdout.strip() == "3"
    assert _cli(store, "queue", "clear", "persist-q", "-p", "p", "-y").returncode == 0
    second = _python(
        store,
        """
        d = rayweb.Dict.from_name("persist")
        q = rayweb.Queue.from_name("persist-q")
        print(json.dumps({"model": d["model"], "n": len(d), "sq": d[9],
                          "next": q.get_many(5, block=False), "side": q.len(partition="p")}))
        """,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    got = json.loads(second.stdout.strip().splitlines()[-1])
    assert got == {"model": {"version": 3}, "n": 101, "sq": 81, "next": ["b", "c"], "side": 0}


def test_a_second_cluster_on_the_same_store_is_refused_clearly(tmp_path):
    store = tmp_path / "store"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            START_RAY + "rayweb.Dict.from_name('held', create_if_missing=True)['k'] = 1\n"
            "print('ready', flush=True)\nsys.stdin.readline()\nray.shutdown()\n",
        ],
        cwd=ROOT,
        env=_env(store),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        other = _python(
            store,
            """
            try:
                rayweb.Dict.from_name("held")["k"]
            except Exception as exc:
                print("ERROR", type(exc).__name__, exc)
            """,
        )
        assert "ERROR" in other.stdout, other.stderr[-3000:]
        assert "served by another process" in other.stdout and "RAYWEB_STORE_DIR" in other.stdout
        # the CLI, with no Ray of its own, goes through the cluster that holds the store
        assert _cli(store, "dict", "get", "held", "k").stdout.strip() == "1"
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
