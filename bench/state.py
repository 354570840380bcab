"""Benchmark: Dict and Queue round trips from a replica, and the state actor's memory.

    python bench/state.py [--ops 640] [--keys 100000]

1. From inside a web endpoint's replica, p50/p99 of ``await d.put.aio``, ``await d.get.aio``,
   ``await q.put.aio`` + ``await q.get.aio`` at 1 and 32 concurrent callers, next to a call to a
   plain async Ray actor holding a dict in memory (what the round trip costs without the
   durable log).
2. ``--keys`` keys of ~100 bytes put from the driver (``update`` in batches of 1,000): the
   state actor's resident memory before and after, and its log + snapshot on disk.

Appends a section to bench/RESULTS.md.
"""

import argparse
import asyncio
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results  # noqa: E402

import rayweb  # noqa: E402

app = rayweb.App("bench-state")


@app.function(min_containers=1, max_containers=1)
@rayweb.concurrent(max_inputs=64)
@rayweb.asgi_app()
def probe():
    import ray
    from fastapi import FastAPI

    web = FastAPI()

    @ray.remote(num_cpus=0)
    class Plain:
        def __init__(self) -> None:
            self.data: dict = {}

        async def put(self, k, v) -> None:
            self.data[k] = v

    plain = Plain.remote()

    async def timed(call, n: int, callers: int) -> list[float]:
        latencies: list[float] = []

        async def worker(w: int, count: int) -> None:
            for i in range(count):
                started = time.perf_counter()
                await call(w * 100_000 + i)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(w, n // callers) for w in range(callers)))
        return latencies

    @web.get("/bench")
    async def bench(n: int = 640, callers: int = 1) -> dict:
        d = rayweb.Dict.from_name("bench-state", create_if_missing=True)
        q = rayweb.Queue.from_name("bench-state-q", create_if_missing=True)
        await d.put.aio("warm", 1)

        async def queue_round_trip(i: int) -> None:
            await q.put.aio(i, partition=f"p{i // 100_000}")
            await q.get.aio(partition=f"p{i // 100_000}")

        forms = {
            "Dict.put": lambda i: d.put.aio(i, "v" * 100),
            "Dict.get": lambda i: d.get.aio(i),
            "Queue.put + get": queue_round_trip,
            "plain Ray actor call (no log)": lambda i: plain.put.remote(i, "v" * 100),
        }
        out = {}
        for name, call in forms.items():
            await timed(call, min(n, 64), callers)  # warm
            started = time.perf_counter()
            latencies = await timed(call, n, callers)
            out[name] = {"lat": sorted(latencies), "rate": n / (time.perf_counter() - started)}
        return out

    return web


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def _actor_rss_mib() -> float:
    import psutil

    pid = next(
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "StateActor" in " ".join(p.info["cmdline"] or [])
    )
    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=640)
    parser.add_argument("--keys", type=int, default=100_000)
    options = parser.parse_args()
    store = tempfile.mkdtemp(prefix="rayweb-bench-store-")
    os.environ["RAYWEB_STORE_DIR"] = store  # a fresh store, before Ray starts

    import httpx

    from rayweb.driver import cluster

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    held = cluster.hold()
    try:
        cluster.ensure_serve("127.0.0.1", 18391)
        with rayweb.serve(app, port=18391, quiet=True) as handle:
            url = handle.urls["probe"] + "/bench"
            rows = []
            for callers in (1, 32):
                got = httpx.get(url, params={"n": options.ops, "callers": callers}, timeout=600)
                for name, r in got.json().items():
                    lat = r["lat"]
                    rows.append((name, callers, _pct(lat, 0.5), _pct(lat, 0.99), r["rate"]))
        big = rayweb.Dict.from_name("bench-state-keys", create_if_missing=True)
        big["warm"] = 1
        before = _actor_rss_mib()
        started = time.perf_counter()
        for start in range(0, options.keys, 1000):
            big.update({f"key-{i:08d}": "v" * 100 for i in range(start, start + 1000)})
        fill_s = time.perf_counter() - started
        assert len(big) == options.keys + 1
        after = _actor_rss_mib()
        disk = sum(f.stat().st_size for f in (Path(store) / "state").iterdir())
    finally:
        if held:
            cluster.release()

    lines = [
        f"## {datetime.date.today()}: Dict and Queue (bench/state.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {options.ops} operations per row, timed inside a web "
        "endpoint's replica with `.aio` forms, warm; every write fsynced before it is "
        "acknowledged (group commit).",
        "",
        "| operation | concurrent callers | p50 (ms) | p99 (ms) | ops/s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {c} | {p50:.2f} | {p99:.2f} | {rate:,.0f} |"
        for name, c, p50, p99, rate in rows
    ]
    lines += [
        "",
        f"{options.keys:,} keys of ~100-byte values (`update` in batches of 1,000, "
        f"{fill_s:.1f} s): the state actor's resident memory went from {before:.0f} MiB to "
        f"{after:.0f} MiB; log + snapshot on disk: {disk / 2**20:.1f} MiB.",
        "",
    ]
    append_results(HERE / "RESULTS.md", lines)


if __name__ == "__main__":
    main()
