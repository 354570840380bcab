"""Web endpoints: every mapping rule from a rayweb spec to Serve options lives here.

``compile_endpoint`` is pure: it builds a function's :class:`~rayweb.spec.EndpointSpec`
(with rayweb's defaults), the replica's :class:`ResourcePlan`, the Serve deployment options
(docs/architecture.md section 4) and the replica's payload (``app.py``'s
``build_application`` turns that into a Serve ``Application``), so the mapping is
unit-tested without a cluster. The KubeRay renderer and the driver's "cannot be placed"
message read the same plan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..exception import InvalidError
from ..localfiles import check_overlaps, plan_links
from ..servers import Server
from ..spec import (
    CodeRef,
    EndpointSpec,
    FunctionPayload,
    GpuSpec,
    Limits,
    ReplicaPayload,
)
from ..volume import volume_root

if TYPE_CHECKING:
    from ..classes import Cls
    from ..functions import Function

DEFAULT_NUM_CPUS = 0.1  # a whole CPU per replica starves a 2-core node
PROXY_NUM_CPUS = 0.05  # a web_server replica only proxies; its sidecar holds the resources
DEFAULT_MAX_CONTAINERS = 10  # each replica is a process: cap what one burst can start
DEFAULT_SCALEDOWN_WINDOW = 60  # seconds, Modal's default
DEV_SUFFIX = "dev"
BUFFER_POLICY = "rayweb.services.autoscaling:BufferedPolicy"
# HAProxy sends each replica up to this many times its slots. One: a request beyond them
# waits in HAProxy's queue (which the autoscaling policy reads) and goes to whichever replica
# frees a slot first, a new one included, as Modal queues inputs for the function, not per
# container. (It was 4, from before the queue was seen: requests then waited behind a busy
# replica while the replicas started for them idled and, with scaledown_window kept, stopped.)
GATEWAY_QUEUE_FACTOR = 1
ACCELERATOR_SHARE = 0.001  # asks for "a node of this type" without using up the resource
# @app.server without max_concurrency takes any number of requests (Modal: "unlimited"):
# the server itself decides; this only bounds what one replica is sent at once.
SERVER_MAX_INPUTS = 1000
SERVER_EXIT_SLACK_S = 20.0  # after the grace period: stop the server, run @exit
SERVER_START_SLACK_S = 20.0  # a container's own start, before its startup_timeout begins


@dataclass(frozen=True)
class ResourcePlan:
    """What one replica reserves, in Ray's resource names (``CPU``, ``GPU``, ``memory`` in
    bytes, ``accelerator_type:<X>``): the replica actor itself and, for a ``web_server``, the
    sidecar actor that holds the endpoint's resources on the same node."""

    replica: Mapping[str, float]
    sidecar: Mapping[str, float] = field(default_factory=dict)

    @property
    def total(self) -> dict[str, float]:
        out = dict(self.replica)
        for key, value in self.sidecar.items():
            out[key] = out.get(key, 0) + value
        return {k: v for k, v in out.items() if v}

    @property
    def cpus(self) -> float:
        return float(self.total.get("CPU", 0))

    @property
    def gpus(self) -> float:
        return float(self.total.get("GPU", 0))

    @property
    def accelerator(self) -> str | None:
        prefix = "accelerator_type:"
        return next((k[len(prefix) :] for k in self.total if k.startswith(prefix)), None)

    def missing(self, have: Mapping[str, float]) -> list[str]:
        """The resources a cluster with ``have`` lacks for one replica."""
        return [k for k, v in self.total.items() if have.get(k, 0) < v]


@dataclass(frozen=True)
class CompiledEndpoint:
    """One Serve application: its name (= URL label), route prefix, options and payload."""

    name: str
    route_prefix: str | None  # None: a function called through its handle (no HTTP route)
    tag: str
    deployment_options: dict[str, Any] = field(hash=False)
    payload: ReplicaPayload | FunctionPayload = field(hash=False)
    plan: ResourcePlan = field(default_factory=lambda: ResourcePlan({}), hash=False)
    startup_timeout: float = 300.0  # how long a deploy may wait for it (Modal's rule)

    @property
    def web_routes(self) -> list[tuple[str, str, ReplicaPayload]]:
        """(tag, label, payload) of each URL this application serves: a web endpoint's own,
        or the web methods of a class's pool (served at the gateway, not by Serve's proxy)."""
        if isinstance(self.payload, ReplicaPayload):
            return [(self.tag, self.name, self.payload)]
        return [(route.code.tag, route.label, route) for route in self.payload.routes]

    def gateway_routes(self) -> list[dict[str, Any]]:
        """What the gateway is told of each URL before any replica exists
        (``GatewayActor.declare``): path, body limit, admission (rate limit, proxy auth),
        sticky sessions, and the application that serves it (a class's pool, for its web
        methods)."""
        out = []
        for _tag, label, payload in self.web_routes:
            limits = payload.limits
            out.append(
                {
                    "app": label,
                    "prefix": f"/{label}",
                    "max_body": limits.max_request_body,
                    "body_timeout": limits.body_timeout,
                    "admission": {
                        "auth_headers": payload.auth_headers,
                        "rate_limit": limits.rate_limit,
                        "rate_limit_burst_s": limits.rate_limit_burst_s,
                    },
                    "serve_app": None if label == self.name else self.name,
                    "sessioned": payload.web.sessioned,
                }
            )
        return out


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


def endpoint_spec(function: Function[Any, Any]) -> EndpointSpec:
    """The compiler's input for one web endpoint: the function's options over the app's, with
    rayweb's defaults (code-given secrets keep their values here, on the driver)."""
    if function.web is None:
        raise InvalidError(f"{function.tag} is not a web endpoint.")
    app, options = function.app, function.options
    secrets = tuple(s.ref() for s in (*app.secrets, *options.secrets))
    image = options.image or app.image
    mounts, links = files_of(function)
    return EndpointSpec(
        tag=function.tag,
        label=function.label,
        web=function.web,
        resources=options.resources,
        scaling=options.scaling,
        concurrency=function.concurrency,
        timeout=options.timeout,
        startup_timeout=options.startup_timeout,
        secrets=secrets,
        auth_headers=app.auth_headers,
        runtime_env=image.runtime_env() if image else {},
        limits=options.limits or app.limits or Limits(),
        mounts=mounts,
        links=links,
        server=function.cls.spec if isinstance(function.cls, Server) else None,
    )


def files_of(
    target: Function[Any, Any] | Cls,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """A function's volume mounts ``(path, volume directory)`` and its image's local files
    ``(remote path, local path)``, checked (local paths exist; no path inside another)."""
    mounts = tuple((path, vol.dir_name) for path, vol in target.options.volumes)
    image = target.options.image or target.app.image
    links = plan_links(image.local_files, volume_root()) if image and image.local_files else ()
    check_overlaps(mounts, links)
    return mounts, links


def resource_plan(
    spec: EndpointSpec, *, available_accelerators: Iterable[str] | None = None
) -> ResourcePlan:
    """What one replica of ``spec`` reserves; a ``web_server``'s resources go to its sidecar."""
    res = spec.resources
    need: dict[str, float] = {"CPU": res.cpu if res.cpu is not None else DEFAULT_NUM_CPUS}
    gpu = choose_gpu(res.gpu, available_accelerators)
    if gpu is not None:
        need["GPU"] = gpu.count
        if gpu.accelerator:
            need[f"accelerator_type:{gpu.accelerator}"] = ACCELERATOR_SHARE
    if res.memory is not None:
        need["memory"] = res.memory * 1024 * 1024
    if spec.web is not None and spec.web.sidecar:
        return ResourcePlan({"CPU": PROXY_NUM_CPUS}, need)
    return ResourcePlan(need)


def _actor_options(need: Mapping[str, float]) -> dict[str, Any]:
    """Ray actor options asking for ``need`` (the inverse of the plan's resource names)."""
    actor: dict[str, Any] = {"num_cpus": need.get("CPU", 0)}
    if need.get("GPU"):
        actor["num_gpus"] = need["GPU"]
    if need.get("memory"):
        actor["memory"] = need["memory"]
    return actor


def deployment_options(
    spec: EndpointSpec,
    *,
    available_accelerators: Iterable[str] | None = None,
    plan: ResourcePlan | None = None,
) -> dict[str, Any]:
    """Serve deployment options for one endpoint (docs/architecture.md section 4), from its
    resource ``plan`` (made here from ``spec`` when not given)."""
    if plan is None:
        plan = resource_plan(spec, available_accelerators=available_accelerators)
    scaling = spec.scaling
    actor = _actor_options(plan.replica)
    if plan.accelerator and not plan.sidecar:
        actor["accelerator_type"] = plan.accelerator
    if spec.runtime_env and not plan.sidecar:  # a web_server's code runs in its sidecar
        actor["runtime_env"] = spec.runtime_env

    max_inputs = max_inputs_of(spec)
    target: float = (spec.concurrency.target_inputs if spec.concurrency else None) or max_inputs
    if spec.batching:  # @batched: each input slot takes a whole batch (Serve's batching)
        max_inputs, target = max_inputs * spec.batching[0], target * spec.batching[0]
    min_replicas = scaling.min_containers or 0
    max_replicas = scaling.max_containers or max(DEFAULT_MAX_CONTAINERS, min_replicas)
    server = spec.server
    if server is not None:
        if server.target_concurrency:
            target = server.target_concurrency
        else:
            # Modal's Servers autoscale only with target_concurrency; without it the pool is
            # min_containers (one is started when a request finds none).
            max_replicas = max(1, min_replicas)
    autoscaling: dict[str, Any] = {
        "min_replicas": min_replicas,
        # Start one replica even when scaling to zero, so a broken @enter fails the deploy
        # instead of the first request; it scales down after the scaledown window.
        "initial_replicas": max(1, min_replicas),
        "max_replicas": max_replicas,
        "target_ongoing_requests": target,
        **scaledown_timing(float(scaling.scaledown_window or DEFAULT_SCALEDOWN_WINDOW)),
        "upscale_delay_s": float(server.scaleup_window or 0) if server else 0.0,
    }
    # Always rayweb's policy: it also counts requests on the direct (gateway) path.
    autoscaling["policy"] = {
        "policy_function": BUFFER_POLICY,
        "policy_kwargs": {"buffer": scaling.buffer_containers or 0},
    }
    options: dict[str, Any] = {
        "name": spec.label,
        "max_ongoing_requests": max_inputs,
        "autoscaling_config": autoscaling,
        "ray_actor_options": actor,
        # Keep old replicas serving until new ones are ready (DESIGN.md section 7).
        "max_surge_percent": 100,
        "graceful_shutdown_timeout_s": _graceful_shutdown_s(spec),
        # Serve sleeps one wait loop before it checks for requests in flight (default 2 s,
        # the most of an idle replica's stop); the gateway stops sending to a replica before
        # it drains, so half a second is enough notice for Serve's own routers.
        "graceful_shutdown_wait_loop_s": 0.5,
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
    }
    if plan.sidecar:
        # The sidecar (bundle 1) holds the resources, packed on the proxy replica's node.
        options["placement_group_bundles"] = [dict(plan.replica), dict(plan.sidecar)]
        options["placement_group_strategy"] = "STRICT_PACK"
        # A dead server should be noticed (and its replica replaced) in seconds, not 10+.
        options["health_check_period_s"] = 2.0
        options["health_check_timeout_s"] = 10.0
    return options


SCALEDOWN_LAG_INTERVALS = 1.5  # how late, in push intervals, a replica's last busy figure ages out


def scaledown_timing(window: float) -> dict[str, float]:
    """Modal's ``scaledown_window`` (how long a container stays idle before it stops) as Serve
    times it: Serve averages ongoing requests over ``look_back_period_s`` and only once that
    average says "fewer" does it count ``downscale_delay_s``, so the two add up to the window
    (Serve's defaults alone, a 30 s look-back, made a 2 s window take ~43 s). Replicas record
    their figures every ``metrics_interval_s`` (a quarter of the look-back, 0.5-2 s; Serve's
    default is 10 s) and push them as often, so the last busy figure leaves the average up
    to two intervals after the last request, 1.5 on average (measured with
    ``bench/scaledown.py``): the delay leaves that out too."""
    look_back = min(30.0, max(1.0, window / 2))
    interval = min(2.0, max(0.5, look_back / 4))
    return {
        "look_back_period_s": look_back,
        "downscale_delay_s": max(0.0, window - look_back - SCALEDOWN_LAG_INTERVALS * interval),
        "metrics_interval_s": interval,
    }


def max_inputs_of(spec: EndpointSpec) -> int:
    """``@concurrent(max_inputs)``, else Modal's one input per container; a Server's
    ``max_concurrency``, else no limit of its own."""
    if spec.server is not None:
        return spec.server.max_concurrency or SERVER_MAX_INPUTS
    return spec.concurrency.max_inputs if spec.concurrency else 1


def _graceful_shutdown_s(spec: EndpointSpec) -> float:
    """How long Serve lets a stopping replica finish: a Server's ``exit_grace_period`` for
    requests in flight plus the time to stop its server and run ``@exit``."""
    if spec.server is not None:
        return float(spec.server.exit_grace_period) + SERVER_EXIT_SLACK_S
    return float(min(spec.timeout, 30))


def drain_seconds(spec: EndpointSpec, graceful_shutdown_s: float) -> float:
    """How long a stopping replica waits for requests in flight on its own port."""
    if spec.server is not None:
        return float(max(1, spec.server.exit_grace_period))
    # Serve's force-kill deadline is the graceful shutdown timeout; leave it some slack.
    return max(1.0, graceful_shutdown_s - 3.0)


def _sidecar_options(plan: ResourcePlan, runtime_env: dict[str, Any]) -> dict[str, Any]:
    """The web_server sidecar actor's options (it runs the user's code: it gets the env)."""
    sidecar = _actor_options(plan.sidecar)
    if plan.accelerator:
        sidecar["resources"] = {f"accelerator_type:{plan.accelerator}": ACCELERATOR_SHARE}
    if runtime_env:
        sidecar["runtime_env"] = runtime_env
    return sidecar


def code_ref(function: Function[Any, Any]) -> CodeRef:
    """Where replicas find this function's code: by module when importable, else pickled."""
    target: Any = function.cls if function.cls is not None else function
    raw = function.cls.user_cls if function.cls is not None else function.raw_f
    attr = function.tag.partition(".")[2] or None  # a method's name (a Server has none)
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


def direct_hop_enabled() -> bool:
    """Whether the gateway sends an ``@app.server``'s requests straight to the server's port
    (``services/haproxy_direct.py``); ``RAYWEB_DIRECT_HOP=0`` keeps them on the replica's
    path, where rayweb's chain runs in Python (the WebSocket message limit, a total request
    timeout)."""
    return os.environ.get("RAYWEB_DIRECT_HOP", "1").strip() != "0"


def compile_endpoint(
    function: Function[Any, Any],
    *,
    dev: bool = False,
    available_accelerators: Iterable[str] | None = None,
) -> CompiledEndpoint:
    """Compile one web function or web method."""
    spec = endpoint_spec(function)
    assert spec.web is not None  # endpoint_spec refuses functions without a web decorator
    name = app_label(spec, dev=dev)
    plan = resource_plan(spec, available_accelerators=available_accelerators)
    options = deployment_options(spec, plan=plan)  # one plan for options, payload, messages
    max_inputs = options["max_ongoing_requests"]
    cls = function.cls
    payload = ReplicaPayload(
        label=name,
        code=code_ref(function),
        web=spec.web,
        max_inputs=max_inputs,
        is_cls=cls is not None,
        enter_methods=tuple(cls.enter_methods) if cls else (),
        exit_methods=tuple(cls.exit_methods) if cls else (),
        secrets=tuple((s.name, s.required_keys) for s in spec.secrets),
        auth_headers=spec.auth_headers if spec.web.requires_proxy_auth else None,
        sidecar=_sidecar_options(plan, spec.runtime_env) if plan.sidecar else None,
        limits=spec.limits,
        drain_s=drain_seconds(spec, options["graceful_shutdown_timeout_s"]),
        # `rayweb serve` swaps new source into running replicas; a web_server's (or a
        # Server's) code runs in its sidecar process, so it is always redeployed.
        hot_swap=dev and not spec.web.sidecar,
        dev=dev,
        gateway_maxconn=max_inputs * GATEWAY_QUEUE_FACTOR,
        # One WSGI thread per input the replica may take at once.
        wsgi_threads=max_inputs,
        mounts=spec.mounts,
        links=spec.links,
        volume_root=str(volume_root()),
        # A Server's max_concurrency is a hard cap: above it, 429 at once (Modal's rule).
        full_status=429 if spec.server is not None and spec.server.max_concurrency else None,
        direct_hop=spec.server is not None and direct_hop_enabled(),
    )
    # Modal's rule: startup_timeout defaults to timeout. A Server's is its port's wait, after
    # its container started.
    startup = float(spec.startup_timeout or spec.timeout)
    if spec.server is not None:
        startup += SERVER_START_SLACK_S
    return CompiledEndpoint(name, f"/{name}", function.tag, options, payload, plan, startup)
