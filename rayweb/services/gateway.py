"""rayweb's gateway: the cluster's HAProxy in front of every replica's own HTTP server.

Serve keeps replicas, placement, health, autoscaling and config. Requests skip Serve's
per-request machinery: each replica also serves its app with its own uvicorn
(``replica/direct.py``) and registers it here; the ``rayweb-gateway`` actor (detached, on the
head node, no CPU) renders an HAProxy config (``haproxy_config.py``) with one backend per
endpoint and reloads HAProxy (``haproxy.py``) through its master socket (seamless: the
listening socket is handed to the new worker, and old workers finish the connections they
hold). Every backend's backup server, and its only one while the endpoint has no
registered replica, is the holder (``holder.py``, on its own thread here): it admits the
request (rate limit, proxy auth), wakes the endpoint through its Serve handle and relays the
request to the woken replica's own port, so Serve's proxy, which buffers whole bodies,
never sees one; Serve's proxy stays the default backend (unknown paths). The driver declares
each endpoint at deploy (``declare``), so its path, body limit and admission hold at the
gateway before any replica exists.

Supervised: HAProxy runs under its keeper (``keeper.py``), which restarts it when it dies;
the actor is restarted by Ray (``max_restarts=-1``) and adopts the running keeper, its key
and its route table from ``state.json`` in the gateway's folder, so killing the actor does
not interrupt the data path; the actor restarts a dead keeper. Each restart is one line in
``events.log``, which ``rayweb serve`` prints.

The actor's other parts are mixins: hot swap's mailbox (``reloads.py``: every dev replica
keeps one long poll open here), loops, sessions, other nodes' gateways, inspection
(``gateway_*.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from ..common import port_unavailable
from ..exception import InvalidError
from .actors import NAMESPACE, cluster_actor
from .gateway_inspect import GatewayInspect
from .gateway_nodes import GatewayNodes
from .gateway_sessions import GatewaySessions
from .gateway_tasks import GatewayTasks, reachable
from .haproxy import HAProxyProcess, max_connections
from .haproxy_config import (
    Route,
    Server,
    admission_from,
    direct_from,
    parse_trusted,
    render_config,
    routes_from_json,
    routes_to_json,
    served,
)
from .holder import Holder
from .keeper import event
from .liveservers import LiveServers, snapshot
from .reloads import HotSwapMethods, ReloadMailbox
from .requestlog import Reader, RequestLog, serve_metrics
from .sessions import SessionTable
from .tokenmap import TokenMap
from .waking import Waking
from .warmpool import WarmPool, max_warm_workers, node_ip, warm_workers

GATEWAY_NAME = "rayweb-gateway"

logger = logging.getLogger("rayweb.gateway")


def state_dir() -> Path:
    """The gateway's folder, under the Ray session directory (so that ``rayweb cluster down``
    finds HAProxy too), the same for every incarnation of the actor in one Ray session."""
    base: Path | None = None
    with contextlib.suppress(Exception):
        import ray

        base = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    if base is None:
        return Path(tempfile.mkdtemp(prefix="rayweb-gateway-"))
    directory = base / "rayweb-gateway"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


class GatewayActor(HotSwapMethods, GatewayTasks, GatewaySessions, GatewayNodes, GatewayInspect):
    """The cluster's HAProxy and its route table (one detached async actor on the head),
    with its mixins (the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        serve_host: str,
        serve_port: int,
        request_log: bool = True,
        every_node: bool = False,
        domain: str | None = "localhost",
    ) -> None:
        self.bind = (host, port)
        self.dir = state_dir()
        # A taken port (another process's, even one it shares: port_unavailable) is refused
        # before anything starts; address() says so, and started_gateway_address (whoever
        # started it) removes this actor.
        adopted = HAProxyProcess.adopt(self.dir, watch_pid=os.getppid())
        self.refused = port_unavailable(host, port) if adopted is None else None
        if self.refused is not None:
            return
        self.domain = domain  # each endpoint also at http://<label>.<domain>:<port>/
        self.every_node = every_node  # an HAProxy on every node (followers.py)
        self.followers: dict[str, Any] = {}
        self.serve = (serve_host, serve_port)
        self.trusted = parse_trusted(os.environ.get("RAYWEB_TRUSTED_PROXIES", ""))
        self.routes: dict[str, Route] = {}
        self.reloads = ReloadMailbox()
        self.version = 0  # bumped by every change; ``applied`` follows it
        self.applied = 0
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.live = LiveServers()  # replicas change through the runtime API, not reloads
        self.tokens = TokenMap(self.dir)  # what direct routes check proxy auth against
        self.sessions = SessionTable(self.dir)  # @rayweb.sessioned() Servers' live sessions
        # Idle Ray workers for the next replicas on this node (the raylet is the parent).
        self.pool = WarmPool(warm_workers(), os.getppid(), max_warm_workers())
        self.node_ip = node_ip()
        # HAProxy's line per request: Serve's request metrics, `rayweb app list`'s minute
        self.requests = RequestLog(None, self._owner)
        self._request_reader = Reader(self.requests) if request_log else None
        self.waking = Waking(self.routes.get)
        self.holder = Holder(self._prefixes, self.waking.wake, self.serve, self.waking.admit)
        self.holder.start_in_thread()
        # The keeper (adopted above) watches this node's raylet (the actor's parent).
        state = self._load_state() if adopted is not None else None
        if adopted is not None and state is not None:
            # A restarted actor: HAProxy kept serving; take over its key and its table.
            self.key = state["key"]
            self.domain = state.get("domain", self.domain)  # set_domain may have changed it
            self.routes.update(routes_from_json(state["routes"]))
            self.sessions.restore(state.get("sessions", {}), time.monotonic(), self._served())
            self.reloads.generations.update(state.get("generations", {}))
            self.haproxy = adopted
            self.haproxy.reload(self._render())
            event(self.dir, "the gateway actor restarted; HAProxy kept serving")
        else:
            if adopted is not None:
                adopted.stop()
            self.key = secrets.token_urlsafe(24)
            self.haproxy = HAProxyProcess(self.dir, self._render(), watch_pid=os.getppid())
            self._save_state()
        self.haproxy.wait_listening(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)
        self.live.reloaded(snapshot(self._served()), self.haproxy.master_pid)

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return state

    def _save_state(self) -> None:
        state = {
            "key": self.key,
            "routes": routes_to_json(self.routes),
            "generations": self.reloads.generations,
            "sessions": self.sessions.to_json(),
            "domain": self.domain,
        }
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.chmod(tmp, 0o600)  # holds the gateway key
        tmp.replace(self.dir / "state.json")

    def _start_tasks(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._reconcile()),
                loop.create_task(self._watch()),
                loop.create_task(self._publish_queued()),
                loop.create_task(self._read_requests()),
                loop.create_task(self._watch_tokens()),
                loop.create_task(self._watch_sessions()),
                loop.create_task(self._watch_nodes()),
                loop.create_task(self._keep_warm()),
            ]

    def _served(self) -> dict[str, Route]:
        """The table as HAProxy serves it (which routes take the direct hop)."""
        return served(self.routes, self.tokens.ready)

    def _render(self) -> str:
        return render_config(
            bind=self.bind,
            serve=self.serve,
            key=self.key,
            routes=self._served(),
            tokens_map=str(self.tokens.path),
            sessions_map=str(self.sessions.path),
            domain=self.domain,
            trusted=self.trusted,
            maxconn=max_connections(),
            holder=self.holder.address,
            request_log=self._request_reader.address if self._request_reader else None,
        )

    async def _read_requests(self) -> None:
        """Record HAProxy's request lines in Serve's metrics too (the reader's thread keeps
        the window from the start)."""
        if self._request_reader is None:
            return  # RAYWEB_REQUEST_METRICS=0
        try:
            loop = asyncio.get_running_loop()
            self.requests.sink = await loop.run_in_executor(None, serve_metrics)
        except Exception:
            logger.warning("gateway requests are not recorded in Serve's metrics", exc_info=True)

    def _owner(self, name: str) -> tuple[str, str]:
        """A route's Serve application (a class pool's, for its web methods) and deployment
        ("" where not known), for Serve's metric tags."""
        route = self.routes.get(name)
        if route is None:
            return "", ""
        return (route.serve_app, "function") if route.serve_app else (name, "")

    def _prefixes(self) -> dict[str, str]:
        """Each route's prefix (read by the holder's thread: one atomic copy)."""
        return {name: route.prefix for name, route in list(self.routes.items())}

    async def address(self) -> tuple[str, int, str, int]:
        if self.refused is not None:
            raise InvalidError(self.refused)
        self._start_tasks()
        return (*self.bind, *self.serve)

    async def register(
        self,
        app: str,
        prefix: str,
        replica: str,
        host: str,
        port: int,
        maxconn: int,
        max_body: int | None = None,
        body_timeout: float | None = None,
        direct: dict[str, Any] | None = None,
        sessioned: bool = False,
    ) -> str:
        """A replica's own port; ``direct``: an ``@app.server``'s port and ``Direct`` rules."""
        self._start_tasks()
        route = self.routes.setdefault(app, Route(prefix))
        upstream = None
        if direct is not None:
            host_, port_, maxconn_ = direct["upstream"]
            if await reachable(str(host_), int(port_)):
                upstream = (str(host_), int(port_), max(1, int(maxconn_)))
            rules = direct_from(direct)
            changed = route.direct != rules
            route.direct = rules
            if rules.auth_headers is not None and self.tokens.version < 0:
                with contextlib.suppress(Exception):
                    await self._refresh_tokens(apply=False)  # no reload to flip it at once
        else:
            changed, route.direct = route.direct is not None, None
        server = Server(host, port, max(1, maxconn), upstream)
        changed |= self._set_limits(route, prefix, max_body, body_timeout)
        changed |= route.sessioned != sessioned
        route.sessioned = sessioned
        if replica not in route.servers:
            self._replica_started(host)
        if changed or route.servers.get(replica) != server:
            route.servers[replica] = server
            await self._apply()
        return self.key

    async def declare(self, routes: list[dict[str, Any]], pools: list[str] | None = None) -> None:
        """Endpoints that may have no replica yet (the driver, at deploy): each one's
        ``app``, ``prefix``, ``max_body``, ``body_timeout``, ``admission`` (the keyword
        arguments of ``Admission``) and ``serve_app`` (a class's pool, which serves it)
        apply at the gateway from now on; one reload for all. ``pools``: the classes' pools
        this deploy updates; their labels that ``routes`` no longer has are forgotten."""
        self._start_tasks()
        declared_names = {declared["app"] for declared in routes}
        gone = [
            name
            for name, route in self.routes.items()
            if route.serve_app in (pools or ()) and name not in declared_names
        ]
        changed = bool(gone)
        for name in gone:
            del self.routes[name]
        for declared in routes:
            route = self.routes.setdefault(declared["app"], Route(declared["prefix"]))
            limits = (declared.get("max_body"), declared.get("body_timeout"))
            changed |= self._set_limits(route, declared["prefix"], *limits)
            admission = declared.get("admission")
            route.admission = admission_from(admission) if admission is not None else None
            route.serve_app = declared.get("serve_app")
            sessioned = bool(declared.get("sessioned", False))
            changed |= route.sessioned != sessioned
            route.sessioned = sessioned
        if changed:
            await self._apply()
        else:
            self._save_state()  # admission is the holder's, not HAProxy's: no reload

    @staticmethod
    def _set_limits(
        route: Route, prefix: str, max_body: int | None, body_timeout: float | None
    ) -> bool:
        new = (prefix, max_body, body_timeout)
        if (route.prefix, route.max_body, route.body_timeout) == new:
            return False
        route.prefix, route.max_body, route.body_timeout = new
        return True

    async def forget(self, apps: list[str]) -> None:
        """Deleted endpoints (and the labels of deleted classes' pools): their routes go
        (their replicas deregister as they stop). A label a pool serves now stays when the
        application of the same name that served it before is deleted."""
        gone = [
            name
            for name, route in self.routes.items()
            if (name in apps and route.serve_app is None) or route.serve_app in apps
        ]
        stopped: dict[str, str] = {}  # a class pool's replica serves several routes
        for name in gone:
            for replica, server in self.routes.pop(name).servers.items():
                stopped[replica] = server.host
        for host in stopped.values():
            self._replica_stopped(host)
        if gone:
            await self._apply()

    async def deregister(self, replica: str) -> None:
        if self._drop([replica]):
            await self._apply()

    def _drop(self, replicas: list[str]) -> bool:
        """Remove these replicas' servers; an endpoint left with none keeps its route."""
        stopped: dict[str, str] = {}  # a class pool's replica serves several routes
        for route in self.routes.values():
            for replica in replicas:
                server = route.servers.pop(replica, None)
                if server is not None:
                    stopped[replica] = server.host
        for host in stopped.values():
            self._replica_stopped(host)
        return bool(stopped)

    async def _apply(self) -> None:
        """Make HAProxy serve the current table; concurrent changes share one reload."""
        self.version += 1
        wanted = self.version
        async with self._lock:
            if self.applied >= wanted:
                return
            current = self.version
            self._save_state()
            config, table = self._render(), snapshot(self._served())
            sessions = self.sessions.wanted(self._served())
            self.sessions.write(sessions)  # what a reloaded worker reads
            loop = asyncio.get_running_loop()
            changed = await loop.run_in_executor(None, self.live.apply, self.haproxy, table, config)
            if changed:
                try:
                    await loop.run_in_executor(None, self._send_sessions, sessions)
                except (RuntimeError, OSError):
                    changed = False  # the reload below gives the worker the file
            if not changed:
                await loop.run_in_executor(None, self.haproxy.reload, config)
                self.live.reloaded(table, self.haproxy.master_pid)
                self.sessions.live = sessions
            self.applied = current
            self._push()

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for follower in self.followers.values():
            follower.stop.remote()
        if self._request_reader is not None:
            self._request_reader.close()
        self.haproxy.stop()


def find_gateway() -> Any | None:
    """This cluster's gateway actor, or None when rayweb's data path is not running."""
    import ray

    try:
        return ray.get_actor(GATEWAY_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def started_gateway_address(gateway: Any) -> tuple[str, int, str, int]:
    """Wait until a gateway just started listens (``address``). One that failed, or refused
    its port, is removed: ``start_gateway`` would find it again (``get_if_exists``)."""
    import ray

    try:
        return tuple(ray.get(gateway.address.remote()))
    except Exception:
        ray.kill(gateway)
        raise


def start_gateway(
    host: str,
    port: int,
    serve_host: str,
    serve_port: int,
    request_log: bool = True,
    every_node: bool = False,
    domain: str | None = "localhost",
) -> Any:
    """Start the cluster's gateway on the head node (or return the running one);
    ``request_log``: HAProxy's line per request, for Serve's request metrics;
    ``every_node``: an HAProxy on every node too (``followers.py``); ``domain``: each
    endpoint also at the root of ``<label>.<domain>`` (None: path prefixes only)."""
    # Each dev replica keeps one long poll open here (hot swap).
    return cluster_actor(
        GatewayActor,
        GATEWAY_NAME,
        host,
        port,
        serve_host,
        serve_port,
        request_log,
        every_node,
        domain,
        max_concurrency=1000,
        # Ray restarts a dead gateway actor (it adopts the running HAProxy) and retries the
        # calls it was running: register, deregister and the hot-swap long poll are idempotent.
        max_restarts=-1,
        max_task_retries=-1,
    )
