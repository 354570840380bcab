"""The gateway's answers about itself (a mixin of ``GatewayActor``): where clients reach
it and the domain of the endpoints' own origins (``reach``, ``set_domain``: ``rayweb
serve/deploy --domain`` on a running gateway), what it routes, its processes (for tests and
inspection), its restarts and its request figures."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from .haproxy import HAProxyProcess
from .haproxy_config import Route
from .holder import Holder
from .liveservers import LiveServers
from .requestlog import RequestLog
from .warmpool import WarmPool


class GatewayInspect:
    """The gateway actor's questions, and its one setting changed while it runs."""

    bind: tuple[str, int]
    domain: str | None
    key: str
    dir: Path
    haproxy: HAProxyProcess
    holder: Holder
    live: LiveServers
    requests: RequestLog
    version: int
    applied: int
    _lock: asyncio.Lock

    pool: WarmPool

    def _served(self) -> dict[str, Route]:
        raise NotImplementedError

    def _start_tasks(self) -> None:
        raise NotImplementedError

    async def _apply(self) -> None:
        raise NotImplementedError

    async def reach(self) -> tuple[str, int, str | None]:
        """Where clients connect, and the domain each endpoint's own origin is under
        (``rayweb.urls.Reach``)."""
        self._start_tasks()
        return (*self.bind, self.domain)

    async def set_domain(self, domain: str | None) -> None:
        """Serve each endpoint's own origin under ``domain`` from now on (None: the path
        form only); kept in ``state.json`` for a restarted actor, given to node gateways."""
        if domain == self.domain:
            return
        self.domain = domain
        async with self._lock:
            self.live.shape = None  # the frontend changes: a reload, not servers in place
        await self._apply()

    def request_stats(self) -> dict[str, dict[str, float]]:
        """Per route, over the last minute: requests per second, p50 and p99 in ms."""
        return self.requests.stats()

    def gateway_key(self) -> str:
        return self.key

    def haproxy_pid(self) -> int | None:
        """The HAProxy master's pid (its workers are its children), for inspection and tests."""
        return self.haproxy.master_pid

    def keeper_pid(self) -> int | None:
        return self.haproxy.keeper_pid

    def pid(self) -> int:
        """This actor's process (for fault tests)."""
        return os.getpid()

    async def events(self, offset: int = 0) -> tuple[int, list[str]]:
        """Restarts since byte ``offset`` of the events log: (next offset, lines)."""
        self._start_tasks()
        try:
            with open(self.dir / "events.log", "rb") as log:
                log.seek(offset)
                data = log.read()
        except OSError:
            return offset, []
        complete = data[: data.rfind(b"\n") + 1]
        lines = [line.split(" ", 1)[-1] for line in complete.decode(errors="replace").splitlines()]
        return offset + len(complete), lines

    def table(self) -> dict[str, dict[str, Any]]:
        """What is routed where (for inspection and tests)."""
        return {
            name: {
                "prefix": r.prefix,
                "max_body": r.max_body,
                "admission": vars(r.admission) if r.admission else None,
                "servers": {k: vars(v) for k, v in r.servers.items()},
                "serve_app": r.serve_app,
                "direct": r.direct is not None,  # served at the user's server ports
                "sessioned": r.sessioned,
            }
            for name, r in self._served().items()
        }

    async def warm_pool(self) -> dict[str, Any]:
        """The warm pool on this node (``WarmPool.describe``; a /proc scan, off the loop)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.pool.describe)

    def settled(self) -> bool:
        """Whether HAProxy serves ``table()`` (no change of it still being applied: a replica
        dropped from the table serves what HAProxy sends it until then)."""
        return self.applied >= self.version

    def holder_stats(self) -> dict[str, int]:
        """Requests the holder is keeping now, and connections it relayed (tests, inspection)."""
        return {"held": self.holder.held, "relayed": self.holder.relayed}
