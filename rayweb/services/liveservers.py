"""Replicas come and go without a reload: HAProxy's runtime API adds and deletes servers.

A reload starts a new HAProxy worker, and a new worker starts with empty stick tables: every
sticky session (``Modal-Session-Id``) would move at each scale-out. So when only the servers
of existing backends change (replicas registering and deregistering, the gateway's usual
change), :class:`LiveServers` sends ``add server`` / ``del server`` to the running worker and
writes the same table to the config file (which a restarted HAProxy reads); anything else (a
route added or removed, a limit changed) still reloads. A deregistered replica's server is set
to maintenance at once (no new requests) and deleted once its connections are gone.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .haproxy_config import Route, Server, server_args, servers_by_backend, skeleton

logger = logging.getLogger("rayweb.gateway")


Table = tuple[dict[str, Route], dict[str, dict[str, Server]]]  # (skeleton, servers by backend)


def snapshot(routes: dict[str, Route]) -> Table:
    """The route table as HAProxy will see it: taken with the config it renders, in one go
    (registrations change ``routes`` between awaits)."""
    return skeleton(routes), servers_by_backend(routes)


class Runtime(Protocol):
    """What this needs of ``HAProxyProcess``."""

    @property
    def master_pid(self) -> int | None: ...

    def runtime(self, command: str, timeout: float = 5.0) -> str: ...

    def write(self, config: str) -> None: ...


class LiveServers:
    """What the running HAProxy worker serves, and how to change its servers in place."""

    def __init__(self) -> None:
        self.shape: dict[str, Route] | None = None  # the routes without servers, at last reload
        self.master: int | None = None  # the master that reloaded (a new one read the file)
        self.servers: dict[str, dict[str, Server]] = {}  # backend -> server name -> server
        self.lingering: set[tuple[str, str]] = set()  # in maintenance, deleted when idle

    def reloaded(self, table: Table, master: int | None) -> None:
        """HAProxy now runs the full config of ``table`` (a :func:`snapshot`)."""
        self.shape, self.servers = table[0], dict(table[1])
        self.master = master
        self.lingering.clear()

    def apply(self, haproxy: Runtime, table: Table, config: str) -> bool:
        """Change only servers, if that is all that changed (True); False: reload instead."""
        shape, wanted = table
        if self.shape is None or shape != self.shape:
            return False
        if haproxy.master_pid is None or haproxy.master_pid != self.master:
            return False  # the keeper restarted HAProxy: it read the file, not our changes
        try:
            for backend, servers in wanted.items():
                live = self.servers.get(backend, {})
                for name in live.keys() - servers.keys():
                    self._remove(haproxy, backend, name)
                for name, server in servers.items():
                    if live.get(name) == server:
                        continue
                    if name in live or (backend, name) in self.lingering:
                        return False  # the same replica at a new address: reload
                    _expect(haproxy, f"add server {backend}/{name} {server_args(server)}", "New")
                    haproxy.runtime(f"enable health {backend}/{name}")
                    haproxy.runtime(f"enable server {backend}/{name}")
                self.servers[backend] = dict(servers)
            haproxy.write(config)
        except (RuntimeError, OSError):
            logger.warning("gateway: changing servers in place failed; reloading", exc_info=True)
            return False
        return True

    def _remove(self, haproxy: Runtime, backend: str, name: str) -> None:
        haproxy.runtime(f"set server {backend}/{name} state maint")
        if "deleted" not in haproxy.runtime(f"del server {backend}/{name}"):
            self.lingering.add((backend, name))  # connections still open: later

    def retry_lingering(self, haproxy: Runtime) -> None:
        """Delete the servers in maintenance whose last connection has ended."""
        for backend, name in list(self.lingering):
            if haproxy.master_pid != self.master:
                return
            if "deleted" in haproxy.runtime(f"del server {backend}/{name}"):
                self.lingering.discard((backend, name))


def _expect(haproxy: Runtime, command: str, ok: str) -> None:
    reply = haproxy.runtime(command)
    if ok not in reply:
        raise RuntimeError(f"HAProxy refused {command.split()[0:3]}: {reply.strip()}")
