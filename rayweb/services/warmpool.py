"""Idle Ray workers kept started on the gateway's node, so that a new replica (a cold
deploy, a scale from zero) starts in a process that is already running.

Ray starts a new worker process for each actor it places: Python, ``import ray``, the core
worker's registration with the raylet, ~0.4 s of a 2-core machine before Serve's replica
code runs at all. The raylet can start idle workers ahead of time (its ``PrestartWorkers``
RPC, the one Ray uses for a job's first tasks): they hold no resources, are bound to no job
until used, and the next actor or task placed on the node takes one instead of starting a
process. ``WarmPool.top_up`` keeps at least ``RAYWEB_WARM_WORKERS`` (default 2, ``0``: off)
of them idle: it counts the raylet's idle and starting workers (children of the raylet titled
``ray::IDLE``, or still running ``default_worker.py``) and asks for the missing ones
(``GatewayTasks._keep_warm``, every second): a worker taken by a replica, or one that died,
is replaced within a second, as the next replica to wake from zero needs it.

The pool fits the apps: when replicas stop together (an app stopped or was replaced: a
restart of ``rayweb serve``, a redeploy), it grows to as many idle workers as stopped in the
largest such burst of the last hour, at most ``RAYWEB_WARM_WORKERS_MAX`` (default 8; each idle
worker holds ~130 MiB). So the next start of that app finds a warm worker for each replica.
It grows with spare CPU only, as starting a worker costs ~1 CPU-second that replicas which
are starting need more (on 2 cores a refill during a 5-endpoint deploy took a fifth of its
CPU): by one worker per round, not within ``QUIET_S`` of a replica's start or a pooled
worker being taken, and not while the node's CPUs were over half busy in the last round.

On a Ray that rayweb starts (the embedded one, ``rayweb cluster up``), every worker also
imports Serve's replica and rayweb's before it waits for work (``system_config``: Ray's
``preload_python_modules``), so a replica placed in a warm worker skips ~0.6 s of imports:
scale from zero here went from 1.7-2.5 s to 0.7-0.9 s (``bench/startup.py``).

What it cannot do: a replica whose runtime env differs from the node's default (an
``Image`` with packages, a shipped working dir) needs a worker started with that env, and
the raylet starts no worker while its node has no free CPU. Both fall back to Ray's own
start. The RPC is Ray's internal API; where it is missing or refused, the pool turns itself
off and says so once in the gateway's log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..common import child_pids

logger = logging.getLogger("rayweb.gateway")

WARM_WORKERS_ENV = "RAYWEB_WARM_WORKERS"
DEFAULT_WARM_WORKERS = 2
MAX_WARM_WORKERS_ENV = "RAYWEB_WARM_WORKERS_MAX"
DEFAULT_MAX_WARM_WORKERS = 8
QUIET_S = 1.0  # no refill this long after a replica started or a pooled worker was taken
BUSY_MAX = 0.5  # no refill while the node's CPUs were busier than this in the last round
BURST_GAP_S = 5.0  # replicas that stop closer together than this are one burst (an app)
BURST_MEMORY_S = 3600.0  # how long the pool keeps room for a burst
# The raylet does not reap them as idle before this (the pool renews them); after it, the ones
# beyond what the pool still wants are reaped once the node has more idle workers than CPUs.
KEEP_ALIVE_S = int(BURST_MEMORY_S)
# What each worker imports before its first task or actor (a replica's code, mostly Serve's).
PRELOAD_MODULES = ["ray.serve._private.replica", "rayweb.replica.deployment"]


# The same as a raylet reads it from its environment (comma-separated), for pods whose
# `ray start` rayweb does not run (KubeRay: JSON in rayStartParams needs shell quoting).
PRELOAD_ENV = "RAY_preload_python_modules"


def system_config() -> dict[str, Any]:
    """Ray's system config for a Ray that rayweb starts (head node; other nodes get it from
    the head)."""
    return {"preload_python_modules": PRELOAD_MODULES}


def _count_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return max(0, int(raw)) if raw else default
    except ValueError:
        logger.warning("%s=%r is not a number: keeping %d", name, raw, 0)
        return 0


def warm_workers() -> int:
    """How many idle workers to keep at least (``RAYWEB_WARM_WORKERS``, read where Ray
    starts)."""
    return _count_env(WARM_WORKERS_ENV, DEFAULT_WARM_WORKERS)


def max_warm_workers() -> int:
    """How many idle workers to keep at most (``RAYWEB_WARM_WORKERS_MAX``)."""
    return _count_env(MAX_WARM_WORKERS_ENV, DEFAULT_MAX_WARM_WORKERS)


def node_ip() -> str:
    """This node's address as Ray knows it (the host replicas here register with)."""
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:
        return ""


def _title(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def pooled_workers(raylet_pid: int) -> list[int]:
    """The raylet's workers that are idle or still starting (no actor or task yet)."""
    found = []
    for pid in child_pids(raylet_pid):
        title = _title(pid)
        if title.startswith(b"ray::IDLE") or b"default_worker.py" in title:
            found.append(pid)
    return found


class CpuMeter:
    """How busy this node's CPUs were since the last call (``/proc/stat``; None elsewhere)."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self.last: tuple[int, int] | None = None

    def busy(self) -> float | None:
        try:
            with open(self.path, "rb") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])
        last, self.last = self.last, (idle, total)
        if last is None or total <= last[1]:
            return None
        return 1.0 - (idle - last[0]) / (total - last[1])


class WarmPool:
    """At least ``size`` idle workers on the node of ``raylet_pid`` (this process's parent in
    an actor), as many as the largest recent burst of replica stops, at most ``ceiling``."""

    def __init__(
        self,
        size: int,
        raylet_pid: int,
        ceiling: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ceiling = max(size, DEFAULT_MAX_WARM_WORKERS if ceiling is None else ceiling)
        self.raylet_pid = raylet_pid
        self.clock = clock
        self.stub: Any = None
        self.off = size <= 0
        self.started = 0  # workers asked for since the pool began
        self.bursts: list[tuple[float, int]] = []  # (when the last replica stopped, how many)
        self.quiet_until = 0.0
        self.seen: int | None = None  # pooled workers at the last round
        self.cpu = CpuMeter()

    def replica_started(self) -> None:
        """A replica started on this node (it registered with the gateway)."""
        self.quiet_until = self.clock() + QUIET_S

    def replica_stopped(self) -> None:
        """A replica on this node left the gateway's table."""
        now = self.clock()
        self.bursts = [burst for burst in self.bursts if now - burst[0] < BURST_MEMORY_S]
        if self.bursts and now - self.bursts[-1][0] < BURST_GAP_S:
            self.bursts[-1] = (now, self.bursts[-1][1] + 1)
        else:
            self.bursts.append((now, 1))

    def wanted(self) -> int:
        """How many idle workers to keep now."""
        now = self.clock()
        self.bursts = [burst for burst in self.bursts if now - burst[0] < BURST_MEMORY_S]
        largest = max((count for _, count in self.bursts), default=0)
        return min(max(self.size, largest), self.ceiling)

    def missing(self, pooled: int, busy: float | None = None) -> int:
        """How many workers to ask for when ``pooled`` are idle or starting and the node's
        CPUs were ``busy`` (0-1; None: unknown) in the last round: up to the floor at once;
        beyond it one per round, and only while no replica is starting (a worker was just
        taken, or a replica just started) and the CPUs are not busy."""
        now = self.clock()
        if self.seen is not None and pooled < self.seen:
            self.quiet_until = max(self.quiet_until, now + QUIET_S)
        if self.off:
            return 0
        if pooled < self.size:  # the floor: at once, as the next replica to wake needs it
            asked = self.size - pooled
        elif now < self.quiet_until or (busy is not None and busy > BUSY_MAX):
            asked = 0
        else:
            asked = max(min(self.wanted() - pooled, 1), 0)
        self.seen = pooled + asked  # those asked for count from the next round on
        return asked

    def describe(self) -> dict[str, Any]:
        """The pool now, for ``rayweb cluster status``: idle (or starting) workers, the
        floor, the size it grows to now, its ceiling, and workers asked for so far."""
        idle = 0 if self.off else len(pooled_workers(self.raylet_pid))
        return {
            "off": self.off,
            "idle": idle,
            "floor": self.size,
            "wanted": 0 if self.off else self.wanted(),
            "ceiling": self.ceiling,
            "started": self.started,
        }

    def _connect(self) -> Any:
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import node_manager_pb2_grpc

        node_id = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
        return node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(address))

    def top_up(self) -> int:
        """Ask the raylet for the workers missing from the pool; how many were asked for."""
        if self.off:
            return 0
        missing = self.missing(len(pooled_workers(self.raylet_pid)), self.cpu.busy())
        if missing <= 0:
            return 0
        try:
            from ray.core.generated import common_pb2, node_manager_pb2

            if self.stub is None:
                self.stub = self._connect()
            messages: Any = node_manager_pb2  # generated code: no stubs for mypy
            languages: Any = common_pb2
            request = messages.PrestartWorkersRequest(
                language=languages.PYTHON,
                num_workers=missing,
                keep_alive_duration_secs=KEEP_ALIVE_S,
            )
            self.stub.PrestartWorkers(request, timeout=5)
        except (ImportError, AttributeError) as exc:  # a Ray without the RPC
            return self._turn_off(exc)
        except Exception as exc:
            code = getattr(exc, "code", None)
            refused = ("UNIMPLEMENTED", "UNAUTHENTICATED")
            if callable(code) and getattr(code(), "name", "") in refused:
                return self._turn_off(exc)
            self.stub = None  # the raylet may be restarting: connect again next round
            logger.debug("asking for warm workers failed", exc_info=True)
            return 0
        self.started += missing
        return missing

    def _turn_off(self, exc: BaseException) -> int:
        self.off = True
        logger.warning("rayweb: no warm workers on this node (%s: %s)", type(exc).__name__, exc)
        return 0
