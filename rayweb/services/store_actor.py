"""The ``rayweb-store`` actor: the cluster's secret and token store, on the head node.

Detached and named, so every replica, sidecar and remote CLI of the cluster finds the same
one; it holds no CPU. It wraps :class:`~rayweb.services.store.Store` on the head node's filesystem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tokens import FetchHashes
from .store import Store

STORE_NAME = "rayweb-store"


class StoreActor:
    def __init__(self) -> None:
        self.store = Store()

    def put_secret(self, name: str, values: Mapping[str, str], force: bool = False) -> None:
        self.store.put_secret(name, values, force=force)

    def resolve(self, refs: list[tuple[str, tuple[str, ...]]]) -> dict[str, str]:
        """The environment for these secret references, in order (later ones win)."""
        env: dict[str, str] = {}
        for name, required in refs:
            env.update(self.store.get_secret(name, tuple(required)))
        return env

    def check(self, refs: list[tuple[str, tuple[str, ...]]]) -> None:
        self.resolve(refs)

    def list_secrets(self) -> list[dict[str, Any]]:
        return self.store.list_secrets()

    def delete_secret(self, name: str, allow_missing: bool = False) -> bool:
        return self.store.delete_secret(name, allow_missing=allow_missing)

    def create_token(self, name: str | None = None) -> tuple[str, str]:
        return self.store.create_token(name)

    def list_tokens(self) -> list[dict[str, Any]]:
        return self.store.list_tokens()

    def revoke_token(self, key_or_name: str) -> list[str]:
        return self.store.revoke_token(key_or_name)

    def token_hashes(
        self, known_version: int = -1
    ) -> tuple[int, dict[str, tuple[str, str]] | None]:
        """(version, hashes), or (version, None) when nothing changed since ``known_version``."""
        version = self.store.version
        if version == known_version:
            return version, None
        return version, self.store.token_hashes()

    def token_digests(self, known_version: int = -1) -> tuple[int, Any]:
        """(version, (digests, complete)) as ``Store.token_digests``, or (version, None) when
        nothing changed since ``known_version`` (the gateway asks every second)."""
        version = self.store.version
        if version == known_version:
            return version, None
        return version, self.store.token_digests()


def store_actor() -> Any:
    """The cluster's store actor (created on the head node on first use)."""
    from .actors import cluster_actor

    return cluster_actor(StoreActor, STORE_NAME, max_restarts=-1)


def token_fetch() -> FetchHashes:
    """Token hashes from the cluster's store, for a :class:`~rayweb.tokens.TokenCheck`."""
    actor = store_actor()

    async def fetch(version: int) -> tuple[int, dict[str, tuple[str, str]] | None]:
        result: tuple[int, dict[str, tuple[str, str]] | None]
        result = await actor.token_hashes.remote(version)
        return result

    return fetch
