"""Benchmark: one endpoint with two replicas on a one-node and on a two-node local cluster
(``rayweb cluster up [--workers 1]``: raylets on 127.0.0.1, the same cores), through the
gateway; and, on two nodes, the worker node's raylet SIGKILLed under steady load.

    python bench/multinode.py [--duration 10] [--out bench/RESULTS.md]

Per cluster: wrk at 1 and 32 clients (req/s, p50, p99). After the kill (4 clients, each
sending requests back to back): failed requests, the longest time without an answer, and
the seconds until the endpoint has two replicas again (both on the head). Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run import append_results, free_port, wait_200, wrk  # noqa: E402

from tests.e2e.steady import SteadyLoad  # noqa: E402
from tests.e2e.test_multinode import APP, _worker_raylet  # noqa: E402

RAYWEB = [sys.executable, "-m", "rayweb.cli"]
LOAD_THREADS = 4


def _cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run([*RAYWEB, *args], env=env, check=True, capture_output=True, timeout=300)


def run_cluster(workers: int, duration: int, work: Path) -> dict[str, object]:
    env = {**os.environ, "RAYWEB_CLUSTERS_DIR": str(work / "clusters")}
    name = f"b{uuid.uuid4().hex[:6]}"
    script = work / "twonode.py"
    script.write_text(APP)
    _cli("cluster", "up", "--name", name, "--num-cpus", "1", "--workers", str(workers), env=env)
    port = free_port()
    serve = subprocess.Popen(
        [*RAYWEB, "serve", str(script), "--address", name, "--port", str(port), "--no-reload"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/twonode-where-dev"
    try:
        wait_200(url)
        while len({httpx.get(url).json()["pid"] for _ in range(20)}) < 2:
            time.sleep(0.5)  # both replicas up
        out: dict[str, object] = {c: wrk(url, c, duration) for c in (1, 32)}
        if workers:
            out["kill"] = kill_worker(url, f"/tmp/rayweb-{name}-{os.getuid()}")
        return out
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(60)
        _cli("cluster", "down", "--name", name, env=env)


def kill_worker(url: str, temp_dir: str) -> dict[str, float]:
    two_on_head = None
    with SteadyLoad(url, clients=LOAD_THREADS, pause_s=0) as load:
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(_worker_raylet(temp_dir).pid, signal.SIGKILL)
        while time.monotonic() - killed_at < 60 and two_on_head is None:
            recent = load.answers[-40:]
            pids = {a["pid"] for t, a in recent if t > killed_at and not a["worker"]}
            if len(pids) >= 2:
                two_on_head = time.monotonic() - killed_at
            time.sleep(0.2)
    after = [t for t, _ in load.answers if t > killed_at]
    gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
    return {
        "failed": len(load.failures),
        "gap_s": max(gaps) if gaps else float("nan"),
        "two_on_head_s": two_on_head if two_on_head is not None else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run_cluster(0, args.duration, Path(tmp))
        two = run_cluster(1, args.duration, Path(tmp))
    lines = [
        f"## {datetime.date.today().isoformat()}: one node vs two nodes on this machine "
        f"(bench/multinode.py, wrk {args.duration}s)",
        "",
        f"Machine: {os.cpu_count()} cores, wrk on the same cores. One endpoint, two replicas "
        "(0.4 CPU, 8 inputs each), through the gateway; `rayweb cluster up --num-cpus 1 "
        "[--workers 1]`: the two-node cluster has a second raylet on the same cores, so this "
        "measures what the second node costs, not what it adds.",
        "Command: `python bench/multinode.py`.",
        "",
        "| nodes | clients | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for nodes, result in ((1, one), (2, two)):
        for clients in (1, 32):
            c = result[clients]
            assert isinstance(c, dict)
            lines.append(
                f"| {nodes} | {clients} | {c['rps']:.0f} | {c['p50']:.2f} | {c['p99']:.2f} "
                f"| {c['errors']:.0f} |"
            )
    kill = two["kill"]
    assert isinstance(kill, dict)
    lines += [
        "",
        f"The worker's raylet SIGKILLed under {LOAD_THREADS} clients: {kill['failed']} requests "
        f"failed (those in flight there), the longest time without an answer was "
        f"{kill['gap_s']:.2f} s, and two replicas answered from the head "
        f"{kill['two_on_head_s']:.1f} s after the kill.",
        "",
    ]
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
