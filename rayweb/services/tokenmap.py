"""The cluster's tokens as the gateway's HAProxy checks them on the direct hop.

A direct route with proxy auth (``haproxy_direct.py``) looks the SHA-256 digest of a
request's ``key.secret`` up in a map file in the gateway's folder. :class:`TokenMap` keeps
that file equal to the store's active tokens (``Store.token_digests``, asked every second
while such a route exists) and the running HAProxy worker equal to the file, through the
runtime API's ``add map``/``del map`` (no reload, so a revoked token is refused within about
a second, as the replica's own check does). While some active token has no digest (made
before digests were kept), the map is incomplete and such routes stay on the replica's path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .maps import write_map

MAP_FILE = "tokens.map"

# (known version) -> (version, ({digest: key}, complete) or None when unchanged)
FetchDigests = Callable[[int], Awaitable[tuple[int, Any]]]


class TokenMap:
    """The map file and what HAProxy holds of it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / MAP_FILE
        self.version = -1
        self.digests: dict[str, str] = {}
        self.complete = False
        self._write()  # HAProxy refuses a config whose map file does not exist

    @property
    def ready(self) -> bool:
        """Whether the map holds every active token (direct routes may check auth there)."""
        return self.version >= 0 and self.complete

    async def refresh(self, fetch: FetchDigests) -> tuple[dict[str, str], set[str], bool] | None:
        """Read the store again: None if nothing changed, else (added, removed, whether
        ``ready`` changed); the file is already written."""
        version, found = await fetch(self.version)
        if found is None:
            self.version = version
            return None
        digests, complete = dict(found[0]), bool(found[1])
        was_ready = self.ready
        added = {d: k for d, k in digests.items() if d not in self.digests}
        removed = self.digests.keys() - digests.keys()
        self.version, self.digests, self.complete = version, digests, complete
        self._write()
        return added, removed, self.ready != was_ready

    def commands(self, added: dict[str, str], removed: set[str]) -> list[str]:
        """The runtime API commands that bring a running worker from the old map to this."""
        return [f"del map {self.path} {d}" for d in sorted(removed)] + [
            f"add map {self.path} {d} {k}" for d, k in sorted(added.items())
        ]

    def _write(self) -> None:
        write_map(self.path, self.digests)
