"""Benchmark: where the steady-state gap to plain uvicorn is, hop by hop.

    python bench/hops.py [--duration 5] [--rounds 2] [--out bench/RESULTS.md]

The trivial GET of ``bench/run.py`` (one replica, 32 inputs), measured with wrk at 1 and 32
clients, and at 1 client with a new connection per request ("1 new"), three ways,
interleaved: through the gateway (HAProxy, then the replica's own port), straight to the
replica's own port (the gateway's key header added, as HAProxy adds it: the replica's chain
and its Ray worker process, without HAProxy), and plain uvicorn running the same FastAPI
app. Best of the rounds per cell.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import APP_SOURCE, append_results, free_port, plain_uvicorn, wait_200, wrk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    work = HERE / "out"
    work.mkdir(exist_ok=True)
    (work / "bench_app.py").write_text(APP_SOURCE)
    sys.path.insert(0, str(work))
    import bench_app

    import rayweb
    from rayweb.driver import cluster

    best: dict[tuple[str, str], float] = {}
    # wrk's clients per cell; "1 new" opens a connection per request (a browser's
    # EventSource, a webhook): the gateway's connections to the replica are what it tests.
    cells = {"1": (1, ()), "32": (32, ()), "1 new": (1, ("Connection: close",))}

    def keep(name: str, url: str, headers: tuple[str, ...] = ()) -> None:
        for cell, (clients, extra) in cells.items():
            rps = wrk(url, clients, args.duration, headers=headers + extra)["rps"]
            best[(name, cell)] = max(best.get((name, cell), 0.0), rps)

    port = free_port()
    handle = rayweb.serve(bench_app.app, port=port, quiet=True)
    try:
        import ray

        from rayweb.services.gateway import find_gateway, state_dir

        label = handle.labels["hello"]
        url = handle.reach.path_url(label)
        table = ray.get(find_gateway().table.remote())
        server = next(iter(table[label]["servers"].values()))
        key = json.loads((state_dir() / "state.json").read_text())["key"]
        own_port = f"http://{server['host']}:{server['port']}{table[label]['prefix']}"
        wait_200(url)
        for _ in range(args.rounds):
            keep("through the gateway", url)
            keep("the replica's own port", own_port, (f"x-rayweb-gateway-key: {key}",))
    finally:
        handle.stop()
        cluster.stop_embedded()
    with plain_uvicorn("bench_app:api", work) as uv_url:
        for _ in range(args.rounds):
            keep("plain uvicorn", uv_url)

    lines = [
        f"## {datetime.date.today().isoformat()}: the steady-state gap hop by hop (bench/hops.py)",
        "",
        f"Trivial sync GET, wrk {args.duration}s per cell, best of {args.rounds} rounds, 2 cores "
        "(wrk on the same cores). Command: `python bench/hops.py`.",
        "",
        "| path | clients | req/s | vs uvicorn | ms per request added over uvicorn (1 client) |",
        "|---|---|---|---|---|",
    ]
    for name in ("through the gateway", "the replica's own port", "plain uvicorn"):
        for cell in cells:
            rps = best[(name, cell)]
            base = best[("plain uvicorn", cell)]
            added = f"{1000 / rps - 1000 / base:.3f}" if cell.startswith("1") else ""
            lines.append(f"| {name} | {cell} | {rps:.0f} | {rps / base:.2f}x | {added} |")
    lines.append("")
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
