"""The driver's side of secrets and tokens: check and store an app's secrets before deploying,
and one client for the store, local (this machine's file) or a cluster's store actor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..common import remote_error
from ..compiler import endpoint_spec

if TYPE_CHECKING:
    from ..app import App


def prepare_secrets(app: App) -> None:
    """Put code-given secrets in the cluster's store; check that named ones exist there.

    Fails before anything is deployed, naming the secret, the key and the command to fix it.
    """
    refs = {ref.name: ref for f in app.web_endpoints for ref in endpoint_spec(f).secrets}
    if not refs:
        return
    import ray

    from ..services.store_actor import store_actor

    actor = store_actor()
    try:
        ray.get(
            [
                actor.put_secret.remote(ref.name, ref.values, True)
                for ref in refs.values()
                if ref.values is not None
            ]
        )
        named = [(r.name, r.required_keys) for r in refs.values() if r.values is None]
        ray.get(actor.check.remote(named))
    except Exception as exc:
        raise remote_error(exc) from None


class StoreClient:
    """The store's operations, on this machine's store file (``address=None``: what the
    local clusters read) or through a cluster's ``rayweb-store`` actor."""

    def __init__(self, address: str | None) -> None:
        self.local: Any = None
        self.actor: Any = None
        if address is None:
            from ..services.store import Store

            self.local = Store()
        else:
            from ..services.store_actor import store_actor
            from . import cluster

            cluster.ensure_ray(address)
            self.actor = store_actor()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.local is not None:
            return getattr(self.local, method)(*args, **kwargs)
        import ray

        try:
            return ray.get(getattr(self.actor, method).remote(*args, **kwargs))
        except Exception as exc:
            raise remote_error(exc) from None

    def create_token(self, name: str | None) -> tuple[str, str]:
        key, secret = self._call("create_token", name)
        return str(key), str(secret)

    def list_tokens(self) -> list[dict[str, Any]]:
        return list(self._call("list_tokens"))

    def revoke_token(self, key_or_name: str) -> list[str]:
        return list(self._call("revoke_token", key_or_name))

    def put_secret(self, name: str, values: Mapping[str, str], *, force: bool) -> None:
        self._call("put_secret", name, dict(values), force=force)

    def list_secrets(self) -> list[dict[str, Any]]:
        return list(self._call("list_secrets"))

    def delete_secret(self, name: str, *, allow_missing: bool) -> bool:
        return bool(self._call("delete_secret", name, allow_missing=allow_missing))
