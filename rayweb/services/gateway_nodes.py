"""The head gateway's followers on the other nodes (a mixin of ``GatewayActor``; what a
follower does is in ``followers.py``): started on each alive node when the gateway runs on
every node, given the served table after every change, forgotten with their node."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .haproxy_config import Route, routes_to_json
from .sessions import SessionTable
from .tokenmap import TokenMap

logger = logging.getLogger("rayweb.gateway")

NODES_WATCH_S = 2.0


class GatewayNodes:
    """``RAYWEB_GATEWAY_NODES=every``: one HAProxy per node, the head's table on each."""

    every_node: bool
    domain: str | None
    bind: tuple[str, int]
    key: str
    tokens: TokenMap
    sessions: SessionTable
    followers: dict[str, Any]  # node id -> follower actor

    def _served(self) -> dict[str, Route]:
        raise NotImplementedError

    def _head_address(self) -> tuple[str, int]:
        """Where other nodes reach the head's HAProxy (bound to loopback, only on the head's
        machine: a gateway on every node of a real cluster binds 0.0.0.0 or the node's
        address)."""
        import ray

        host, port = self.bind
        if host in ("0.0.0.0", "::"):
            host = str(ray.util.get_node_ip_address())
        return host, port

    async def _watch_nodes(self) -> None:
        """Start a follower on each alive node other than the head; forget dead nodes'."""
        import ray

        from .followers import start_follower

        if not self.every_node:
            return
        head_node = ray.get_runtime_context().get_node_id()
        loop = asyncio.get_running_loop()
        while True:
            try:
                nodes = await loop.run_in_executor(None, ray.nodes)
                alive = {n["NodeID"] for n in nodes if n.get("Alive")} - {head_node}
                for node in list(self.followers):
                    if node not in alive:
                        del self.followers[node]
                for node in sorted(alive - self.followers.keys()):
                    head = self._head_address()
                    follower = start_follower(node, *self.bind, head, self.key, self.domain)
                    await follower.address.remote()  # listening
                    self.followers[node] = follower
                    self._push({node: follower})
            except Exception:
                logger.warning("gateway: starting a node's gateway failed", exc_info=True)
            await asyncio.sleep(NODES_WATCH_S)

    def _push(self, followers: dict[str, Any] | None = None) -> None:
        """Give the followers the table HAProxy serves now (calls in order, not awaited)."""
        targets = self.followers if followers is None else followers
        if not targets:
            return
        served = self._served()
        table = json.dumps(routes_to_json(served))
        tokens = dict(self.tokens.digests)
        sessions = self.sessions.wanted(served)
        for follower in targets.values():
            follower.apply.remote(table, tokens, sessions, self.domain)

    async def node_gateways(self) -> dict[str, tuple[str, int]]:
        """Each follower's address, by node id (for ``rayweb`` and tests)."""
        out = {}
        for node, follower in list(self.followers.items()):
            try:
                host, port = await follower.address.remote()
                out[node] = (str(host), int(port))
            except Exception:
                logger.debug("a node gateway did not answer", exc_info=True)
        return out
