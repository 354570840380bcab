"""``rayweb cluster up/down/status``: a persistent local Ray head, loopback-only, with Ray's
token auth handled for the user.

``up`` runs ``ray start --head`` bound to 127.0.0.1 with its own temp dir, capped CPUs and
object store, and records the cluster in ``~/.rayweb/clusters/<name>.json``. ``down`` stops
exactly the processes of that cluster: those whose command line names its temp dir (never
``ray stop``, which would stop every Ray on the host).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..common import free_port
from ..exception import InvalidError, NotFoundError
from ..services.warmpool import system_config
from . import forkserver

STATE_DIR = Path.home() / ".rayweb" / "clusters"
DEFAULT_NAME = "default"


@dataclass
class LocalCluster:
    name: str
    address: str
    temp_dir: str
    dashboard: str
    started: float

    @property
    def state_file(self) -> Path:
        return state_file(self.name)

    def pids(self) -> list[int]:
        """The live processes of this cluster. Ray rewrites the titles (and with them the
        visible environment) of workers and agents, so a process counts if its command line
        names the cluster's temp dir, it runs in that dir (``ray start`` is started there),
        or it has a file open there (every Ray process writes its logs there)."""
        import psutil

        out = []
        for proc in psutil.process_iter(["pid", "cmdline", "status", "cwd"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["pid"] == os.getpid():
                continue
            cwd = proc.info["cwd"] or ""
            if in_dir(cwd, self.temp_dir) or any(
                names_dir(arg, self.temp_dir) for arg in proc.info["cmdline"] or []
            ):
                out.append(proc.info["pid"])
                continue
            with contextlib.suppress(psutil.Error):
                if any(in_dir(f.path, self.temp_dir) for f in proc.open_files()):
                    out.append(proc.info["pid"])
        return out


def in_dir(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or inside it, by whole path components: ``/tmp/rayweb-a-0``
    (another cluster's temp dir) is not inside ``/tmp/rayweb-a``."""
    directory = directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def names_dir(arg: str, directory: str) -> bool:
    """A command-line argument that names ``directory`` (or a path in it), alone or as the
    value of an option (``--temp-dir=...``, ``--flag=a,b``)."""
    for token in arg.replace("=", " ").replace(",", " ").split():
        if in_dir(token.strip("'\""), directory):
            return True
    return False


def state_file(name: str) -> Path:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidError(f"Invalid cluster name {name!r}: use letters, digits, '-' or '_'.")
    return Path(os.environ.get("RAYWEB_CLUSTERS_DIR") or STATE_DIR) / f"{name}.json"


def load(name: str) -> LocalCluster:
    path = state_file(name)
    if not path.exists():
        raise NotFoundError(
            f"No rayweb cluster {name!r}. Suggestion: rayweb cluster up --name {name}"
        )
    return LocalCluster(**json.loads(path.read_text()))


def up(
    name: str = "default",
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    port: int | None = None,
    object_store_mib: int = 512,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    autoscaling_config: Path | None = None,
    workers: int = 0,
    head_cpus: int | None = None,
) -> LocalCluster:
    """Start a loopback-only Ray head and remember it as ``name``.

    ``autoscaling_config``: a Ray cluster YAML for the head's autoscaler; with the
    ``fake_multinode`` provider (see cluster/fake-gpu-autoscaling.yaml), worker "nodes" are
    started on this machine, and ``down`` stops them with the head. ``workers``: that many
    more nodes on this machine (``local_node.py``), each with ``num_cpus`` and the object
    store of the head and a resource ``rayweb-node-<i>`` of 1, stopped with the head.
    ``head_cpus``: the head's CPUs when they differ from the workers' (a KubeRay head has 0)."""
    path = state_file(name)
    if path.exists():
        existing = load(name)
        if existing.pids():
            raise InvalidError(
                f"rayweb cluster {name!r} is already running at {existing.address}. "
                f"Suggestion: rayweb cluster down --name {name}"
            )
    port = port or free_port()
    dashboard_port = free_port()
    temp_dir = f"/tmp/rayweb-{name}-{os.getuid()}"
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "FORWARDED_ALLOW_IPS": os.environ.get("RAYWEB_TRUSTED_PROXIES", ""),
        **(extra_env or {}),
    }
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        # not the fixed default (52365): another Ray on this host may hold it, and a
        # node without its agent serves no logs (`rayweb app logs`)
        f"--dashboard-agent-listen-port={free_port()}",
        f"--object-store-memory={object_store_mib * 1024 * 1024}", "--disable-usage-stats",
        f"--num-cpus={_cpus(head_cpus if head_cpus is not None else num_cpus)}",
        f"--system-config={json.dumps(system_config())}",  # warm workers (warmpool.py)
    ]  # fmt: skip
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    cmd += extra_args or []
    os.makedirs(temp_dir, mode=0o700, exist_ok=True)
    if autoscaling_config is not None:
        resolved, fake = _autoscaling_config(autoscaling_config, port, Path(temp_dir))
        cmd.append(f"--autoscaling-config={resolved}")
        if fake:
            env["RAY_FAKE_CLUSTER"] = "1"
    result = subprocess.run(cmd, env=env, cwd=temp_dir, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise InvalidError(f"ray start failed:\n{(result.stderr or result.stdout)[-2000:]}")
    for index in range(1, workers + 1):
        spec = {
            "address": f"127.0.0.1:{port}",
            "num_cpus": _cpus(num_cpus),
            "object_store_memory": object_store_mib * 1024 * 1024,
            "resources": {f"rayweb-node-{index}": 1},
        }
        node = [sys.executable, "-m", "rayweb.driver.local_node", json.dumps(spec)]
        started = subprocess.run(node, env=env, cwd=temp_dir, capture_output=True, text=True)
        if started.returncode != 0:
            raise InvalidError(f"starting node {index} failed:\n{started.stderr[-2000:]}")
    cluster = LocalCluster(
        name=name,
        address=f"127.0.0.1:{port}",
        temp_dir=temp_dir,
        dashboard=f"http://127.0.0.1:{dashboard_port}",
        started=time.time(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(cluster)))
    forkserver.start(temp_dir)  # a driver kept imported: the next `rayweb serve` starts in it
    return cluster


def _cpus(count: int | None) -> int:
    return count if count is not None else os.cpu_count() or 1


def _autoscaling_config(path: Path, port: int, temp_dir: Path) -> tuple[Path, bool]:
    """The config with the fake provider pointed at this head; (its path, is it fake)."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidError(f"Cannot read the autoscaling config {str(path)!r}: {exc}") from None
    provider = (config or {}).get("provider") if isinstance(config, dict) else None
    if not isinstance(provider, dict) or "type" not in provider:
        raise InvalidError(
            f"{str(path)!r} is not a Ray cluster config (no provider.type). Suggestion: start "
            "from cluster/fake-gpu-autoscaling.yaml."
        )
    fake = provider["type"] == "fake_multinode"
    if fake:
        provider["gcs_address"] = f"127.0.0.1:{port}"
    resolved = temp_dir / "autoscaling.yaml"
    resolved.write_text(yaml.safe_dump(config))
    return resolved, fake


def down(name: str = "default", *, grace_s: float = 10) -> int:
    """Stop the cluster's own processes (by PID); return how many there were."""
    import psutil

    cluster = load(name)
    pids = cluster.pids()
    # The raylet respawns agents that die: stop it (and the GCS) first, hard.
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if Path(psutil.Process(pid).exe()).name in ("raylet", "gcs_server"):
                _signal(pid, signal.SIGKILL)
    seen = set(pids)
    deadline = time.monotonic() + grace_s
    quiet_since = None
    while time.monotonic() < deadline:
        alive = cluster.pids()
        seen.update(alive)
        for pid in alive:
            _signal(pid, signal.SIGTERM)
        if alive:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 2:  # nothing left, and nothing came back
            break
        time.sleep(0.2)
    for pid in cluster.pids():
        _signal(pid, signal.SIGKILL)
    cluster.state_file.unlink(missing_ok=True)
    return len(seen)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def running(name: str) -> LocalCluster | None:
    """The local cluster ``name`` when it is up (its head's GCS port answers), else None."""
    import socket

    try:
        found = load(name)
    except (NotFoundError, InvalidError, OSError, ValueError, TypeError):
        return None
    host, _, port = found.address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except (OSError, ValueError):
        return None
    return found


def serve_address(address: str | None, keep_warm: bool, say: Callable[[str], None]) -> str | None:
    """Where ``rayweb serve`` runs: ``--address``, else the running local cluster
    (``cluster.pick_address``), else with ``--keep-warm`` a local cluster started now and
    left up for the next serve; None: a Ray of its own, stopped with the command."""
    from .cluster import CLUSTER_ENV, LOCAL, pick_address

    if keep_warm and address == LOCAL:
        raise InvalidError(
            "--keep-warm keeps a local cluster up, --address local starts a Ray that stops "
            "with this command. Suggestion: drop one of them."
        )
    picked = pick_address(address)
    if picked is None and keep_warm:
        say("Starting a local cluster to keep warm")
        started = up(os.environ.get(CLUSTER_ENV) or DEFAULT_NAME)
        say(
            f"Started the local cluster {started.name!r} at {started.address}; it stays up "
            f"for the next `rayweb serve`. Stop it: rayweb cluster down --name {started.name}"
        )
        return started.name
    if picked is not None and address is None:
        say(
            f"On the running local cluster {picked!r} (it stays up after this command; stop "
            f"it: rayweb cluster down --name {picked}; `--address local`: a Ray of its own)."
        )
    return picked


def forked_serve(address: str | None, argv: list[str]) -> int | None:
    """Run ``rayweb serve`` (``argv``) in a fork of the driver kept imported beside the local
    cluster it would run on (``forkserver.py``); its exit code, or None when it runs here
    (no such cluster or server, or the server refused)."""
    from .cluster import LOCAL, pick_address

    if address == LOCAL or not forkserver.enabled() or os.environ.get(forkserver.CHILD_ENV):
        return None
    name = pick_address(address)
    if name is None or ":" in name or "/" in name:
        return None
    try:
        found = load(name)
    except (NotFoundError, InvalidError, OSError, ValueError, TypeError):
        return None
    forkserver.driver_env()  # as the command would before importing Ray, and the server did
    return forkserver.hand_off(found.temp_dir, argv)


def resolve_address(address: str | None) -> str | None:
    """``--address`` may name a rayweb cluster (``default``) as well as host:port."""
    if address and ":" not in address and "/" not in address:
        return load(address).address
    return address


@dataclass
class ClusterStatus:
    """``rayweb cluster status``: where the cluster is, whether it runs, with what."""

    cluster: LocalCluster
    processes: int
    resources: dict[str, float] | None = None  # None when it is down
    nodes_alive: int | None = None
    warm_pool: dict[str, Any] | None = None  # the gateway's (None: no gateway runs yet)
    fork_driver: int | None = None  # the pid of the driver kept imported (forkserver.py)


def status(name: str) -> ClusterStatus:
    """The recorded cluster, its live processes and (when up) its resources and nodes."""
    found = load(name)
    pids = found.pids()
    if not pids:
        return ClusterStatus(found, 0)
    forked = forkserver.running_pid(found.temp_dir)
    from . import cluster

    cluster.ensure_ray(found.address)  # before importing Ray: it sets up token auth
    import ray

    from ..services.gateway import find_gateway

    resources = {k: v for k, v in cluster.cluster_resources().items() if not k.startswith("node:")}
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    gateway = find_gateway()
    pool = ray.get(gateway.warm_pool.remote(), timeout=10) if gateway is not None else None
    return ClusterStatus(found, len(pids), resources, alive, pool, forked)
