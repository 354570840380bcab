"""Benchmark: rayweb's function calls against what they are built on, in one run.

    python bench/calls.py [--calls 600] [--map-inputs 10000] [--spawns 100000]

1. Round trip of a trivial function from a web endpoint (warm), p50/p99 at 1 and 32
   concurrent callers: ``await noop.remote.aio(i)`` (rayweb), ``await handle.remote(i)`` (a
   plain Serve ``DeploymentHandle`` to an equivalent deployment) and ``await task.remote(i)``
   (a Ray task). The timing runs inside the endpoint's replica.
2. ``list(noop.map(range(N)))`` from the driver against ``ray.get([task.remote(i) ...])``.
3. The spawned-results store after ``--spawns`` spawns: its calls, bytes, and the results
   actor's resident memory.

Appends a section to bench/RESULTS.md.
"""

import argparse
import asyncio
import datetime
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results  # noqa: E402

import rayweb  # noqa: E402

app = rayweb.App("bench-calls")


@app.function(min_containers=1, max_containers=1)
@rayweb.concurrent(max_inputs=64)
async def noop(x: int) -> int:
    return x


@app.function(min_containers=1, max_containers=1)
@rayweb.concurrent(max_inputs=64)
@rayweb.asgi_app()
def probe():
    import ray
    from fastapi import FastAPI
    from ray import serve

    web = FastAPI()

    @ray.remote(num_cpus=0)
    def task(x: int) -> int:
        return x

    async def timed(call, n: int, callers: int) -> list[float]:
        latencies: list[float] = []

        async def worker(count: int) -> None:
            for i in range(count):
                started = time.perf_counter()
                assert await call(i) == i
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(n // callers) for _ in range(callers)))
        return latencies

    @web.get("/bench")
    async def bench(n: int = 600, callers: int = 1) -> dict:
        raw = serve.get_app_handle("bench-calls-raw")
        forms = {
            "rayweb .remote.aio": lambda i: noop.remote.aio(i),
            "Serve DeploymentHandle": lambda i: raw.remote(i),
            "Ray task": lambda i: task.remote(i),
        }
        out = {}
        for name, call in forms.items():
            await timed(call, min(n, 64), callers)  # warm
            out[name] = sorted(await timed(call, n, callers))
        return out

    return web


def _raw_deployment():
    from ray import serve

    @serve.deployment(
        name="raw",
        max_ongoing_requests=64,
        num_replicas=1,
        ray_actor_options={"num_cpus": 0.1},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    class Raw:
        async def __call__(self, x: int) -> int:
            return x

    return Raw.bind()


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=640)
    parser.add_argument("--map-inputs", type=int, default=10_000)
    parser.add_argument("--spawns", type=int, default=100_000)
    options = parser.parse_args()

    import httpx
    import psutil
    import ray
    from ray import serve

    from rayweb.driver import cluster
    from rayweb.services.results import results_actor

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    held = cluster.hold()
    try:
        cluster.ensure_serve("127.0.0.1", 18390)
        serve.run(_raw_deployment(), name="bench-calls-raw", route_prefix=None)
        with rayweb.serve(app, port=18390, quiet=True) as handle:
            url = handle.urls["probe"] + "/bench"
            rows = []
            for callers in (1, 32):
                got = httpx.get(url, params={"n": options.calls, "callers": callers}, timeout=600)
                for name, latencies in got.json().items():
                    rows.append((name, callers, _pct(latencies, 0.5), _pct(latencies, 0.99)))

            @ray.remote(num_cpus=0)
            def task(x: int) -> int:
                return x

            n = options.map_inputs
            ray.get([task.remote(i) for i in range(100)])  # warm
            started = time.perf_counter()
            assert ray.get([task.remote(i) for i in range(n)]) == list(range(n))
            ray_rate = n / (time.perf_counter() - started)
            list(noop.map(range(100)))  # warm
            started = time.perf_counter()
            assert list(noop.map(range(n))) == list(range(n))
            map_rate = n / (time.perf_counter() - started)

            async def spawn_all() -> None:
                for start in range(0, options.spawns, 1000):
                    count = min(1000, options.spawns - start)
                    await asyncio.gather(*(noop.spawn.aio(i) for i in range(count)))

            started = time.perf_counter()
            asyncio.run(spawn_all())
            spawn_s = time.perf_counter() - started
            store = results_actor()
            deadline = time.monotonic() + 600
            while (now := ray.get(store.stats.remote()))["running"]:
                print("results store:", now, flush=True)
                assert time.monotonic() < deadline, f"spawned calls never finished: {now}"
                time.sleep(5)
            stats = ray.get(store.stats.remote())
            pid = next(
                p.pid
                for p in psutil.process_iter(["cmdline"])
                if "ResultsActor" in " ".join(p.info["cmdline"] or [])
            )
            rss_mib = psutil.Process(pid).memory_info().rss / 2**20
        serve.delete("bench-calls-raw")
    finally:
        if held:
            cluster.release()

    lines = [
        f"## {datetime.date.today()}: function calls (bench/calls.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {options.calls} calls per row, timed inside a web "
        "endpoint's replica, warm.",
        "",
        "| call | concurrent callers | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {c} | {p50:.2f} | {p99:.2f} |" for name, c, p50, p99 in rows]
    lines += [
        "",
        f"`.map()` over {n:,} trivial inputs from the driver: {map_rate:,.0f} inputs/s; "
        f"`ray.get([task.remote(i) ...])`: {ray_rate:,.0f} inputs/s.",
        "",
        f"{options.spawns:,} spawns ({spawn_s:.1f} s): the results store holds "
        f"{stats['calls']:,} calls, {stats['bytes'] / 2**20:.1f} MiB of pickled results; the "
        f"results actor's resident memory: {rss_mib:.0f} MiB.",
        "",
    ]
    print("\n".join(lines))
    append_results(HERE / "RESULTS.md", lines)


if __name__ == "__main__":
    main()
