"""rayweb's gateway on every node (``RAYWEB_GATEWAY_NODES=every``; by default there is one,
on the head).

The head's gateway (``gateway.py``) keeps the route table, the holder, the token map and
the sessions. Every other alive node gets a follower: a detached actor pinned to that node
that runs an HAProxy of its own (``haproxy.py``, under its keeper) on the node's address and
the gateway's port, with the config the head renders for the same table (``render_config``
of ``served``), so a request entering at any node goes straight to a replica, wherever it
runs, and losing a node loses only that node's gateway (and the requests it carried). What a
follower cannot do itself goes to the head's HAProxy: unknown paths (Serve's proxy listens on
the head's loopback) and requests for an endpoint with no replica up (the head's holder wakes
it). The head pushes each change to every follower; a new follower gets the table at once.
Each follower records its requests in Serve's metrics on its own node, as the head does.

Two nodes on one machine share its address: a follower whose node has the head's address
takes a free port instead (``GatewayActor.followers()`` says which). Requests a follower
sends to the head's holder count, for the rate limit, as the follower's node's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..common import free_port, port_unavailable
from ..exception import InvalidError
from .haproxy import HAProxyProcess, max_connections
from .haproxy_config import Route, parse_trusted, render_config, routes_from_json
from .liveservers import LiveServers, snapshot
from .maps import write_map
from .requestlog import Reader, RequestLog, serve_metrics

logger = logging.getLogger("rayweb.gateway")

FOLLOWER_PREFIX = "rayweb-gateway-node-"


class GatewayFollower:
    """One node's HAProxy, following the head's gateway (a detached async actor)."""

    def __init__(
        self, host: str, port: int, head: tuple[str, int], key: str, domain: str | None
    ) -> None:
        import ray

        self.node_ip = str(ray.util.get_node_ip_address())
        wildcard = host in ("0.0.0.0", "::")
        # Two nodes on one machine share its address: the head's HAProxy holds the port.
        self.bind = (
            host if wildcard else self.node_ip,
            free_port() if self.node_ip == head[0] else port,
        )
        self.head = head
        self.key = key
        self.domain = domain
        self.trusted = parse_trusted(os.environ.get("RAYWEB_TRUSTED_PROXIES", ""))
        self.dir = _node_dir()
        self.tokens_map = self.dir / "tokens.map"
        self.sessions_map = self.dir / "sessions.map"
        for path in (self.tokens_map, self.sessions_map):
            write_map(path, {})
        self.routes: dict[str, Route] = {}
        self.requests = RequestLog(None, self._owner)
        self.reader = Reader(self.requests)
        self.live = LiveServers()
        adopted = HAProxyProcess.adopt(self.dir, watch_pid=os.getppid())
        if adopted is not None:  # a restarted actor: start afresh, the head pushes the table
            adopted.stop()
        taken = port_unavailable(*self.bind)
        if taken is not None:
            raise InvalidError(f"rayweb: the gateway on node {self.node_ip}: {taken}")
        self.haproxy = HAProxyProcess(self.dir, self._render(), watch_pid=os.getppid())
        self.haproxy.wait_listening(self.node_ip, self.bind[1])
        self.live.reloaded(snapshot(self.routes), self.haproxy.master_pid)
        self._lock = asyncio.Lock()
        self._metrics_task: asyncio.Task[None] | None = None

    def _owner(self, name: str) -> tuple[str, str]:
        route = self.routes.get(name)
        if route is None:
            return "", ""
        return (route.serve_app, "function") if route.serve_app else (name, "")

    def _render(self) -> str:
        return render_config(
            bind=self.bind,
            serve=self.head,  # unknown paths: the head's HAProxy, then Serve's proxy
            key=self.key,
            routes=self.routes,
            trusted=self.trusted,
            maxconn=max_connections(),
            holder=self.head,  # no replica up: the head's holder wakes the endpoint
            request_log=self.reader.address,
            tokens_map=str(self.tokens_map),
            sessions_map=str(self.sessions_map),
            domain=self.domain,
        )

    def address(self) -> tuple[str, int]:
        return self.bind

    def haproxy_pid(self) -> int | None:
        return self.haproxy.master_pid

    async def apply(
        self,
        table: str,
        tokens: dict[str, str],
        sessions: dict[str, str],
        domain: str | None = None,
    ) -> None:
        """The head's served table (``routes_to_json``, as JSON), token digests, session
        map and origins' domain: HAProxy serves them from now on (servers alone change in
        place)."""
        if self._metrics_task is None:
            self._metrics_task = asyncio.get_running_loop().create_task(self._metrics())
        async with self._lock:
            self.routes = routes_from_json(json.loads(table))
            maps_changed = write_map(self.tokens_map, tokens) | write_map(
                self.sessions_map, sessions
            )
            maps_changed |= domain != self.domain  # the frontend's rules: a reload
            self.domain = domain
            config, shape = self._render(), snapshot(self.routes)
            loop = asyncio.get_running_loop()
            changed = False
            if not maps_changed:
                changed = await loop.run_in_executor(
                    None, self.live.apply, self.haproxy, shape, config
                )
            if not changed:
                await loop.run_in_executor(None, self.haproxy.reload, config)
                self.live.reloaded(shape, self.haproxy.master_pid)

    async def _metrics(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            self.requests.sink = await loop.run_in_executor(None, serve_metrics)
        except Exception:
            logger.warning("a node gateway's requests are not recorded in Serve's metrics")

    async def runtime(self, commands: list[str]) -> list[str]:
        """Read-only runtime API answers of this node's HAProxy (the head reads its session
        tables: ``show table ss<i>``)."""
        assert all(c.startswith("show ") for c in commands)
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(None, self.haproxy.runtime, c) for c in commands]

    def request_stats(self) -> dict[str, dict[str, float]]:
        return self.requests.stats()

    def stop(self) -> None:
        self.reader.close()
        self.haproxy.stop()


def _node_dir() -> Path:
    """This node's gateway folder, in its Ray session folder."""
    import ray

    session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    directory = session / "rayweb-gateway-node"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def start_follower(
    node_id: str, host: str, port: int, head: tuple[str, int], key: str, domain: str | None
) -> Any:
    """The follower of node ``node_id`` (created on that node, or the running one)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .actors import cluster_actor

    return cluster_actor(
        GatewayFollower,
        FOLLOWER_PREFIX + node_id[:16],
        host,
        port,
        head,
        key,
        domain,
        head=False,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        max_concurrency=100,
        max_restarts=-1,
        max_task_retries=-1,
    )
