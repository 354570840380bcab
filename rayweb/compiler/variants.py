"""A class's variant (``Cls.with_options``, ``with_concurrency``, ``with_batching``, and each
parameter set, ``Model(size=3)``): compiled and started where it is first called.

A variant is the class with other options or parameters, served by a Serve application of
its own named ``<the class's application>~<key>`` (the key hashes what was overridden;
labels never hold ``~``). The first caller claims it on the cluster (the
``rayweb-deployments`` actor), compiles it with the class's own rules and starts it;
concurrent callers wait for it to run. In a
replica of a deployed app the variant imports its code from the same uploaded
``working_dir``. A class looked up by name has no code in the caller: its base application's
replicas start the variant (``RaywebFunctionReplica.rayweb_variant``). Variants go with
their class: deleting or redeploying it deletes them (``driver/status.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..exception import DeploymentError
from ..services.serve_apps import app_states
from .app import build_application
from .functions import compile_function, ship

VARIANT_SEP = "~"
POLL_S = 0.1


def variant_app_name(base_name: str, key: str) -> str:
    return f"{base_name}{VARIANT_SEP}{key}"


def variants_of(names: Iterable[str], applications: Iterable[str]) -> list[str]:
    """The variants among ``applications`` of the applications ``names`` (pure)."""
    bases = set(names)
    return [a for a in applications if VARIANT_SEP in a and a.split(VARIANT_SEP)[0] in bases]


def _status(name: str) -> tuple[str, str]:
    app = app_states([name]).get(name)
    if app is None:
        return "", ""
    return app.status, app.message


def start_variant(variant: Any, name: str, *, dev: bool) -> None:
    """Make sure the Serve application ``name`` runs ``variant`` (a ``classes.Cls``):
    start it if nobody has, wait while it starts. Raises ``DeploymentError`` if it fails."""
    import ray
    from ray import serve

    from ..services.registry import deploy_registry

    if _status(name)[0] == "RUNNING":
        return
    endpoint = compile_function(variant, dev=dev, name=name)
    limit = endpoint.startup_timeout + 30.0
    registry = deploy_registry()
    if ray.get(registry.claim.remote(name, limit)):
        working_dir = (ray.get_runtime_context().runtime_env or {}).get("working_dir")
        if working_dir:
            endpoint = ship(endpoint, working_dir)
        try:
            target = serve.RunTarget(build_application(endpoint), name=name, route_prefix=None)
            serve.run_many(
                [target],
                wait_for_ingress_deployment_creation=False,
                wait_for_applications_running=False,
            )
        except BaseException:
            registry.release.remote(name)
            raise
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, message = _status(name)
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            registry.release.remote(name)
            raise DeploymentError(
                f"rayweb: the variant of {variant.tag} ({_describe(variant)}) failed to start: "
                f"{message.strip().splitlines()[-1] if message.strip() else status}"
            )
        time.sleep(POLL_S)
    registry.release.remote(name)
    raise DeploymentError(
        f"rayweb: the variant of {variant.tag} ({_describe(variant)}) did not start within "
        f"{limit:.0f} s. Suggestion: check that the cluster has what it asks for "
        "(`rayweb app list`, `ray status`)."
    )


def _describe(variant: Any) -> str:
    parts = []
    for kind, value in variant.overrides.items():
        if kind in ("options", "params"):
            parts += [f"{k}={v!r}" for k, v in value.items()]
        else:
            parts.append(f"{kind}={value!r}")
    return ", ".join(parts)
