"""Benchmark: failed requests and time to recovery when each process on a request's way is
SIGKILLed under steady load (one keep-alive client retrying idempotent GETs for up to 5 s).

    python bench/faults.py

Runs ``tests/integration/test_faults.py`` (a real local Ray; one row per victim) and
``tests/integration/test_bad_input.py`` (one row per hostile request) and appends both tables
to bench/RESULTS.md. Outage: first failed attempt to the next success.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import append_results  # noqa: E402


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "RAYWEB_FAULTS_REPORT": str(report)}
        modules = ["tests/integration/test_faults.py", "tests/integration/test_bad_input.py"]
        command = [sys.executable, "-m", "pytest", "-q", *modules]
        result = subprocess.run(command, cwd=HERE.parent, env=env)
        rows = _rows(report)
        bad_rows = _rows(report.with_name("faults-bad.jsonl"))
    lines = [
        f"## {datetime.date.today()}: SIGKILL under steady load (bench/faults.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"tests {'passed' if result.returncode == 0 else 'FAILED'}.",
        "",
        "| killed | requests | failed requests | failed attempts | outage (s) "
        "| recovered after (s) | worst growth of the others (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['victim']} | {row['requests']} | {row['failed_requests']} | "
            f"{row['failed_attempts']} | {row['outage_s']:.3f} | {row['recovery_s']} | "
            f"{row.get('worst_growth_mib', '')} |"
        )
    lines += [
        "",
        "Bad input over raw sockets (tests/integration/test_bad_input.py): what the client got",
        "",
        "| request | answer | seconds |",
        "|---|---|---|",
    ]
    growth = [row["worst_mib"] for row in bad_rows if "growth" in row]
    for row in bad_rows:
        if "growth" in row:
            continue
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.3f}"
        lines.append(f"| {row['case']} | {row['status']} | {seconds} |")
    if growth:
        lines += [
            "",
            f"Largest growth of any serving process (HAProxy, gateway actor, Serve's proxy, the "
            f"replica) during one bad request: {max(growth):.1f} MiB (bound 256 MiB).",
        ]
    append_results(HERE / "RESULTS.md", lines + [""])
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
