"""Non-web functions and classes (called with ``.remote()``) as Serve applications without
an HTTP route, and how a compiled endpoint imports its code from an uploaded ``working_dir``.

The mapping rules are ``core.py``'s (``deployment_options``, ``resource_plan``); this module
only assembles a function's payload. Pure: no Ray.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from ..spec import SHIPPED, EndpointSpec, FunctionPayload, ReplicaPayload, function_app_name
from ..volume import volume_root
from .app import pooled
from .core import (
    CompiledEndpoint,
    code_ref,
    compile_endpoint,
    deployment_options,
    files_of,
    max_inputs_of,
    resource_plan,
)

if TYPE_CHECKING:
    from ..app import App
    from ..classes import Cls
    from ..functions import Function


def function_spec(target: Function[Any, Any] | Cls) -> EndpointSpec:
    """The compiler's input for a non-web function or an ``@app.cls`` called with
    ``.remote()``: the same options and defaults as an endpoint, without a web decorator."""
    app, options = target.app, target.options
    image = options.image or app.image
    mounts, links = files_of(target)
    return EndpointSpec(
        tag=target.tag,
        label=target.tag,
        web=None,
        resources=options.resources,
        scaling=options.scaling,
        concurrency=target.concurrency,
        timeout=options.timeout,
        startup_timeout=options.startup_timeout,
        secrets=tuple(s.ref() for s in (*app.secrets, *options.secrets)),
        runtime_env=image.runtime_env() if image else {},
        batching=target.batching,
        mounts=mounts,
        links=links,
    )


def compile_function(
    target: Function[Any, Any] | Cls,
    *,
    dev: bool = False,
    name: str | None = None,
    routes: tuple[ReplicaPayload, ...] = (),
) -> CompiledEndpoint:
    """Compile a non-web function, or a class with ``@method``s, into a Serve application
    with no HTTP route: it is called through its deployment handle. ``name``: a class
    variant's own application (``variants.py``). ``routes``: a class's web methods, served
    by the same replicas at their own labels through the gateway (its pool)."""
    from ..classes import Cls

    spec = function_spec(target)
    name = name or function_app_name(target.app.name, target.tag, dev=dev)
    plan = resource_plan(spec)
    options = deployment_options(spec, plan=plan)
    options["name"] = "function"
    enter: tuple[str, ...] = ()
    exit: tuple[str, ...] = ()
    if isinstance(target, Cls):
        first = next(iter(target.functions.values()))
        code = dataclasses.replace(code_ref(first), attr=None)
        enter, exit = tuple(target.enter_methods), tuple(target.exit_methods)
    else:
        code = code_ref(target)
    payload = FunctionPayload(
        label=name,
        code=code,
        max_inputs=max_inputs_of(spec),
        is_cls=isinstance(target, Cls),
        enter_methods=enter,
        exit_methods=exit,
        secrets=tuple((s.name, s.required_keys) for s in spec.secrets),
        timeout=float(spec.timeout),
        dev=dev,
        batching=spec.batching,
        retries=target.options.retries,
        params=tuple(sorted(getattr(target, "overrides", {}).get("params", {}).items())),
        mounts=spec.mounts,
        links=spec.links,
        volume_root=str(volume_root()),
        routes=routes,
        # A pool's replicas poll the gateway for new code under `rayweb serve`, as web
        # endpoints' do; those of other functions do not (a save redeploys them).
        hot_swap=dev and bool(routes),
    )
    startup = float(spec.startup_timeout or spec.timeout)
    return CompiledEndpoint(name, None, target.tag, options, payload, plan, startup)


def compile_functions(app: App, *, dev: bool = False, pool: bool = True) -> list[CompiledEndpoint]:
    """Every non-web function of ``app`` and every class with callable (non-web) methods or,
    with ``pool`` (``compile_app``'s), web methods that share its replicas."""
    out = [compile_function(f, dev=dev) for f in app.registered_functions.values() if not f.is_web]
    for cls in app.registered_classes.values():
        web = [f for f in cls.functions.values() if pool and pooled(f)]
        if web or any(not f.is_web for f in cls.functions.values()):
            routes = tuple(_route(f, dev=dev) for f in web)
            out.append(compile_function(cls, dev=dev, routes=routes))
    return out


def _route(method: Function[Any, Any], *, dev: bool) -> ReplicaPayload:
    """A pooled web method's payload: what its own application's replicas would be told."""
    payload = compile_endpoint(method, dev=dev).payload
    assert isinstance(payload, ReplicaPayload)
    return dataclasses.replace(payload, hot_swap=False)  # the pool swaps, not each route


def ship(ep: CompiledEndpoint, working_dir: str) -> CompiledEndpoint:
    """The endpoint with its code imported from the uploaded ``working_dir``."""
    if ep.payload.code.sys_path is None:
        return ep  # pickled by value: travels in the payload
    root = ep.payload.code.sys_path
    code = dataclasses.replace(ep.payload.code, sys_path=None)
    actor = dict(ep.deployment_options["ray_actor_options"])
    actor["runtime_env"] = {**actor.get("runtime_env", {}), "working_dir": working_dir}
    # Image.add_local_* files under the shipped root link to their shipped copy
    links = tuple((remote, _shipped(local, root)) for remote, local in ep.payload.links)
    payload: ReplicaPayload | FunctionPayload = dataclasses.replace(
        ep.payload, code=code, links=links
    )
    sidecar = payload.sidecar if isinstance(payload, ReplicaPayload) else None
    if isinstance(payload, ReplicaPayload) and sidecar is not None:
        # a web_server's code runs in its sidecar actor
        sidecar = {
            **sidecar,
            "runtime_env": {**sidecar.get("runtime_env", {}), "working_dir": working_dir},
        }
        payload = dataclasses.replace(payload, sidecar=sidecar)
    options = {**ep.deployment_options, "ray_actor_options": actor}
    return dataclasses.replace(ep, deployment_options=options, payload=payload)


def _shipped(local: str, root: str) -> str:
    """A local path under the shipped ``root``: the same path in the replica's working
    directory (``SHIPPED`` + the relative path); others stay as they are."""
    rel = os.path.relpath(local, root)
    if rel.split(os.sep)[0] == os.pardir:
        return local
    return SHIPPED + rel
