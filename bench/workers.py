"""Benchmark: N replicas behind rayweb's gateway against ``uvicorn --workers N``.

    python bench/workers.py [--replicas 2] [--duration 10] [--rounds 2] [--out bench/RESULTS.md]

The trivial sync GET of ``bench/run.py`` as one rayweb endpoint with exactly N replicas (32
inputs each; HAProxy spreads requests over them, least connections first), and the same
FastAPI route on ``uvicorn --workers N`` (access log off), measured with wrk at 32 and 64
clients, interleaved, best of the rounds per cell.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import APP_SOURCE, append_results, free_port, plain_uvicorn, wait_200, wrk  # noqa: E402

CLIENTS = (32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    n = args.replicas
    work = HERE / "out"
    work.mkdir(exist_ok=True)
    source = APP_SOURCE.replace(
        "min_containers=1, max_containers=1", f"min_containers={n}, max_containers={n}"
    )
    assert source != APP_SOURCE, "bench/run.py's app no longer pins its replicas"
    (work / "bench_workers_app.py").write_text(source)
    sys.path.insert(0, str(work))
    import bench_workers_app

    import rayweb
    from rayweb.driver import cluster

    best: dict[tuple[str, int], dict[str, float]] = {}

    def keep(name: str, clients: int, url: str) -> None:
        got = wrk(url, clients, args.duration)
        if got["rps"] > best.get((name, clients), {"rps": 0.0})["rps"]:
            best[(name, clients)] = got

    rayweb_name = f"rayweb, {n} replicas"
    uvicorn_name = f"uvicorn --workers {n}"
    handle = rayweb.serve(bench_workers_app.app, port=free_port(), quiet=True)
    try:
        url = handle.urls["hello"]
        wait_200(url)
        with plain_uvicorn("bench_workers_app:api", work, workers=n) as uv_url:
            # Both run at once, idle in turn: the same machine state (Ray's own processes up).
            for _ in range(args.rounds):
                for clients in CLIENTS:
                    keep(rayweb_name, clients, url)
                    keep(uvicorn_name, clients, uv_url)
    finally:
        handle.stop()
        cluster.stop_embedded()

    lines = [
        f"## {datetime.date.today().isoformat()}: {n} replicas against uvicorn --workers {n} "
        "(bench/workers.py)",
        "",
        f"Trivial sync GET, wrk {args.duration}s per cell, best of {args.rounds} interleaved "
        "rounds, both servers up for the whole run (Ray's processes too), 2 cores (wrk on the "
        f"same cores). Command: `python bench/workers.py --replicas {n}`.",
        "",
        "| server | clients | req/s | p50 ms | p99 ms | non-2xx | vs uvicorn |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (rayweb_name, uvicorn_name):
        for clients in CLIENTS:
            got = best[(name, clients)]
            ratio = got["rps"] / best[(uvicorn_name, clients)]["rps"]
            lines.append(
                f"| {name} | {clients} | {got['rps']:.0f} | {got['p50']:.2f} | {got['p99']:.2f} "
                f"| {got['errors']:.0f} | {ratio:.2f}x |"
            )
    lines.append("")
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
