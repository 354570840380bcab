"""Benchmark: what the gateway's request metrics cost (HAProxy's line per request, read by
the gateway actor and recorded in Serve's request metrics), and what a scrape costs.

    python bench/metrics.py [--duration 10] [--rounds 2] [--out bench/RESULTS.md]

Each round starts a fresh embedded Ray (in a child process) with ``RAYWEB_REQUEST_METRICS``
off, then on, serves run.py's trivial GET (one replica, 32 inputs) and measures with wrk at 1
and 32 clients: req/s, p50, p99, and the CPU the gateway actor used per 1,000 requests. With
metrics on, it also times 10 scrapes of Ray's metrics endpoint. Best req/s of the rounds.
Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run import APP_SOURCE, append_results, free_port, wrk  # noqa: E402

CLIENTS = (1, 32)


def child(setting: str, duration: int) -> dict[str, object]:
    """One fresh Ray with the setting; the figures as JSON-able data."""
    os.environ["RAYWEB_REQUEST_METRICS"] = "1" if setting == "on" else "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    work = HERE / "out"
    work.mkdir(exist_ok=True)
    (work / "bench_app.py").write_text(APP_SOURCE)
    sys.path.insert(0, str(work))
    import bench_app
    import psutil
    import ray

    import rayweb
    from rayweb.driver import cluster
    from rayweb.services.gateway import find_gateway

    handle = rayweb.serve(bench_app.app, port=free_port(), quiet=True)
    try:
        gateway = psutil.Process(ray.get(find_gateway().pid.remote()))
        cells = {}
        for clients in CLIENTS:
            before = sum(gateway.cpu_times()[:2])
            cell = wrk(handle.urls["hello"], clients, duration)
            used = sum(gateway.cpu_times()[:2]) - before
            cell["gateway_ms_per_1k"] = 1e6 * used / max(1.0, cell["rps"] * duration)
            cells[str(clients)] = cell
        scrape: dict[str, float] = {}
        if setting == "on":
            port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
            times, size = [], 0
            for _ in range(10):
                start = time.perf_counter()
                size = len(httpx.get(f"http://127.0.0.1:{port}/metrics").content)
                times.append(time.perf_counter() - start)
            scrape = {"ms": 1000 * sorted(times)[len(times) // 2], "kib": size / 1024}
        return {"cells": cells, "scrape": scrape}
    finally:
        handle.stop()
        cluster.stop_embedded()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.duration)), flush=True)
        return
    best: dict[str, dict[str, dict[str, float]]] = {}
    scrape: dict[str, float] = {}
    for _round in range(args.rounds):
        for setting in ("off", "on"):  # interleaved, so drift hits both alike
            out = subprocess.run(
                [sys.executable, __file__, "--child", setting, "--duration", str(args.duration)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.split("RESULT ", 1)[1])
            scrape = result["scrape"] or scrape
            for clients, cell in result["cells"].items():
                kept = best.setdefault(setting, {}).get(clients)
                if kept is None or cell["rps"] > kept["rps"]:
                    best[setting][clients] = cell
    lines = [
        f"## {datetime.date.today().isoformat()}: the gateway's request metrics "
        f"(bench/metrics.py, wrk {args.duration}s, best of {args.rounds})",
        "",
        f"Machine: {os.cpu_count()} cores, wrk on the same cores; run.py's trivial GET, one "
        "replica, 32 inputs. `gateway CPU` is the gateway actor's (where HAProxy's lines are "
        "read and Serve's metrics recorded) per 1,000 requests.",
        "Command: `python bench/metrics.py`.",
        "",
        "| metrics | clients | req/s | p50 ms | p99 ms | gateway CPU ms / 1k req |",
        "|---|---|---|---|---|---|",
    ]
    for setting in ("off", "on"):
        for clients in map(str, CLIENTS):
            c = best[setting][clients]
            lines.append(
                f"| {setting} | {clients} | {c['rps']:.0f} | {c['p50']:.2f} | {c['p99']:.2f} "
                f"| {c['gateway_ms_per_1k']:.1f} |"
            )
    if scrape:
        lines += [
            "",
            f"A scrape of Ray's metrics endpoint with the metrics on: {scrape['ms']:.1f} ms "
            f"median of 10, {scrape['kib']:.0f} KiB.",
            "",
        ]
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
