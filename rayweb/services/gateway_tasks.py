"""The gateway actor's background loops (a mixin of ``GatewayActor``, which holds the route
table, HAProxy and the lock): dead replicas dropped, HAProxy's keeper restarted, queue and
in-flight figures published for the autoscaling policy, and the token map kept current."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .autoscaling import write_queued
from .haproxy import HAProxyProcess
from .haproxy_config import Route, backend_names, in_flight_per_backend, queued_per_backend
from .keeper import event
from .liveservers import LiveServers, snapshot
from .maps import send_commands
from .sessions import SessionTable
from .tokenmap import TokenMap
from .warmpool import WarmPool

RECONCILE_S = 2.0

logger = logging.getLogger("rayweb.gateway")


class GatewayTasks:
    """The loops ``GatewayActor._start_tasks`` runs."""

    routes: dict[str, Route]
    haproxy: HAProxyProcess
    live: LiveServers
    tokens: TokenMap
    sessions: SessionTable
    dir: Path
    applied: int
    _lock: asyncio.Lock

    pool: WarmPool
    node_ip: str

    _push: Callable[..., None]  # GatewayNodes: the table to the other nodes' gateways

    async def _apply(self) -> None:
        raise NotImplementedError

    def _drop(self, replicas: list[str]) -> bool:
        raise NotImplementedError

    def _served(self) -> dict[str, Route]:
        raise NotImplementedError

    def _render(self) -> str:
        raise NotImplementedError

    async def _reconcile(self) -> None:
        """Drop replicas whose actor died without deregistering (crash, node loss)."""
        import ray

        while True:
            await asyncio.sleep(RECONCILE_S)
            if self.live.lingering:
                async with self._lock:
                    with contextlib.suppress(Exception):
                        await asyncio.get_running_loop().run_in_executor(
                            None, self.live.retry_lingering, self.haproxy
                        )
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

    async def _watch(self) -> None:
        """Start the keeper again if it died (HAProxy died with it)."""
        while True:
            await asyncio.sleep(0.2)
            if self.haproxy.keeper_alive():
                continue
            async with self._lock:
                try:
                    self.haproxy.start_keeper()
                except Exception:
                    logger.warning("restarting the gateway's keeper failed", exc_info=True)
                    continue
            event(self.dir, "the gateway's keeper exited; HAProxy started again")

    async def _keep_warm(self) -> None:
        """Keep idle Ray workers started on this node for the next replica (``warmpool.py``)."""
        pool = self.pool
        loop = asyncio.get_running_loop()
        while not pool.off:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, pool.top_up)
            await asyncio.sleep(1.0)

    def _replica_started(self, host: str) -> None:
        """A new replica registered: the warm pool waits for its start to finish."""
        if host == self.node_ip:
            self.pool.replica_started()

    def _replica_stopped(self, host: str) -> None:
        """A replica left: the warm pool sizes itself to the burst (an app that stopped)."""
        if host == self.node_ip:
            self.pool.replica_stopped()

    async def _publish_queued(self) -> None:
        """Every second, what waits in HAProxy's queues per endpoint, for the autoscaling
        policy (which cannot see it otherwise): ``autoscaling.write_queued``. A route on the
        direct hop adds the requests in flight at its servers, which no replica sees."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            try:
                queued: dict[str, float] = {}
                if any(route.servers for route in self.routes.values()):
                    csv = await loop.run_in_executor(None, self.haproxy.stats)
                    served = self._served()
                    names = backend_names(served)
                    counts = queued_per_backend(csv)
                    direct = in_flight_per_backend(csv)
                    for backend, name in names.items():
                        figure = float(counts.get(backend, 0))
                        if served[name].direct is not None:
                            figure += direct.get(backend, 0.0)
                        if figure:
                            queued[name] = figure
                write_queued(self.dir, queued, self.sessions.pinned())
            except Exception:
                logger.debug("reading HAProxy's queues failed", exc_info=True)

    async def _watch_tokens(self) -> None:
        """Keep the token map (``tokenmap.py``) equal to the store while a direct route
        checks proxy auth: changes go to the running worker through the runtime API; a
        change of whether the map is complete changes which routes are direct (a reload)."""
        while True:
            await asyncio.sleep(1.0)
            if not any(r.direct and r.direct.auth_headers for r in self.routes.values()):
                continue
            try:
                await self._refresh_tokens()
            except Exception:
                logger.debug("reading the token store failed", exc_info=True)

    async def _refresh_tokens(self, apply: bool = True) -> None:
        from .store_actor import store_actor

        actor = store_actor()

        async def fetch(version: int) -> tuple[int, Any]:
            return tuple(await actor.token_digests.remote(version))

        change = await self.tokens.refresh(fetch)
        if change is None or not apply:
            return
        added, removed, ready_changed = change
        if ready_changed:
            await self._apply()
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                await loop.run_in_executor(None, self._send_map, added, removed)
                self._push()
            except (RuntimeError, OSError):
                logger.warning("gateway: updating the token map failed; reloading", exc_info=True)
                config, table = self._render(), snapshot(self._served())
                await loop.run_in_executor(None, self.haproxy.reload, config)
                self.live.reloaded(table, self.haproxy.master_pid)

    def _send_map(self, added: dict[str, str], removed: set[str]) -> None:
        send_commands(self.haproxy.runtime, self.tokens.commands(added, removed))


async def reachable(host: str, port: int) -> bool:
    """Whether this node reaches ``host:port`` (a server bound to 127.0.0.1 on another node
    does not)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
