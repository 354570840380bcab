"""Benchmark: seconds from saving a file to the new code answering, under `rayweb serve`.

    python bench/reload.py [--rounds 5]

A one-endpoint CPU app in a temporary folder; each round rewrites the returned version and
polls the URL every 10 ms until it changes. Appends a section to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import append_results, free_port, wait_200  # noqa: E402

APP = """
import rayweb

app = rayweb.App("reload-bench")


@app.function()
@rayweb.fastapi_endpoint()
def version() -> str:
    return "VERSION"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rayweb-reload-"))
    script = folder / "reload_app.py"
    script.write_text(APP.replace("VERSION", "v0"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rayweb.cli", "serve", str(script), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/reload-bench-version-dev"
    times = []
    try:
        wait_200(url)
        time.sleep(2)
        for i in range(1, args.rounds + 1):
            start = time.monotonic()
            script.write_text(APP.replace("VERSION", f"v{i}"))
            while httpx.get(url).json() != f"v{i}":
                time.sleep(0.01)
            times.append(time.monotonic() - start)
            time.sleep(3)  # let the old replica drain
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    lines = [
        f"## {datetime.date.today().isoformat()}: hot reload, save to new code answering",
        "",
        f"Command: `python bench/reload.py --rounds {args.rounds}`. One CPU fastapi_endpoint.",
        "",
        "Seconds: "
        + ", ".join(f"{t:.2f}" for t in times)
        + f" (median {statistics.median(times):.2f}).",
        "",
    ]
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
