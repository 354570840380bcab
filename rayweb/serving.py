"""``rayweb.serve(app)``: deploy every web endpoint, wait until each answers, return URLs.

Deploys all endpoints at once (one Serve application each), then watches ``serve.status()``
with a deadline: a failing ``@enter``/factory fails fast with the user's traceback, and a
replica that cannot be placed (say it needs a GPU the cluster lacks) times out with a
message naming what it needs. Whatever this call deployed is deleted when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import cluster
from .compiler import CompiledEndpoint, build_application, compile_app, replicas_needed
from .exception import DeploymentError, DeployTimeoutError
from .runtime.loader import extract_user_error

if TYPE_CHECKING:
    from .app import App

POLL_S = 0.25
Progress = Callable[[str], None]


@dataclass
class ServeHandle:
    """A served app: ``urls`` maps each endpoint's tag (``"search"``, ``"Model.web"``) to its URL.

    ``stop()`` deletes the endpoints (and the embedded Ray, once no other handle uses it);
    ``with rayweb.serve(app) as handle:`` stops on exit.
    """

    app: App | None
    endpoints: list[CompiledEndpoint] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    holds_embedded: bool = False
    stopped: bool = False

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServeHandle(urls={self.urls!r})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{tag}</td><td><a href='{url}'>{url}</a></td></tr>"
            for tag, url in self.urls.items()
        )
        return f"<table><tr><th>endpoint</th><th>URL</th></tr>{rows}</table>"

    def stop(self) -> None:
        """Delete this app's endpoints; stop the embedded Ray when no other handle uses it."""
        if self.stopped:
            return
        self.stopped = True
        delete_apps([ep.name for ep in self.endpoints])
        if self.app is not None:
            for function in self.app.web_endpoints:
                function._hydrate(None)
        if self.holds_embedded:
            cluster.release()


def serve(
    app: App,
    *,
    host: str = cluster.DEFAULT_HOST,
    port: int = cluster.DEFAULT_PORT,
    address: str | None = None,
    dev: bool = False,
    deploy_timeout: float | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
) -> ServeHandle:
    """Serve every web endpoint of ``app`` on Ray Serve and return their URLs.

    Starts an embedded, loopback-only Ray unless one is running in this process or
    ``address`` names a cluster. Example (``examples/fastapi_endpoint.py``)::

        with rayweb.serve(app) as handle:
            print(handle.urls["search"])
    """
    if os.environ.get("RAYWEB_IS_REMOTE") == "1":
        return ServeHandle(app=None, stopped=True)  # a replica importing a serving script
    say = progress or (lambda _msg: None)
    endpoints = compile_app(app, dev=dev)  # fail on bad specs before starting anything
    say("Starting Ray" if address is None else f"Connecting to Ray at {address}")
    cluster.ensure_ray(address)
    holds = cluster.hold()
    try:
        http_host, http_port = cluster.ensure_serve(host, port)
        if any(len(f.options.resources.gpu) > 1 for f in app.web_endpoints):
            endpoints = compile_app(
                app, dev=dev, available_accelerators=cluster.available_accelerators()
            )
        say("Storing secrets")
        _prepare_secrets(app)
        base = f"http://{cluster.url_host(http_host)}:{http_port}"
        limit = deploy_timeout if deploy_timeout is not None else _default_deploy_timeout(app)
        say(f"Deploying {len(endpoints)} endpoint(s)")
        deploy(endpoints, timeout=limit, progress=say)
        say("Waiting for the HTTP routes")
        _wait_for_routes(base, endpoints, timeout=max(10.0, limit))
    except BaseException:
        if holds:
            cluster.release()
        raise
    tags = {ep.name: ep.tag for ep in endpoints}
    urls = {tags[ep.name]: f"{base}{ep.route_prefix}" for ep in endpoints}
    for function in app.web_endpoints:
        function._hydrate(urls.get(function.tag))
    handle = ServeHandle(app, endpoints, urls, base, holds_embedded=holds)
    if not quiet:
        print_urls(handle)
    return handle


STALE_S = 10.0  # how long a failure from before an update may still show in its status
REGISTRY_NAME = "rayweb-deployments"  # detached actor: each app's last good deploy

# What `rayweb deploy` leaves out of the code it ships (besides .gitignore'd files).
SHIP_EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", "node_modules", ".mypy_cache"]


@dataclass
class Deployed:
    """The result of ``deploy_app``: what runs now, and where."""

    app_name: str
    urls: dict[str, str]
    removed: list[str]
    working_dir: str | None


def deploy_app(
    app: App,
    *,
    address: str | None,
    host: str = cluster.DEFAULT_HOST,
    port: int = cluster.DEFAULT_PORT,
    deploy_timeout: float | None = None,
    progress: Progress | None = None,
) -> Deployed:
    """Deploy ``app`` persistently onto the cluster at ``address`` (Modal's ``modal deploy``).

    The app's code directory is uploaded with the deploy (Ray's ``working_dir``), so the
    cluster runs this snapshot, not files that change later. Endpoints already deployed by
    this app are updated in place (Serve starts the new replicas before stopping the old
    ones); endpoints the app no longer has are deleted. If the new version does not start,
    every endpoint goes back to the version that ran before and ``DeploymentError`` says why.
    """
    say = progress or (lambda _msg: None)
    if not app.name:
        from .exception import InvalidError

        raise InvalidError(
            "A deployed app needs a name. Suggestion: rayweb.App('my-app'), or --name my-app."
        )
    endpoints = compile_app(app)  # fail on bad specs before connecting
    roots = {ep.payload.code.sys_path for ep in endpoints if ep.payload.code.sys_path}
    if len(roots) > 1:
        from .exception import InvalidError

        raise InvalidError(
            f"The endpoints of {app.name!r} come from several source roots {sorted(roots)}; "
            "rayweb deploy ships one directory. Suggestion: import them from one package."
        )
    runtime_env = {"working_dir": roots.pop(), "excludes": SHIP_EXCLUDES} if roots else None
    say(f"Connecting to Ray at {address}" + (" and uploading the code" if runtime_env else ""))
    cluster.ensure_ray(address, runtime_env=runtime_env)
    import ray

    working_dir = (ray.get_runtime_context().runtime_env or {}).get("working_dir")
    # Replicas import the shipped copy (their working directory), never the local path.
    shipped = [_ship(ep, working_dir) for ep in endpoints] if working_dir else endpoints
    http_host, http_port = cluster.ensure_serve(host, port)
    say("Storing secrets")
    _prepare_secrets(app)
    registry = _deploy_registry()
    previous: dict[str, CompiledEndpoint] = ray.get(registry.get.remote(app.name)) or {}
    limit = deploy_timeout if deploy_timeout is not None else _default_deploy_timeout(app)
    say(f"Deploying {len(shipped)} endpoint(s)")
    try:
        deploy(shipped, timeout=limit, progress=say, delete_on_failure=False)
    except BaseException as exc:
        problem = _roll_back(shipped, previous, say)
        if problem and isinstance(exc, DeploymentError):
            raise DeploymentError(
                f"{exc.args[0]} The previous version could not be restored either: {problem}",
                user_traceback=exc.user_traceback,
            ) from None
        raise
    removed = sorted(set(previous) - {ep.name for ep in shipped})
    delete_apps(removed)
    ray.get(registry.put.remote(app.name, {ep.name: ep for ep in shipped}))
    base = f"http://{cluster.url_host(http_host)}:{http_port}"
    _wait_for_routes(base, shipped, timeout=max(10.0, limit))
    urls = {ep.tag: f"{base}{ep.route_prefix}" for ep in shipped}
    return Deployed(app.name, urls, removed, working_dir)


def _ship(ep: CompiledEndpoint, working_dir: str) -> CompiledEndpoint:
    """The endpoint with its code imported from the uploaded ``working_dir``."""
    import dataclasses

    if ep.payload.code.sys_path is None:
        return ep  # pickled by value: travels in the payload
    code = dataclasses.replace(ep.payload.code, sys_path=None)
    actor = dict(ep.deployment_options["ray_actor_options"])
    actor["runtime_env"] = {**actor.get("runtime_env", {}), "working_dir": working_dir}
    sidecar = ep.payload.sidecar
    if sidecar is not None:  # a web_server's code runs in its sidecar actor
        sidecar = {
            **sidecar,
            "runtime_env": {**sidecar.get("runtime_env", {}), "working_dir": working_dir},
        }
    payload = dataclasses.replace(ep.payload, code=code, sidecar=sidecar)
    options = {**ep.deployment_options, "ray_actor_options": actor}
    return dataclasses.replace(ep, deployment_options=options, payload=payload)


def _roll_back(
    failed: list[CompiledEndpoint], previous: dict[str, CompiledEndpoint], say: Progress
) -> str | None:
    """Put back what ran before a failed deploy and delete endpoints that did not exist;
    return why the previous version could not be restored, if it could not."""
    back = [previous[ep.name] for ep in failed if ep.name in previous]
    new = [ep.name for ep in failed if ep.name not in previous]
    problem = None
    if back:
        say("Restoring the previous version")
        try:
            deploy(back, timeout=120, progress=say, delete_on_failure=False)
        except Exception as exc:
            problem = _one_line(str(exc))
    delete_apps(new, wait_s=10)
    return problem


def _deploy_registry() -> Any:
    """The cluster's record of what each app deployed last (for rollback and removals)."""
    from .runtime.actors import cluster_actor

    return cluster_actor(DeployRegistry, REGISTRY_NAME)


def forget_deployed(endpoint: str) -> None:
    """A stopped endpoint is no longer part of its app's last deploy."""
    import ray

    from .runtime.actors import NAMESPACE

    try:
        registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    ray.get(registry.forget.remote(endpoint))


class DeployRegistry:
    """app name -> {endpoint name: CompiledEndpoint} of its last successful deploy."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, CompiledEndpoint]] = {}

    def get(self, app: str) -> dict[str, CompiledEndpoint] | None:
        return self.apps.get(app)

    def put(self, app: str, endpoints: dict[str, CompiledEndpoint]) -> None:
        self.apps[app] = endpoints

    def forget(self, endpoint: str) -> None:
        for endpoints in self.apps.values():
            endpoints.pop(endpoint, None)


def _prepare_secrets(app: App) -> None:
    """Put code-given secrets in the cluster's store; check that named ones exist there.

    Fails before anything is deployed, naming the secret, the key and the command to fix it.
    """
    refs = {ref.name: ref for f in app.web_endpoints for ref in f.endpoint_spec().secrets}
    if not refs:
        return
    import ray

    from .runtime.loader import remote_error
    from .runtime.store_actor import store_actor

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


def _default_deploy_timeout(app: App) -> float:
    """Modal's rule: ``startup_timeout`` defaults to ``timeout``; take the longest."""
    return float(max(f.options.startup_timeout or f.options.timeout for f in app.web_endpoints))


def deploy(
    endpoints: list[CompiledEndpoint],
    *,
    timeout: float,
    progress: Progress,
    delete_on_failure: bool = True,
) -> None:
    """Deploy ``endpoints`` together and wait until all run; on failure delete them all
    (unless ``delete_on_failure`` is False: a reload keeps the old version serving)."""
    from ray import serve

    targets = [
        serve.RunTarget(build_application(ep), name=ep.name, route_prefix=ep.route_prefix)
        for ep in endpoints
    ]
    # An update's status can still show the previous deploy's failure for a moment.
    names = {ep.name for ep in endpoints}
    before = {
        name for name, app in serve.status().applications.items() if name in names and _failing(app)
    }
    try:
        serve.run_many(
            targets,
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        _wait_running(endpoints, timeout=timeout, progress=progress, before=before)
    except BaseException:
        if delete_on_failure:
            # Don't hold the error for Serve's graceful shutdown of replicas that never started.
            delete_apps([ep.name for ep in endpoints], wait_s=5)
        raise


def _wait_running(
    endpoints: list[CompiledEndpoint],
    *,
    timeout: float,
    progress: Progress,
    before: set[str] | None = None,
) -> None:
    """Wait until every endpoint runs. ``before``: endpoints that were failing before this
    deploy; their failure counts only once they have been seen not failing, or after
    ``STALE_S`` (Serve's status can lag the update by a control-loop round)."""
    from ray import serve

    stale = set(before or ())
    stale_until = time.monotonic() + STALE_S
    deadline = time.monotonic() + timeout
    announced: set[str] = set()
    while True:
        status = serve.status()
        pending: dict[str, str] = {}
        for ep in endpoints:
            app_status = status.applications.get(ep.name)
            if app_status is None:
                pending[ep.name] = "not created yet"
                continue
            if ep.name in stale:
                if _failing(app_status) and time.monotonic() < stale_until:
                    pending[ep.name] = "updating"
                    continue
                stale.discard(ep.name)
            messages = [app_status.message] + [
                d.message for d in app_status.deployments.values() if d.message
            ]
            for message in messages:
                found = extract_user_error(message or "")
                if found:
                    summary, tb = found
                    raise DeploymentError(
                        f"rayweb: endpoint {ep.tag!r} ({ep.name}) failed to start: {summary}",
                        user_traceback=tb,
                    )
            state = str(app_status.status)
            if state.endswith("RUNNING"):
                if ep.name not in announced:
                    announced.add(ep.name)
                    progress(f"{ep.tag} is running")
                continue
            if state.endswith("DEPLOY_FAILED") or state.endswith("UNHEALTHY"):
                # The deployment's message says why; the app's only says that it failed.
                detail = next((m for m in reversed(messages) if m), state)
                raise DeploymentError(
                    f"rayweb: endpoint {ep.tag!r} ({ep.name}) failed to deploy: {_one_line(detail)}"
                )
            pending[ep.name] = state.split(".")[-1]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DeployTimeoutError(_timeout_message(endpoints, pending, timeout))
        time.sleep(POLL_S)


def _failing(app_status: Any) -> bool:
    state = str(app_status.status)
    messages = [app_status.message] + [d.message for d in app_status.deployments.values()]
    return state.endswith(("DEPLOY_FAILED", "UNHEALTHY")) or any(
        extract_user_error(m or "") for m in messages
    )


def _timeout_message(
    endpoints: list[CompiledEndpoint], pending: dict[str, str], timeout: float
) -> str:
    have = cluster.cluster_resources()
    lines = [f"rayweb: deploy timed out after {timeout:.0f}s; still pending:"]
    for ep in endpoints:
        if ep.name not in pending:
            continue
        need = replicas_needed(ep.deployment_options)
        short = {k: v for k, v in need.items() if have.get(k, 0) < v}
        why = f"its replica needs {_fmt(need)} but the cluster has {_fmt(have)}" + (
            f" (missing: {', '.join(short)})" if short else ""
        )
        lines.append(f"  - {ep.tag} ({ep.name}): {pending[ep.name]}; {why}")
    lines.append(
        "Suggestion: add the missing resources (or an autoscaler that can), lower the "
        "request (gpu=, cpu=, memory=), or raise the limit with deploy_timeout= / startup_timeout=."
    )
    return "\n".join(lines)


def _fmt(resources: dict[str, float]) -> str:
    shown = {
        k: (f"{v / 2**30:.1f}GiB" if k in ("memory", "object_store_memory") else v)
        for k, v in resources.items()
        if not k.startswith("node:") and k != "object_store_memory"
    }
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(shown.items())) + "}"


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def _wait_for_routes(base: str, endpoints: list[CompiledEndpoint], *, timeout: float) -> None:
    """Wait until Serve's HTTP proxy routes every endpoint's prefix."""
    wanted = {ep.route_prefix for ep in endpoints}
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


def delete_apps(names: list[str], *, wait_s: float = 60) -> None:
    """Delete Serve apps; wait (up to ``wait_s``) until they are gone, so @exit has run."""
    import ray

    if not names or not ray.is_initialized():
        return
    from ray import serve

    for name in names:
        with contextlib.suppress(Exception):  # already gone, or Serve is shutting down
            serve.delete(name, _blocking=False)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            remaining = set(serve.status().applications) & set(names)
        except Exception:
            return
        if not remaining:
            return
        time.sleep(POLL_S)


def print_urls(handle: ServeHandle, *, console: Any = None) -> None:
    """Print the endpoints and their URLs as a table."""
    from rich.table import Table

    table = Table(title="rayweb endpoints", title_justify="left")
    table.add_column("endpoint")
    table.add_column("URL")
    for tag, url in handle.urls.items():
        table.add_row(tag, url)
    (console or wide_console()).print(table)


def wide_console() -> Any:
    """A console whose tables are not cut at 80 columns when output goes to a pipe or file."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)
