"""rayweb's cluster-wide helper actors: one per cluster, found by name, kept alive by Ray."""

from __future__ import annotations

from typing import Any

NAMESPACE = "rayweb"


def cluster_actor(cls: type, name: str, *args: Any, head: bool = True, **options: Any) -> Any:
    """The cluster's ``name`` actor of ``cls`` (created with ``args`` on first use): detached,
    no CPU, on the head node unless ``head=False``."""
    import ray

    if head:
        options.setdefault("resources", {"node:__internal_head__": 0.001})
    # Never inside the caller's placement group: a replica with placement-group bundles (a
    # web_server's sidecar, a GPU replica) captures its child actors, and the group has no
    # room for the head-node resource, so Ray would refuse the actor. "DEFAULT" opts out.
    options.setdefault("scheduling_strategy", "DEFAULT")
    actor_class: Any = ray.remote(cls)
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        **options,
    ).remote(*args)
