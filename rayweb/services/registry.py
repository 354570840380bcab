"""The ``rayweb-deployments`` actor: what each app deployed last, for rollback and removals.

Detached, on the head node, no CPU. It keeps the compiled endpoints of each app's last
successful ``rayweb deploy`` as opaque values; the driver decides what to do with them.
"""

from __future__ import annotations

from typing import Any

from .actors import NAMESPACE, cluster_actor

REGISTRY_NAME = "rayweb-deployments"


class DeployRegistry:
    """app name -> {endpoint name: compiled endpoint} of its last successful deploy."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}

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
