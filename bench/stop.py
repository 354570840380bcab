"""Benchmark: seconds from Ctrl-C to `rayweb serve` exiting, and what is left running.

    python bench/stop.py [--at -1 5 12]

Each trial starts `rayweb serve examples/fastapi_endpoint.py --no-reload` on a free port and
sends SIGINT at a moment: ``-1`` once it prints "Serving.", else that many seconds after it
started (during start-up). It then scans for Ray, HAProxy or keeper processes that name the
trial's session (none may be left). Appends a section to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import append_results, free_port  # noqa: E402


def trial(at: float) -> tuple[float, float, int, int]:
    """(signal sent after s, exit after s, exit code, processes left)."""
    command = [
        sys.executable, "-m", "rayweb.cli", "serve", str(HERE.parent / "examples/fastapi_endpoint.py"),
        "--port", str(free_port()), "--no-reload",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=HERE.parent
    )
    if at < 0:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "Serving." in line:
                break
    else:
        time.sleep(at)
    below = psutil.Process(proc.pid).children(recursive=True)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    took = time.monotonic() - sent
    _, alive = psutil.wait_procs(below, timeout=10)
    return sent - started, took, proc.returncode, len(alive)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--at", type=float, nargs="+", default=[-1.0, 5.0, 12.0])
    args = parser.parse_args()
    rows = [trial(at) for at in args.at]
    lines = [
        f"## {datetime.date.today()}: Ctrl-C to exit, `rayweb serve` (bench/stop.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Example: examples/fastapi_endpoint.py (5 endpoints).",
        "",
        "| Ctrl-C at | after start (s) | exited after (s) | exit code | processes left |",
        "|---|---|---|---|---|",
    ]
    for at, (sent, took, code, left) in zip(args.at, rows, strict=True):
        moment = '"Serving."' if at < 0 else "start-up"
        lines.append(f"| {moment} | {sent:.1f} | {took:.2f} | {code} | {left} |")
    append_results(HERE / "RESULTS.md", lines + [""])


if __name__ == "__main__":
    main()
