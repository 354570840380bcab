"""The one bridge from rayweb specs to Ray Serve.

``compile_endpoint`` is pure: it maps an :class:`~rayweb.spec.EndpointSpec` to Serve
deployment options (DESIGN.md section 4) and the replica's payload. ``build_application``
turns that into a Serve ``Application`` (importing Ray only there), so the mapping is
unit-tested without a cluster.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exception import InvalidError
from .spec import CodeRef, EndpointSpec, GpuSpec, ReplicaPayload

if TYPE_CHECKING:
    from .app import App
    from .functions import Function

DEFAULT_NUM_CPUS = 0.1  # a whole CPU per replica starves a 2-core node
PROXY_NUM_CPUS = 0.05  # a web_server replica only proxies; its sidecar holds the resources
DEFAULT_MAX_CONTAINERS = 10  # each replica is a process: cap what one burst can start
DEFAULT_SCALEDOWN_WINDOW = 60  # seconds, Modal's default
DEV_SUFFIX = "dev"
BUFFER_POLICY = "rayweb.runtime.autoscaling:BufferedPolicy"


@dataclass(frozen=True)
class CompiledEndpoint:
    """One Serve application: its name (= URL label), route prefix, options and payload."""

    name: str
    route_prefix: str
    tag: str
    deployment_options: dict[str, Any] = field(hash=False)
    payload: ReplicaPayload = field(hash=False)


def app_label(spec: EndpointSpec, *, dev: bool) -> str:
    """The served label: ``rayweb serve`` adds ``-dev`` like ``modal serve``."""
    return f"{spec.label}-{DEV_SUFFIX}" if dev else spec.label


def choose_gpu(choices: Sequence[GpuSpec], available: Iterable[str] | None) -> GpuSpec | None:
    """The first GPU choice the cluster has, else the first (an autoscaler may add it)."""
    if not choices:
        return None
    if available is not None:
        have = set(available)
        for choice in choices:
            if choice.accelerator is None or choice.accelerator in have:
                return choice
    return choices[0]


def deployment_options(
    spec: EndpointSpec, *, available_accelerators: Iterable[str] | None = None
) -> dict[str, Any]:
    """Serve deployment options for one endpoint (DESIGN.md section 4)."""
    res, scaling = spec.resources, spec.scaling
    actor: dict[str, Any] = {"num_cpus": res.cpu if res.cpu is not None else DEFAULT_NUM_CPUS}
    gpu = choose_gpu(res.gpu, available_accelerators)
    if gpu is not None:
        actor["num_gpus"] = gpu.count
        if gpu.accelerator:
            actor["accelerator_type"] = gpu.accelerator
    if res.memory is not None:
        actor["memory"] = res.memory * 1024 * 1024
    if spec.runtime_env:
        actor["runtime_env"] = spec.runtime_env

    max_inputs = spec.concurrency.max_inputs if spec.concurrency else 1
    target = (spec.concurrency.target_inputs if spec.concurrency else None) or max_inputs
    min_replicas = scaling.min_containers or 0
    max_replicas = scaling.max_containers or max(DEFAULT_MAX_CONTAINERS, min_replicas)
    autoscaling: dict[str, Any] = {
        "min_replicas": min_replicas,
        # Start one replica even when scaling to zero, so a broken @enter fails the deploy
        # instead of the first request; it scales down after the scaledown window.
        "initial_replicas": max(1, min_replicas),
        "max_replicas": max_replicas,
        "target_ongoing_requests": target,
        "downscale_delay_s": float(scaling.scaledown_window or DEFAULT_SCALEDOWN_WINDOW),
        "upscale_delay_s": 0.0,
    }
    # Always rayweb's policy: it also counts requests on the direct (gateway) path.
    autoscaling["policy"] = {
        "policy_function": BUFFER_POLICY,
        "policy_kwargs": {"buffer": scaling.buffer_containers or 0},
    }
    return {
        "name": spec.label,
        "max_ongoing_requests": max_inputs,
        "autoscaling_config": autoscaling,
        "ray_actor_options": actor,
        # Keep old replicas serving until new ones are ready (DESIGN.md section 7).
        "max_surge_percent": 100,
        "graceful_shutdown_timeout_s": float(min(spec.timeout, 30)),
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
    }


def code_ref(function: Function[Any, Any]) -> CodeRef:
    """Where replicas find this function's code: by module when importable, else pickled."""
    target: Any = function.cls if function.cls is not None else function
    raw = function.cls.user_cls if function.cls is not None else function.raw_f
    attr = function.tag.split(".", 1)[1] if function.cls is not None else None
    module_name = getattr(raw, "__module__", None)
    module = sys.modules.get(module_name or "")
    qualname = getattr(raw, "__qualname__", "")
    file = getattr(module, "__file__", None)
    if (
        function.options.serialized
        or module is None
        or module_name == "__main__"
        or "<locals>" in qualname
        or file is None
    ):
        from ray import cloudpickle

        return CodeRef(
            qualname=qualname, tag=function.tag, pickled=cloudpickle.dumps(target), attr=attr
        )
    return CodeRef(
        qualname=qualname,
        tag=function.tag,
        module=module_name,
        sys_path=_import_root(file, module_name),
        attr=attr,
    )


def _import_root(file: str, module_name: str | None) -> str:
    """The sys.path entry from which ``module_name`` imports as ``file``."""
    path = os.path.abspath(file)
    depth = (module_name or "").count(".") + 1
    if os.path.basename(path) == "__init__.py":
        depth += 1
    for _ in range(depth):
        path = os.path.dirname(path)
    return path


def compile_endpoint(
    function: Function[Any, Any],
    *,
    dev: bool = False,
    available_accelerators: Iterable[str] | None = None,
) -> CompiledEndpoint:
    """Compile one web function or web method."""
    spec = function.endpoint_spec()
    name = app_label(spec, dev=dev)
    options = deployment_options(spec, available_accelerators=available_accelerators)
    sidecar = None
    if spec.web.kind == "web_server":
        sidecar = _split_for_sidecar(options)
    cls = function.cls
    payload = ReplicaPayload(
        label=name,
        code=code_ref(function),
        web=spec.web,
        max_inputs=options["max_ongoing_requests"],
        is_cls=cls is not None,
        enter_methods=tuple(cls.enter_methods) if cls else (),
        exit_methods=tuple(cls.exit_methods) if cls else (),
        secrets=tuple((s.name, s.required_keys) for s in spec.secrets),
        auth_headers=spec.auth_headers if spec.web.requires_proxy_auth else None,
        sidecar=sidecar,
        limits=spec.limits,
        # Serve's force-kill deadline is the graceful shutdown timeout; leave it some slack.
        drain_s=max(1.0, options["graceful_shutdown_timeout_s"] - 3.0),
        # `rayweb serve` swaps new source into running replicas; a web_server's code runs in
        # its sidecar process, so it is always redeployed.
        hot_swap=dev and spec.web.kind != "web_server",
    )
    return CompiledEndpoint(name, f"/{name}", function.tag, options, payload)


def _split_for_sidecar(options: dict[str, Any]) -> dict[str, Any]:
    """Move a web_server's resources to its sidecar actor (bundle 1 of the replica's
    placement group, packed on the same node); the proxy replica keeps almost nothing."""
    actor = options["ray_actor_options"]
    sidecar: dict[str, Any] = {"num_cpus": actor["num_cpus"]}
    bundle: dict[str, float] = {"CPU": actor["num_cpus"]}
    if actor.get("num_gpus"):
        sidecar["num_gpus"] = bundle["GPU"] = actor["num_gpus"]
    if actor.get("accelerator_type"):
        key = f"accelerator_type:{actor['accelerator_type']}"
        sidecar["resources"] = {key: 0.001}
        bundle[key] = 0.001
    if actor.get("memory"):
        sidecar["memory"] = bundle["memory"] = actor["memory"]
    if actor.get("runtime_env"):
        sidecar["runtime_env"] = actor["runtime_env"]
    options["ray_actor_options"] = {"num_cpus": PROXY_NUM_CPUS}
    options["placement_group_bundles"] = [{"CPU": PROXY_NUM_CPUS}, bundle]
    options["placement_group_strategy"] = "STRICT_PACK"
    # A dead server should be noticed (and its replica replaced) in seconds, not 10+.
    options["health_check_period_s"] = 2.0
    options["health_check_timeout_s"] = 10.0
    return sidecar


def compile_app(
    app: App, *, dev: bool = False, available_accelerators: Iterable[str] | None = None
) -> list[CompiledEndpoint]:
    """Compile every web endpoint of ``app``; duplicate labels are an error."""
    endpoints = [
        compile_endpoint(f, dev=dev, available_accelerators=available_accelerators)
        for f in app.web_endpoints
    ]
    owners: dict[str, str] = {}
    for ep in endpoints:
        if ep.name in owners:
            raise InvalidError(
                f"Duplicate URL label {ep.name!r}: used by both {owners[ep.name]} and {ep.tag}. "
                "Suggestion: give one of them label='another-name'."
            )
        owners[ep.name] = ep.tag
    if not endpoints:
        raise InvalidError(
            f"App {app.name!r} has no web endpoints to serve. Suggestion: decorate a function "
            "with @app.function() above @rayweb.fastapi_endpoint() or @rayweb.asgi_app()."
        )
    return endpoints


def build_application(endpoint: CompiledEndpoint) -> Any:
    """The Serve ``Application`` for one compiled endpoint (imports Ray Serve)."""
    from ray import serve

    from .runtime.replica import RaywebReplica

    deployment = serve.deployment(RaywebReplica).options(  # type: ignore[attr-defined]
        **endpoint.deployment_options
    )
    return deployment.bind(endpoint.payload)


def replicas_needed(options: dict[str, Any]) -> dict[str, float]:
    """Resources one replica reserves, in Ray's resource names (for messages)."""
    actor = options["ray_actor_options"]
    need = {"CPU": actor.get("num_cpus", 0)}
    if actor.get("num_gpus"):
        need["GPU"] = actor["num_gpus"]
    if actor.get("accelerator_type"):
        need[f"accelerator_type:{actor['accelerator_type']}"] = 0.001
    if actor.get("memory"):
        need["memory"] = actor["memory"]
    return {k: v for k, v in need.items() if v}


__all__ = [
    "CompiledEndpoint",
    "app_label",
    "build_application",
    "choose_gpu",
    "code_ref",
    "compile_app",
    "compile_endpoint",
    "deployment_options",
    "replicas_needed",
]
