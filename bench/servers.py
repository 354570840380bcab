"""Benchmark: what ``@app.server`` adds over calling the server directly, and how sticky its
sessions stay while it scales out.

    python bench/servers.py [--duration 10] [--out bench/RESULTS.md]

In one run on loopback:
- GET / latency (p50/p99) and req/s at 1 client with the aiohttp example server: direct to
  its process, through rayweb's direct hop (gateway's HAProxy -> server, the default) and
  through the replica's path (``RAYWEB_DIRECT_HOP=0``: gateway -> replica -> reverse proxy ->
  server); WebSocket echo round trips per second each way (one client, sequential);
- stickiness: 24 sessions (``Modal-Session-Id``) send 2-second requests back to back, plus
  session-less traffic, to a Server with ``target_concurrency=1``, 2 to 4 containers: the share
  of each session's requests that reached the container of its first request, and how many
  containers served.
Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run import append_results, free_port, wrk, ws_round_trips  # noqa: E402
from web_server import AIOHTTP, direct_aiohttp  # noqa: E402

SESSIONS = 24


def build_app(rayweb, name="bench-servers", sticky=True):  # noqa: ANN001, ANN201
    from examples.server_sticky import SERVER

    app = rayweb.App(name, limits=rayweb.Limits(rate_limit=1e6))

    @app.server(port=8000, unauthenticated=True, min_containers=1, serialized=True)
    class Aio:
        @rayweb.enter()
        def start(self):
            subprocess.Popen([sys.executable, AIOHTTP, "--serve", "8000"])

    if not sticky:
        return app

    @app.server(
        port=8001,
        unauthenticated=True,
        target_concurrency=1,
        min_containers=2,
        max_containers=4,
        scaledown_window=60,
        serialized=True,
    )
    class Sticky:
        @rayweb.enter()
        def start(self):
            subprocess.Popen([sys.executable, "-c", SERVER, "8001"])

    return app


def stickiness(url: str, seconds: float) -> tuple[float, int, int]:
    """(share of session requests at their first container, requests, containers seen)."""
    seen: dict[str, list[int]] = {f"s{i}": [] for i in range(SESSIONS)}
    containers: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    def session(name: str) -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                r = client.get(url + "/slow", headers={"Modal-Session-Id": name})
                if r.status_code == 200:
                    seen[name].append(r.json()["container"])

    def plain() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                r = client.get(url + "/slow")
                if r.status_code == 200:
                    containers[r.json()["container"]] += 1

    threads = [threading.Thread(target=session, args=(n,)) for n in seen]
    threads += [threading.Thread(target=plain) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(len(v) for v in seen.values())
    home = sum(v.count(v[0]) for v in seen.values() if v)
    for values in seen.values():
        containers.update(values)
    return home / max(1, total), total, len(containers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--sticky-seconds", type=float, default=60)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()

    import rayweb
    from rayweb.driver import cluster

    rows: list[tuple[str, dict[str, float], float]] = []
    rows.append(("aiohttp server, direct", *direct_aiohttp(args.duration)))

    port = free_port()
    with rayweb.serve(build_app(rayweb), port=port, quiet=True) as handle:
        url = handle.urls["Aio"]
        ws = ws_round_trips(url.replace("http://", "ws://") + "/ws", args.duration / 2)
        rows.append(("as an @app.server (direct hop)", wrk(url + "/", 1, args.duration), ws))
        share, requests, containers = stickiness(handle.urls["Sticky"], args.sticky_seconds)
    os.environ["RAYWEB_DIRECT_HOP"] = "0"  # read when the app is compiled
    with rayweb.serve(build_app(rayweb, "bench-servers-replica", False), port=port) as handle:
        url = handle.urls["Aio"]
        ws = ws_round_trips(url.replace("http://", "ws://") + "/ws", args.duration / 2)
        row = ("as an @app.server (replica's path)", wrk(url + "/", 1, args.duration), ws)
        rows.append(row)
    cluster.stop_embedded()
    write(Path(args.out), rows, args.duration, (share, requests, containers, args.sticky_seconds))


def write(
    out: Path,
    rows: list[tuple[str, dict[str, float], float]],
    duration: int,
    sticky: tuple[float, int, int, float],
) -> None:
    direct, proxied, replica = (r[1] for r in rows)
    share, requests, containers, seconds = sticky
    lines = [
        f"## {datetime.date.today().isoformat()}: @app.server (1 client, wrk {duration}s)",
        "",
        "Command: `python bench/servers.py`. Same machine as above. The direct hop: the "
        "gateway's HAProxy sends requests to the server's port; the replica's path "
        "(`RAYWEB_DIRECT_HOP=0`) goes through the replica's Python proxy.",
        "",
        "| path | req/s | p50 ms | p99 ms | WS echo round trips/s |",
        "|---|---|---|---|---|",
    ]
    for name, r, ws in rows:
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {ws:.0f} |")
    lines += [
        "",
        f"Added over calling the server directly: {proxied['p50'] - direct['p50']:.2f} ms at "
        f"p50, {proxied['p99'] - direct['p99']:.2f} ms at p99 on the direct hop (goal: at "
        f"most 0.5 ms at p50); {replica['p50'] - direct['p50']:.2f} ms and "
        f"{replica['p99'] - direct['p99']:.2f} ms on the replica's path.",
        "",
        f"Stickiness: {SESSIONS} sessions of back-to-back 2 s requests plus 8 session-less "
        f"clients for {seconds:.0f} s, `target_concurrency=1`, 2 to 4 containers: "
        f"{share:.1%} of {requests} session requests reached their session's first container; "
        f"{containers} containers served.",
        "",
    ]
    append_results(out, lines)


if __name__ == "__main__":
    main()
