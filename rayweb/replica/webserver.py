"""``@web_server`` endpoints: a sidecar actor per replica runs the user's server.

The replica (a light reverse proxy) creates one :class:`WebServerSidecar` in bundle 1 of its
own placement group, so the sidecar holds the endpoint's CPUs/GPUs/memory on the same node
and the proxy hop stays on loopback. The sidecar starts ``webserver_runner`` in a new
session (it runs ``@enter`` and the user's function, which starts the server), captures the
output, waits for the port and answers health checks. Stopping kills the whole process
group; the runner also kills it if the sidecar dies without stopping it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ..common import (
    CALLER_RAY_ENV,
    DEV_ENV,
    REMOTE_ENV,
    SIDECAR_PREFIX,
    USER_ERROR_BEGIN,
    UserCodeError,
    free_port,
    remote_error,
)
from ..services.actors import NAMESPACE
from ..spec import ReplicaPayload

PORTMAP_DIR = os.path.join(os.path.dirname(__file__), "portmap")
OUTPUT_LINES = 200  # kept for error messages
SHOWN_LINES = 20


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class WebServerSidecar:
    """Runs and supervises one replica's web server (a Ray actor; created by the replica)."""

    def __init__(self, payload: ReplicaPayload) -> None:
        self.payload = payload
        self.declared_port = payload.web.port or 0
        self.assigned_port = free_port()
        self.upstream_port: int | None = None
        self.taken = False  # the declared port was in use on this node before we started
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> int:
        """Start the server and wait (``startup_timeout``) until its port accepts connections."""
        from .deployment import mount_files, resolve_secrets

        secrets = await resolve_secrets(self.payload)
        mount_files(self.payload)  # the server's process inherits the volume root
        return await asyncio.get_running_loop().run_in_executor(None, self._start, secrets)

    def _start(self, secrets: dict[str, str]) -> int:
        from ray import cloudpickle

        fd, payload_file = tempfile.mkstemp(prefix="rayweb-webserver-", suffix=".pkl")
        with os.fdopen(fd, "wb") as f:
            cloudpickle.dump(self.payload, f)
        env = {**os.environ, **secrets}
        env[REMOTE_ENV] = "1"
        env["RAYWEB_ENDPOINT"] = self.payload.label
        # The server's own process is no Ray worker: its `.remote()` calls join this cluster
        # on first use (calls/handles.connected), and reach the -dev apps of a dev app.
        import ray

        env[CALLER_RAY_ENV] = ray.get_runtime_context().gcs_address
        if self.payload.dev:
            env[DEV_ENV] = "1"
        env["RAYWEB_PORT_MAP"] = f"{self.declared_port}={self.assigned_port}"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PORTMAP_DIR, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        # A port someone else holds on this node (another replica of a server that is not
        # written in Python and binds the declared port itself, or any other process) must
        # not be taken for ours: then only the mapped port counts.
        self.taken = bool(self.declared_port) and port_open(self.declared_port)
        ports = (self.assigned_port,) if self.taken else (self.assigned_port, self.declared_port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rayweb.replica.webserver_runner", payload_file],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + self.payload.web.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._raise_exited()
            for port in ports:
                if port_open(port):
                    self.upstream_port = port
                    return port
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"Waited too long for port {self.declared_port} to start accepting connections. "
            "Make sure the web server is bound to 0.0.0.0 (rather than localhost or 127.0.0.1), "
            f"or adjust `startup_timeout`.{self._taken_hint()}{self._tail()}"
        )

    def _taken_hint(self) -> str:
        if not self.taken:
            return ""
        return (
            f"\nPort {self.declared_port} was already taken on this node when the server "
            "started (by another replica of this endpoint, or another process). Servers "
            "written in Python get a port of their own per replica; one that is not binds the "
            "declared port itself, so only one replica per node can run. Suggestion: a "
            "`max_containers` no larger than the number of nodes, or start the server on the "
            "port in the RAYWEB_PORT_MAP environment variable (`8000=41234`: the right side)."
        )

    def _pump(self) -> None:
        """Keep the last lines of output for errors, and pass everything to the worker log."""
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            print(line, flush=True)

    def _tail(self) -> str:
        time.sleep(0.1)  # let the pump catch the last lines
        lines = list(self.output)[-SHOWN_LINES:]
        return ("\nLast lines of the server's output:\n" + "\n".join(lines)) if lines else ""

    def _raise_exited(self) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        time.sleep(0.1)
        text = "\n".join(self.output)
        begin = text.find(USER_ERROR_BEGIN)
        if begin >= 0:  # the user's function raised: pass its traceback on as is
            head = text[:begin].rstrip().splitlines()
            raise UserCodeError((head[-1] if head else "web_server failed") + "\n" + text[begin:])
        self.stop()
        raise RuntimeError(
            f"The web server process exited with code {code} before port "
            f"{self.declared_port} accepted connections.{self._taken_hint()}{self._tail()}"
        )

    def health(self) -> None:
        """Raise if the server process died or stopped accepting connections."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"the web server process exited (code {code}){self._tail()}")
        if self.upstream_port is None or not port_open(self.upstream_port, timeout=2):
            raise RuntimeError(
                f"the web server stopped accepting connections on its port{self._tail()}"
            )

    def info(self) -> dict[str, Any]:
        return {
            "pid": None if self.proc is None else self.proc.pid,
            "port": self.upstream_port,
            "node_ip": _node_ip(),
        }

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server and everything it started (its whole process group)."""
        if self.proc is None or self.proc.poll() is not None and not _group_alive(self.proc.pid):
            return
        _signal_group(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.05)
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


async def start_sidecar(payload: ReplicaPayload) -> tuple[Any, int]:
    """From inside a replica: create the sidecar in our placement group's bundle 1, start it."""
    import ray
    from ray.util import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    options: dict[str, Any] = dict(payload.sidecar or {})
    group = get_current_placement_group()
    if group is not None:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=1
        )
    actor_class: Any = ray.remote(WebServerSidecar)
    import uuid

    # Named so that `rayweb app logs` finds the server's output with its replica's.
    options.setdefault("name", f"{SIDECAR_PREFIX}{payload.label}:{uuid.uuid4().hex[:8]}")
    options.setdefault("namespace", NAMESPACE)
    sidecar = actor_class.options(max_concurrency=4, **options).remote(payload)
    try:
        port = await sidecar.start.remote()
    except BaseException as exc:
        ray.kill(sidecar)
        raise remote_error(exc) from None
    return sidecar, int(port)
