"""``rayweb run`` as a user types it: a local entrypoint with its arguments, one function
run remotely, the entrypoint's --help, and a bad argument (a real subprocess each)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import EXAMPLES

RAYWEB = [sys.executable, "-m", "rayweb.cli"]
EXAMPLE = str(EXAMPLES / "local_entrypoint.py")


def rayweb_run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAYWEB, "run", "--port", "18395", *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_entrypoint_s_arguments_are_listed_and_checked_before_anything_starts():
    shown = rayweb_run(EXAMPLE, "--help", timeout=60)
    assert shown.returncode == 0, shown.stderr
    for option in ("--n", "--label", "--total / --no-total"):
        assert option in shown.stdout
    bad = rayweb_run(EXAMPLE, "--n", "many", timeout=60)
    assert bad.returncode == 2 and "Invalid value for '--n'" in bad.stderr
    unknown = rayweb_run(f"{EXAMPLE}::nothing", timeout=60)
    assert unknown.returncode == 1
    assert "No local entrypoint or function 'nothing'" in unknown.stderr
    assert "main, square" in unknown.stderr


def test_rayweb_run_calls_the_entrypoint_and_a_function_on_ray():
    entry = rayweb_run(EXAMPLE, "--n", "4", "--label", "sq")
    assert entry.returncode == 0, entry.stderr
    assert "sq [0, 1, 4, 9]" in entry.stdout
    function = rayweb_run(f"{EXAMPLE}::square", "--x", "7")
    assert function.returncode == 0, function.stderr
    assert function.stdout.strip().splitlines()[-1] == "49"
