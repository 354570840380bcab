"""Benchmark: class variants and parameter sets (a pool each), and spawn_map.

    python bench/variants.py [--rounds 5] [--calls 300] [--spawn-map 10000]

1. First call of a new variant (``Model.with_options(cpu=...)``) and of a new parameter set
   (``Model(size=k)``): save to result, each a new Serve application started at that call
   (compile, claim, deploy, replica process, ``@enter``), median and worst of ``--rounds``.
2. Warm ``.remote()`` round trip from the driver to the class's own pool and to a variant's
   (the variant's extra step is a freshness check), p50/p99 of ``--calls`` calls.
3. ``f.spawn_map(range(N))``: seconds until it returns, and until every input ran.

Appends a section to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results  # noqa: E402

import rayweb  # noqa: E402

app = rayweb.App("bench-variants")


@app.cls(cpu=0.05, scaledown_window=60)
class Model:
    size: int = rayweb.parameter(default=0)

    @rayweb.enter()
    def load(self):
        self.weights = [self.size] * 1000

    @rayweb.method()
    async def predict(self, x: int) -> int:
        return x + self.weights[0]


@app.function(scaledown_window=60)
@rayweb.concurrent(max_inputs=64)
def touch(i: int, folder: str) -> None:
    Path(folder, str(i)).touch()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--spawn-map", type=int, default=10_000)
    options = parser.parse_args()

    from rayweb.driver import cluster

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    held = cluster.hold()
    try:
        cluster.ensure_serve("127.0.0.1", 18391)
        with rayweb.serve(app, port=18391, quiet=True):
            Model().predict.remote(1)  # the class's pool, warm
            variant_s = [
                _timed(lambda k=k: Model.with_options(cpu=0.05 + 0.01 * k)().predict.remote(1))
                for k in range(1, options.rounds + 1)
            ]
            params_s = [
                _timed(lambda k=k: Model(size=k).predict.remote(1))
                for k in range(1, options.rounds + 1)
            ]
            warm = Model.with_options(cpu=0.06)
            rows = []
            for name, cls in (("the class's pool", Model), ("a variant's pool", warm)):
                cls().predict.remote(1)
                latencies = [
                    _timed(lambda c=cls: c().predict.remote(1)) for _ in range(options.calls)
                ]
                rows.append((name, _pct(latencies, 0.5) * 1e3, _pct(latencies, 0.99) * 1e3))
            with tempfile.TemporaryDirectory() as folder:
                touch.remote(-1, folder)  # warm
                n = options.spawn_map
                started = time.perf_counter()
                touch.spawn_map(range(n), kwargs={"folder": folder})
                returned_s = time.perf_counter() - started
                deadline = time.monotonic() + 600
                while len(os.listdir(folder)) < n + 1:
                    assert time.monotonic() < deadline, "spawn_map inputs never all ran"
                    time.sleep(0.1)
                done_s = time.perf_counter() - started
    finally:
        if held:
            cluster.release()

    lines = [
        f"## {datetime.date.today()}: class variants and spawn_map (bench/variants.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; from the driver, on an embedded local Ray.",
        "",
        f"First call of a new variant (`with_options(cpu=...)`), {options.rounds} rounds: median "
        f"{statistics.median(variant_s):.2f} s, worst {max(variant_s):.2f} s; of a new "
        f"parameter set (`Model(size=k)`): median {statistics.median(params_s):.2f} s, worst "
        f"{max(params_s):.2f} s.",
        "",
        "| warm `.remote()` to | p50 (ms) | p99 (ms) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {p50:.2f} | {p99:.2f} |" for name, p50, p99 in rows]
    lines += [
        "",
        f"`spawn_map` over {n:,} inputs: returned after {returned_s:.2f} s; every input had run "
        f"after {done_s:.1f} s ({n / done_s:,.0f} inputs/s).",
        "",
    ]
    print("\n".join(lines))
    append_results(HERE / "RESULTS.md", lines)


if __name__ == "__main__":
    main()
