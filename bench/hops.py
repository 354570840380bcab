"""Benchmark: where the steady-state gap to plain uvicorn is, hop by hop.

    python bench/hops.py [--duration 5] [--rounds 2] [--out bench/RESULTS.md]

The trivial GET of ``bench/run.py`` (one replica, 32 inputs), measured with wrk at 1 and 32
clients, and at 1 client with a new connection per request ("1 new"), and its WebSocket
echo (one client, 64-byte messages), three ways, interleaved: through the gateway (HAProxy,
then the replica's own port), straight to the replica's own port (the gateway's key header
added, as HAProxy adds it: the replica's chain and its Ray worker process, without
HAProxy), and plain uvicorn running the same FastAPI app. Best of the rounds per cell.

Besides the rates, each cell says how much CPU each server-side process spent per request
(per round trip for the echo), from ``/proc/<pid>/stat`` around the measured run: the
replica's Ray worker and the gateway's HAProxy worker, or uvicorn. On shared cores the rates
swing by 15-30% between runs; CPU per request moves much less, so it is what shows where
the gap is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import (  # noqa: E402
    APP_SOURCE,
    append_results,
    free_port,
    plain_uvicorn,
    wait_200,
    wrk,
    ws_round_trips,
)

TICKS = os.sysconf("SC_CLK_TCK")
WS = "ws echo"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def find_pids(*parts: str) -> list[int]:
    """Processes whose command line holds every one of ``parts``, oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            started = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            continue
        if all(part in command for part in parts):
            found.append((started, int(entry.name)))
    return [pid for _, pid in sorted(found)]


class Cells:
    """The best rate and the least CPU per request of each (path, cell)."""

    def __init__(self) -> None:
        self.rate: dict[tuple[str, str], float] = {}
        self.cpu: dict[tuple[str, str], dict[str, float]] = {}

    def run(
        self,
        path: str,
        cell: str,
        processes: dict[str, int],
        measure: Callable[[Callable[[], object]], tuple[float, float]],
    ) -> None:
        """``measure(before_main)`` returns (rate, seconds measured)."""
        start: dict[str, float] = {}

        def snapshot() -> None:
            start.update({name: cpu_seconds(pid) for name, pid in processes.items()})

        rate, seconds = measure(snapshot)
        done = rate * seconds
        per = {
            name: (cpu_seconds(pid) - start[name]) / done * 1e6 for name, pid in processes.items()
        }
        key = (path, cell)
        self.rate[key] = max(self.rate.get(key, 0.0), rate)
        kept = self.cpu.setdefault(key, per)
        for name, us in per.items():
            kept[name] = min(kept[name], us)


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

    cells = Cells()
    # wrk's clients per cell; "1 new" opens a connection per request (a browser's
    # EventSource, a webhook): the gateway's connections to the replica are what it tests.
    http_cells = {"1": (1, ()), "32": (32, ()), "1 new": (1, ("Connection: close",))}

    def keep(
        path: str,
        url: str,
        ws_url: str,
        processes: dict[str, int],
        ws_processes: dict[str, int],
        key: str = "",
    ) -> None:
        headers = (f"x-rayweb-gateway-key: {key}",) if key else ()
        for cell, (clients, extra) in http_cells.items():

            def get(before: Callable[[], object], clients: int = clients, extra=extra):
                found = wrk(
                    url, clients, args.duration, headers=headers + extra, before_main=before
                )
                return found["rps"], args.duration

            cells.run(path, cell, processes, get)

        def echo(before: Callable[[], object]) -> tuple[float, float]:
            ws_headers = {"x-rayweb-gateway-key": key} if key else None
            return ws_round_trips(ws_url, args.duration, ws_headers, before), args.duration

        cells.run(path, WS, ws_processes, echo)

    handle = rayweb.serve(bench_app.app, port=free_port(), quiet=True)
    try:
        import ray

        from rayweb.services.gateway import find_gateway, state_dir

        table = ray.get(find_gateway().table.remote())
        key = json.loads((state_dir() / "state.json").read_text())["key"]
        urls = {}
        for tag in ("hello", "ws"):
            label = handle.labels[tag]
            server = next(iter(table[label]["servers"].values()))
            urls[tag] = (
                handle.reach.path_url(label),
                f"http://{server['host']}:{server['port']}{table[label]['prefix']}",
                find_pids(f"ServeReplica:{label}:")[0],
            )
        haproxy = find_pids("haproxy", str(state_dir()))[-1]  # the newest: the worker
        gateway_url, own_url, replica = urls["hello"]
        ws_gateway, ws_own, ws_replica = urls["ws"]
        wait_200(gateway_url)
        for _ in range(args.rounds):
            keep(
                "through the gateway",
                gateway_url,
                f"ws{ws_gateway.removeprefix('http')}/ws",
                {"replica": replica, "HAProxy": haproxy},
                {"replica": ws_replica, "HAProxy": haproxy},
            )
            keep(
                "the replica's own port",
                own_url,
                f"ws{ws_own.removeprefix('http')}/ws",
                {"replica": replica},
                {"replica": ws_replica},
                key,
            )
    finally:
        handle.stop()
        cluster.stop_embedded()
    with plain_uvicorn("bench_app:api", work) as uv_url:
        uvicorn = find_pids("uvicorn", "bench_app:api")[-1]
        for _ in range(args.rounds):
            ws_url = f"ws{uv_url.removeprefix('http')}ws"
            keep("plain uvicorn", uv_url, ws_url, {"uvicorn": uvicorn}, {"uvicorn": uvicorn})

    lines = [
        f"## {datetime.date.today().isoformat()}: the steady-state gap hop by hop (bench/hops.py)",
        "",
        f"Trivial sync GET (wrk, {args.duration}s per cell) and a WebSocket echo (one client, "
        f"64-byte messages), best of {args.rounds} rounds, 2 cores (the client on the same "
        "cores); CPU is each server-side process's user + system time per request (per round "
        "trip for the echo), the least of the rounds. Command: `python bench/hops.py`.",
        "",
        "| path | clients | req/s | vs uvicorn | ms per request added over uvicorn (1 client) "
        "| CPU µs per request |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("through the gateway", "the replica's own port", "plain uvicorn"):
        for cell in [*http_cells, WS]:
            rate = cells.rate[(name, cell)]
            base = cells.rate[("plain uvicorn", cell)]
            added = f"{1000 / rate - 1000 / base:.3f}" if cell.startswith("1") or cell == WS else ""
            cpu = ", ".join(f"{proc} {us:.0f}" for proc, us in cells.cpu[(name, cell)].items())
            lines.append(f"| {name} | {cell} | {rate:.0f} | {rate / base:.2f}x | {added} | {cpu} |")
    lines.append("")
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
