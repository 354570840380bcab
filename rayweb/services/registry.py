"""The ``rayweb-deployments`` actor: what each app deployed last, for rollback and removals.

Detached, on the head node, no CPU. It keeps the compiled endpoints of each app's last
successful ``rayweb deploy`` as opaque values (the driver decides what to do with them), and
who is starting which class variant (``Cls.with_options``), so concurrent callers start it once.
"""

from __future__ import annotations

from typing import Any

from .actors import NAMESPACE, cluster_actor

REGISTRY_NAME = "rayweb-deployments"


class DeployRegistry:
    """app name -> {endpoint name: compiled endpoint} of its last successful deploy."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, float] = {}  # class variant -> when its claim runs out

    def claim(self, name: str, ttl_s: float) -> bool:
        """True for the one caller that starts a class variant (``Cls.with_options``) now;
        the others wait for it. A claim runs out after ``ttl_s`` (its caller died)."""
        import time

        now = time.monotonic()
        if self.claims.get(name, 0.0) > now:
            return False
        self.claims[name] = now + ttl_s
        return True

    def release(self, name: str) -> None:
        self.claims.pop(name, None)

    def get(self, app: str) -> dict[str, Any] | None:
        return self.apps.get(app)

    def put(self, app: str, endpoints: dict[str, Any]) -> None:
        self.apps[app] = endpoints

    def forget(self, endpoint: str) -> None:
        for endpoints in self.apps.values():
            endpoints.pop(endpoint, None)


def deploy_registry() -> Any:
    """The cluster's registry actor (created on the head node on first use)."""
    return cluster_actor(DeployRegistry, REGISTRY_NAME)


def forget_deployed(endpoint: str) -> None:
    """A stopped endpoint is no longer part of its app's last deploy."""
    import ray

    try:
        registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    ray.get(registry.forget.remote(endpoint))
