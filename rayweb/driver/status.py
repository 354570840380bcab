"""Deploying endpoints and watching them come up, and what runs on a cluster now.

``deploy`` runs every endpoint at once (``serve.run_many``) and watches Serve's status
itself with a deadline: a user failure (the replica's marked traceback) fails within seconds,
a replica that cannot be placed times out naming what the cluster lacks (from the compiler's
:class:`~rayweb.compiler.ResourcePlan`). Also: waiting for the HTTP routes, deleting apps,
and the endpoint list of ``rayweb app list``.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..common import extract_user_error
from ..compiler import CompiledEndpoint, build_application
from ..compiler.variants import variants_of
from ..exception import DeploymentError, DeployTimeoutError, InvalidError, NotFoundError
from ..services.serve_apps import AppState, app_states
from ..spec import FUNCTION_APP_PREFIX, FunctionPayload
from . import cluster
from .output import Progress

POLL_S = 0.1  # Serve's control loop period; a status poll costs ~1 ms (services/serve_apps.py)
FAST_POLL_S = 0.05  # the gateway's table (one actor call), between two polls of Serve's status
STALE_S = 10.0  # how long a failure from before an update may still show in its status


def deploy(
    endpoints: list[CompiledEndpoint],
    *,
    timeout: float,
    progress: Progress,
    delete_on_failure: bool = True,
    registered: bool = False,
) -> None:
    """Deploy ``endpoints`` together and wait until all run; on failure delete them all
    (unless ``delete_on_failure`` is False: a reload keeps the old version serving).

    ``registered``: a web endpoint new to the cluster counts as running once each replica
    Serve starts for it (``initial_replicas``) has registered with the gateway and HAProxy
    routes to it (its code loaded, ``@enter`` run, its app started), not only when Serve's
    status says so, up to a control-loop round and a status poll later. An update always
    waits for Serve: until its rollout ends, old replicas serve too."""
    from ray import serve

    targets = [
        serve.RunTarget(build_application(ep), name=ep.name, route_prefix=ep.route_prefix)
        for ep in endpoints
    ]
    # An update's status can still show the previous deploy's failure for a moment.
    names = {ep.name for ep in endpoints}
    existing = app_states(names)
    before = {name for name, app in existing.items() if _failing(app)}
    new = {
        ep.name: starting_replicas(ep)
        for ep in endpoints
        if registered and ep.web_routes and ep.name not in existing
    }
    gateway = _find_gateway() if new else None  # looked up once, asked every FAST_POLL_S
    known = _servers(_on_gateway("table", gateway=gateway) or {}) if gateway is not None else {}

    def up() -> set[str]:
        """The new endpoints whose replicas registered since this deploy began, once HAProxy
        sends requests to them (the table, then ``settled``: it covers what the table had)."""
        now = _servers(_on_gateway("table", gateway=gateway) or {})
        found = registered_apps(new, known, now)
        return found if found and _on_gateway("settled", gateway=gateway) else set()

    try:
        declare_routes(endpoints)
        serve.run_many(
            targets,
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        _wait_running(
            endpoints,
            timeout=timeout,
            progress=progress,
            before=before,
            registered=up if gateway is not None else None,
        )
        # Variants of a redeployed class run its old code: the next call starts them again.
        functions = [ep.name for ep in endpoints if ep.route_prefix is None]
        stale = variants_of(functions, app_states()) if functions else []
        if stale:
            delete_apps(stale, wait_s=10)
    except BaseException:
        if delete_on_failure:
            # Don't hold the error (or a Ctrl-C) for Serve's graceful shutdown of replicas
            # that never started; ones that did finish their @exit in this time.
            delete_apps([ep.name for ep in endpoints], wait_s=3)
        raise


def _wait_running(
    endpoints: list[CompiledEndpoint],
    *,
    timeout: float,
    progress: Progress,
    before: set[str] | None = None,
    registered: Callable[[], set[str]] | None = None,
) -> None:
    """Wait until every endpoint runs. ``before``: endpoints that were failing before this
    deploy; their failure counts only once they have been seen not failing, or after
    ``STALE_S`` (Serve's status can lag the update by a control-loop round).
    ``registered``: the endpoints that count as running already (``deploy``'s
    ``registered``), asked every ``FAST_POLL_S`` between Serve's status polls."""
    stale = set(before or ())
    stale_until = time.monotonic() + STALE_S
    deadline = time.monotonic() + timeout
    announced: set[str] = set()

    def running(ep: CompiledEndpoint) -> None:
        if ep.name not in announced:
            announced.add(ep.name)
            progress(f"{ep.tag} is running")

    names = [ep.name for ep in endpoints]
    status = app_states(names)
    next_status = time.monotonic() + POLL_S
    while True:
        if time.monotonic() >= next_status:  # the gateway's table is asked more often
            status = app_states(names)
            next_status = time.monotonic() + POLL_S
        up = registered() if registered is not None else set()
        pending: dict[str, str] = {}
        for ep in endpoints:
            app_status = status.get(ep.name)
            if app_status is None and ep.name not in up:
                pending[ep.name] = "not created yet"
                continue
            if app_status is None:  # registered before this status was taken
                running(ep)
                continue
            if ep.name in stale:
                if _failing(app_status) and time.monotonic() < stale_until:
                    pending[ep.name] = "updating"
                    continue
                stale.discard(ep.name)
            messages = app_status.messages
            for message in messages:
                found = extract_user_error(message)
                if found:
                    summary, tb = found
                    raise DeploymentError(
                        f"rayweb: endpoint {_what(ep)} failed to start: {summary}",
                        user_traceback=tb,
                    )
            state = app_status.status
            if state == "RUNNING" or ep.name in up:
                running(ep)
                continue
            if app_status.failing:
                # The deployment's message says why; the app's only says that it failed.
                detail = next((m for m in reversed(messages) if m), state)
                raise DeploymentError(
                    f"rayweb: endpoint {_what(ep)} failed to deploy: {one_line(detail)}"
                )
            pending[ep.name] = state
        if not pending:
            return
        if time.monotonic() > deadline:
            have = cluster.cluster_resources()
            raise DeployTimeoutError(timeout_message(endpoints, pending, timeout, have))
        time.sleep(FAST_POLL_S if registered is not None else POLL_S)


def starting_replicas(ep: CompiledEndpoint) -> int:
    """How many replicas Serve starts for a new endpoint (rayweb starts one even when it
    scales to zero: ``compiler.core``)."""
    options = ep.deployment_options
    scaling = options.get("autoscaling_config") or {}
    return max(1, int(scaling.get("initial_replicas") or options.get("num_replicas") or 1))


def registered_apps(
    new: Mapping[str, int], known: Mapping[str, set[str]], now: Mapping[str, set[str]]
) -> set[str]:
    """The applications in ``new`` (with how many replicas each starts) that have that many
    replicas registered now (``now``) that were not before the deploy (``known``)."""
    return {
        name for name, want in new.items()
        if len(now.get(name, set()) - known.get(name, set())) >= want
    }  # fmt: skip


def _servers(table: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """The replicas registered with the gateway (its ``table()``), by Serve application (a
    class pool's web methods are routes of the pool's application)."""
    found: dict[str, set[str]] = {}
    for name, route in table.items():
        found.setdefault(route.get("serve_app") or name, set()).update(route["servers"])
    return found


def _what(ep: CompiledEndpoint) -> str:
    """An endpoint in a message: its tag and application (and a class pool's web methods)."""
    if isinstance(ep.payload, FunctionPayload) and ep.payload.routes:
        return f"{ep.tag!r} ({ep.name}, serving {', '.join(t for t, _, _ in ep.web_routes)})"
    return f"{ep.tag!r} ({ep.name})"


def _failing(app_status: AppState) -> bool:
    return app_status.failing or any(extract_user_error(m) for m in app_status.messages)


def timeout_message(
    endpoints: list[CompiledEndpoint],
    pending: Mapping[str, str],
    timeout: float,
    have: Mapping[str, float],
) -> str:
    """Why a deploy timed out: per pending endpoint, what one replica needs (its resource
    plan, web_server sidecar included), what the cluster ``have``s, and what is missing."""
    lines = [f"rayweb: deploy timed out after {timeout:.0f}s; still pending:"]
    for ep in endpoints:
        if ep.name not in pending:
            continue
        need = ep.plan.total
        short = ep.plan.missing(have)
        why = f"its replica needs {_fmt(need)} but the cluster has {_fmt(have)}" + (
            f" (missing: {', '.join(short)})" if short else ""
        )
        lines.append(f"  - {ep.tag} ({ep.name}): {pending[ep.name]}; {why}")
    lines.append(
        "Suggestion: add the missing resources (or an autoscaler that can), lower the "
        "request (gpu=, cpu=, memory=), or raise the limit with deploy_timeout= / startup_timeout=."
    )
    return "\n".join(lines)


def _fmt(resources: Mapping[str, float]) -> str:
    shown = {
        k: (f"{v / 2**30:.1f}GiB" if k in ("memory", "object_store_memory") else v)
        for k, v in resources.items()
        if not k.startswith("node:") and k != "object_store_memory"
    }
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(shown.items())) + "}"


def one_line(text: str) -> str:
    """The last non-empty line of an error (where Ray puts the exception itself)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def wait_for_routes(base: str, endpoints: list[CompiledEndpoint], *, timeout: float) -> None:
    """Wait until Serve's HTTP proxy routes every endpoint's prefix."""
    wanted = {ep.route_prefix for ep in endpoints if ep.route_prefix is not None}
    if not wanted:
        return  # only functions: nothing is routed over HTTP
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/-/routes", timeout=2) as resp:
                routes = json.loads(resp.read())
            if wanted <= set(routes):
                return
            last_error = f"routes so far: {sorted(routes)}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(POLL_S)
    raise DeployTimeoutError(
        f"rayweb: Serve's HTTP proxy at {base} did not route {sorted(wanted)} within "
        f"{timeout:.0f}s ({last_error}). Suggestion: check that port is free and reachable."
    )


def declare_routes(endpoints: list[CompiledEndpoint]) -> None:
    """Tell the gateway each endpoint's path, body limit and admission (rate limit, proxy
    auth) before any replica exists, so an oversized upload, a flood or a request without
    credentials to a scaled-to-zero endpoint is refused there, without waking it. The web
    methods of a class's pool are declared with the pool's application (woken for them)."""
    routes = [route for ep in endpoints for route in ep.gateway_routes()]
    pools = [ep.name for ep in endpoints if isinstance(ep.payload, FunctionPayload)]
    _on_gateway("declare", routes, pools)  # one call, one HAProxy reload for the whole deploy


def endpoint_labels(endpoints: list[CompiledEndpoint]) -> dict[str, str]:
    """The label each web endpoint (and pooled web method) is served as, by tag; its URLs
    are ``Reach.url(label)`` (``rayweb/urls.py``)."""
    return {tag: label for ep in endpoints for tag, label, _ in ep.web_routes}


def _find_gateway() -> Any:
    """This cluster's gateway actor, or None (none runs, or Ray did not answer)."""
    from ..services.gateway import find_gateway

    with contextlib.suppress(Exception):
        return find_gateway()
    return None


def _on_gateway(method: str, *args: object, gateway: Any = None) -> Any:
    """Call the gateway (``gateway``, else this cluster's if it runs one: it is rebuilt by
    replicas otherwise); its answer, or None (no gateway, or it did not answer)."""
    import ray

    from ..services.gateway import find_gateway

    with contextlib.suppress(Exception):
        gateway = gateway if gateway is not None else find_gateway()
        if gateway is not None:
            return ray.get(getattr(gateway, method).remote(*args), timeout=10)
    return None


def delete_apps(names: list[str], *, wait_s: float = 60) -> None:
    """Delete Serve apps; wait (up to ``wait_s``) until they are gone, so @exit has run."""
    import ray

    if not names or not ray.is_initialized():
        return
    from ray import serve

    with contextlib.suppress(Exception):  # a class's variants (with_options) go with it
        names = [*names, *variants_of(names, app_states())]
    for name in names:
        with contextlib.suppress(Exception):  # already gone, or Serve is shutting down
            serve.delete(name, _blocking=False)
    _on_gateway("forget", names)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            remaining = set(app_states(names))
        except Exception:
            return
        if not remaining:
            return
        time.sleep(POLL_S)


@dataclass(frozen=True)
class EndpointStatus:
    """One row of ``rayweb app list``."""

    name: str
    status: str
    url: str
    replicas: str
    message: str
    traffic: str = ""  # the last minute through the gateway: rate, p50, p99


def list_endpoints() -> list[EndpointStatus]:
    """Every Serve application of the connected cluster, with its URL and replica counts;
    the web methods of a class's pool are rows of their own, with the pool's replicas."""
    from ray import serve

    status = serve.status()
    reach = cluster.public_reach()
    pooled = _pooled_labels()
    traffic = {name: _traffic(s) for name, s in (_on_gateway("request_stats") or {}).items()}
    rows = []
    for name, app in sorted(status.applications.items()):
        states: dict[str, int] = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                key = str(state).split(".")[-1]
                states[key] = states.get(key, 0) + count
        replicas = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "0"
        app_state = str(app.status).split(".")[-1]
        labels = sorted(label for label, pool in pooled.items() if pool == name)
        # a function's app has no route: it is called with .remote()
        url = reach.url(name) if reach else f"/{name}"
        if name.startswith(FUNCTION_APP_PREFIX):
            url = "(.remote() and the web methods below)" if labels else "(.remote() only)"
        message, seen = app.message or "", traffic.get(name, "")
        rows.append(EndpointStatus(name, app_state, url, replicas, message, seen))
        for label in labels:
            url = reach.url(label) if reach else f"/{label}"
            rows.append(
                EndpointStatus(
                    label, app_state, url, replicas, f"in {name}", traffic.get(label, "")
                )
            )
    return rows


def _traffic(stats: dict[str, float]) -> str:
    return f"{stats['rate']:.2f}/s, p50 {stats['p50']:.0f} ms, p99 {stats['p99']:.0f} ms"


def _pooled_labels() -> dict[str, str]:
    """Each web method served by a class's pool (per the gateway): label -> its pool."""
    table: dict[str, dict[str, Any]] = _on_gateway("table") or {}
    return {label: route["serve_app"] for label, route in table.items() if route.get("serve_app")}


def require_endpoint(name: str, address: str) -> str:
    """Join the cluster; the Serve application that serves endpoint ``name`` (a pooled web
    method's is its class's pool); fail with what runs there if there is none."""
    cluster.ensure_ray(address)
    running = sorted(app_states())
    if name in running:
        return name
    pool = _pooled_labels().get(name)
    if pool in running:
        return pool
    raise NotFoundError(
        f"No endpoint {name!r} on this cluster. Running: {running or 'none'}. "
        f"Suggestion: rayweb app list --address {address}"
    )


def stop_endpoint(name: str, address: str) -> None:
    """Delete a deployed endpoint (waiting until its replicas are gone) and forget it."""
    from ..services.registry import forget_deployed

    app = require_endpoint(name, address)
    if app != name:
        raise InvalidError(
            f"{name!r} is a web method of a class whose containers ({app}) also serve its other "
            f"methods. Suggestion: rayweb app stop {app} --address {address}"
        )
    delete_apps([name])
    forget_deployed(name)
