"""Benchmark: seconds from an endpoint's last request to zero replicas, against the
``scaledown_window`` it declares (Modal's idle time before a container stops).

    python bench/scaledown.py [--windows 2 10] [--trials 2] [--out bench/RESULTS.md]

One trivial ``fastapi_endpoint`` per window (``min_containers=0``) on an embedded Ray: a
request through the gateway, then ``serve.status()`` polled every 0.25 s: when the last
replica is no longer running (Serve decided; it drains and stops) and when none is left.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
from run import append_results, free_port  # noqa: E402

import rayweb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    from ray import serve

    from rayweb.driver import cluster

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    app = rayweb.App("scaledown")
    for window in args.windows:

        def hello() -> str:
            return "hi"

        hello.__name__ = hello.__qualname__ = f"idle{window}"
        app.function(serialized=True, min_containers=0, scaledown_window=window)(
            rayweb.fastapi_endpoint()(hello)
        )
    handle = rayweb.serve(app, port=free_port(), quiet=True)
    rows = []
    try:
        for window in args.windows:
            label = handle.labels[f"idle{window}"]

            def replicas() -> tuple[int, int]:
                """(running, in any state)"""
                deployments = serve.status().applications[label].deployments.values()  # noqa: B023
                states = [s for d in deployments for s in d.replica_states.items()]
                running = sum(n for state, n in states if str(state).endswith("RUNNING"))
                return running, sum(n for _state, n in states)

            stopping, gone = [], []
            for _trial in range(args.trials):
                assert httpx.get(handle.urls[f"idle{window}"], timeout=120).status_code == 200
                start, asked = time.monotonic(), None
                while (counts := replicas())[1] > 0:
                    if counts[0] == 0 and asked is None:
                        asked = time.monotonic() - start
                    time.sleep(0.25)
                gone.append(time.monotonic() - start)
                stopping.append(asked if asked is not None else gone[-1])
            rows.append(
                f"| {window} | {', '.join(f'{s:.1f}' for s in stopping)} "
                f"| {', '.join(f'{s:.1f}' for s in gone)} "
                f"| {statistics.median(stopping) - window:+.1f} |"
            )
    finally:
        handle.stop()
        cluster.stop_embedded()
    append_results(
        Path(args.out),
        [
            f"## {datetime.date.today().isoformat()}: scaledown_window to zero replicas "
            "(bench/scaledown.py)",
            "",
            "Seconds from the last request to no replica at all (stopped, not stopping), one "
            "trivial endpoint per window, 2 cores. Command: `python bench/scaledown.py`.",
            "",
            "| scaledown_window s | to no running replica (stopping), s | to no replica at all, s "
            "| stopping: median vs window |",
            "|---|---|---|---|",
            *rows,
            "",
        ],
    )


if __name__ == "__main__":
    main()
