"""The gateway actor's sticky sessions (a mixin of ``GatewayActor``): start and terminate
(``Server.sessions``), the map HAProxy routes them with, and the loop that ends idle ones
(``sessions.py`` says how)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..exception import InvalidError, NotFoundError
from .haproxy import HAProxyProcess
from .haproxy_config import Route, backend_names
from .liveservers import LiveServers, snapshot
from .maps import send_commands
from .sessions import SessionTable

logger = logging.getLogger("rayweb.gateway")

WAKE_WAIT_S = 600.0  # a session started on a server with no container waits this long


class GatewaySessions:
    """``start_session``/``terminate_session`` and the sessions' upkeep."""

    routes: dict[str, Route]
    haproxy: HAProxyProcess
    live: LiveServers
    sessions: SessionTable
    followers: dict[str, Any]  # GatewayNodes: the other nodes' gateways
    _lock: asyncio.Lock

    _push: Callable[..., None]  # GatewayNodes: the table to the other nodes' gateways

    def _served(self) -> dict[str, Route]:
        raise NotImplementedError

    def _render(self) -> str:
        raise NotImplementedError

    def _save_state(self) -> None:
        raise NotImplementedError

    async def start_session(self, route: str, idle_timeout: float) -> tuple[str, str]:
        """A new session of the sessioned Server at ``route``: (session id, token). With no
        container yet, one is started first (as a request would start it)."""
        found = self.routes.get(route)
        if found is None:
            raise NotFoundError(f"No Server is served at /{route} on this cluster.")
        if not found.sessioned:
            raise InvalidError("`sessions` requires `@rayweb.sessioned()` on the Server.")
        if not found.servers:
            await self._wake(route)
        replicas = sorted(found.servers)
        session_id, token = self.sessions.start(route, replicas, idle_timeout, time.monotonic())
        await self._sync_sessions()
        return session_id, token

    async def terminate_session(self, route: str, token: str) -> bool:
        """End a session (False: it had ended already)."""
        ended = self.sessions.terminate(route, token)
        if ended:
            await self._sync_sessions()
        return ended

    async def _wake(self, route: str) -> None:
        """Start a container of ``route`` (a call through its Serve handle, which Serve
        counts as a waiting request) and wait until it has registered here."""
        from ray import serve

        from .waking import WAKE_METHOD

        deadline = time.monotonic() + WAKE_WAIT_S
        loop = asyncio.get_running_loop()
        handle = await loop.run_in_executor(None, serve.get_app_handle, route)
        await handle.options(method_name=WAKE_METHOD).remote()
        while not self.routes[route].servers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"No container of /{route} registered within {WAKE_WAIT_S} s.")
            await asyncio.sleep(0.05)

    async def _sync_sessions(self) -> None:
        """Make HAProxy's worker hold the live sessions (the runtime API; a reload if that
        fails)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            self._save_state()  # a restarted gateway keeps its sessions
            wanted = self.sessions.wanted(self._served())
            self.sessions.write(wanted)
            try:
                await loop.run_in_executor(None, self._send_sessions, wanted)
                self._push()
            except (RuntimeError, OSError):
                logger.warning(
                    "gateway: updating the sessions map failed; reloading", exc_info=True
                )
                config, table = self._render(), snapshot(self._served())
                await loop.run_in_executor(None, self.haproxy.reload, config)
                self.live.reloaded(table, self.haproxy.master_pid)
                self.sessions.live = wanted

    def _send_sessions(self, wanted: dict[str, str]) -> None:
        send_commands(self.haproxy.runtime, self.sessions.commands(wanted))
        self.sessions.live = wanted

    async def _watch_sessions(self) -> None:
        """Every second: each session's requests (HAProxy's stick tables); end the idle ones
        and those whose container is gone."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            if not self.sessions.sessions:
                continue
            try:
                served = self._served()
                now = time.monotonic()
                tables = [
                    f"show table ss{backend[1:]}"
                    for backend, name in backend_names(served).items()
                    if served[name].sessioned
                ]
                for command in tables:
                    table = await loop.run_in_executor(None, self.haproxy.runtime, command)
                    self.sessions.observe(table, now)
                # requests that entered at other nodes' gateways count too
                for node, follower in list(self.followers.items()):
                    with contextlib.suppress(Exception):
                        for table in await follower.runtime.remote(tables):
                            self.sessions.observe(table, now, source=node)
                replicas = {name: set(r.servers) for name, r in self.routes.items()}
                ended = self.sessions.expire(now, replicas)
                if ended:
                    logger.info("gateway: sessions ended: %s", ended)
                    await self._sync_sessions()
            except Exception:
                logger.debug("watching sessions failed", exc_info=True)

    def session_stats(self) -> dict[str, Any]:
        """Live sessions per route and container (for inspection and tests)."""
        out: dict[str, Any] = {}
        for s in self.sessions.sessions.values():
            out.setdefault(s.route, {}).setdefault(s.replica, []).append(s.session_id)
        return out
