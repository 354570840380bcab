"""Helpers of the tests that start Ray clusters of their own on this machine: run `rayweb
serve` on one, ask its gateway something from a separate driver, stop both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from tests.e2e.test_deploy import RAYWEB, _run


def gateway_call(address: str, method: str, *args: Any) -> Any:
    """``method(*args)`` of the gateway of the cluster at ``address``, from a driver of its
    own (with the machine's Ray token, as Ray 2.60 clusters want)."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "from rayweb.services.gateway import find_gateway\n"
        f"print(json.dumps(ray.get(find_gateway().{method}.remote(*{args!r}))))\n"
    )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_serve(
    script: Any, name: str, port: int, env: dict[str, str], *args: str
) -> subprocess.Popen:
    """`rayweb serve <script> --address <name> --port <port> [args]` in the background."""
    return subprocess.Popen(
        [*RAYWEB, "serve", str(script), "--address", name, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def stop_serve_and_cluster(serve: subprocess.Popen, name: str, env: dict[str, str]) -> None:
    """Ctrl-C the `rayweb serve` process, then `rayweb cluster down` the cluster."""
    serve.send_signal(signal.SIGINT)
    try:
        serve.wait(60)
    except subprocess.TimeoutExpired:
        serve.kill()
    down = _run("cluster", "down", "--name", name, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
