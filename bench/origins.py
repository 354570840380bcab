"""Benchmark: what matching an endpoint's own origin (``Host: <label>.localhost``) costs in
the gateway's HAProxy, against the path form, with 1 and with 200 routes. No Ray: the
gateway's real config (``render_config``) in front of an upstream that answers at once (a
second HAProxy returning 200), so the gateway's rules are most of the work. The figure that
matters is the gateway's CPU time per request (its processes' utime + stime over the run,
divided by the requests wrk counted): three processes on 2 cores make req/s bimodal from one
run to the next, CPU per request is not.

    python bench/origins.py [--duration 5] [--rounds 3] [--out bench/RESULTS.md]

The end-to-end figures (a replica behind the gateway, each form) are ``bench/run.py``'s
"rayweb (own origin)" rows. Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results, free_port  # noqa: E402

from rayweb.common import descendant_pids  # noqa: E402
from rayweb.services.haproxy import HAProxyProcess  # noqa: E402
from rayweb.services.haproxy_config import Route, Server, render_config  # noqa: E402

UPSTREAM = """global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend answer
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        up_port = free_port()
        (Path(folder) / "up").mkdir()
        upstream = HAProxyProcess(Path(folder) / "up", UPSTREAM.format(port=up_port))
        try:
            upstream.wait_listening("127.0.0.1", up_port)
            for count in (1, 200):
                rows += measure(Path(folder) / f"gw{count}", up_port, count, args)
        finally:
            upstream.stop()
    lines = [
        f"## {datetime.date.today().isoformat()}: host matching in the gateway (bench/origins.py)",
        "",
        "The gateway's HAProxy config in front of an upstream answering 200 at once (no Ray);",
        f"wrk {args.duration}s per cell, median of {args.rounds} interleaved rounds, on the same "
        "2 cores. The target is the middle route. Command: `python bench/origins.py`.",
        "",
        "| routes | form | clients | gateway CPU µs/request | req/s | origin vs path (CPU) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    append_results(Path(args.out), lines)


def measure(folder: Path, up_port: int, count: int, args: argparse.Namespace) -> list[str]:
    folder.mkdir()
    port = free_port()
    routes = {
        f"ep-{i}": Route(f"/ep-{i}", {"r": Server("127.0.0.1", up_port, 1000)})
        for i in range(count)
    }
    config = render_config(
        bind=("127.0.0.1", port),
        serve=("127.0.0.1", up_port),
        key="bench",
        routes=routes,
        domain="localhost",
        maxconn=4096,
    )
    gateway = HAProxyProcess(folder, config)
    target = f"ep-{count // 2}"
    forms = {
        "path": (f"http://127.0.0.1:{port}/{target}/", None),
        "origin": (f"http://127.0.0.1:{port}/", f"{target}.localhost:{port}"),
    }
    seen: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        gateway.wait_listening("127.0.0.1", port)
        time.sleep(0.5)  # the first health check
        pids = [gateway.master_pid or 0, *descendant_pids(gateway.master_pid or 0)]
        for _round in range(args.rounds):
            for form, (url, host) in forms.items():
                for clients in (1, 32):
                    run_wrk(url, 1, 1, host)  # warm-up
                    before = cpu_seconds(pids)
                    requests, rps = run_wrk(url, clients, args.duration, host)
                    used = cpu_seconds(pids) - before
                    seen.setdefault((form, clients), []).append((used / requests * 1e6, rps))
    finally:
        gateway.stop()
    rows = []
    for clients in (1, 32):
        path_cpu = statistics.median(cpu for cpu, _ in seen[("path", clients)])
        for form in forms:
            cpu = statistics.median(c for c, _ in seen[(form, clients)])
            rps = statistics.median(r for _, r in seen[(form, clients)])
            ratio = f"{cpu / path_cpu:.2f}x" if form == "origin" else ""
            rows.append(f"| {count} | {form} | {clients} | {cpu:.1f} | {rps:.0f} | {ratio} |")
    return rows


def run_wrk(url: str, clients: int, seconds: int, host: str | None) -> tuple[int, float]:
    """wrk's request count and req/s (every answer must be a 200)."""
    header = ["-H", f"Host: {host}"] if host else []
    threads = "-t1" if clients == 1 else "-t2"
    out = subprocess.run(
        ["wrk", threads, f"-c{clients}", f"-d{seconds}s", *header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Non-2xx" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return requests, rps


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


if __name__ == "__main__":
    main()
