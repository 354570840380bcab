"""``rayweb deploy``: a persistent deploy onto a running cluster, with the code shipped and
the previous version restored when the new one does not start (Modal's ``modal deploy``).

The decisions are pure functions (:func:`rollback_plan`, :func:`ship`), unit-tested
without a cluster; :func:`deploy_app` carries them out.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import compiler
from ..compiler import CompiledEndpoint, compile_app, compile_functions, ship
from ..exception import DeploymentError, InvalidError
from ..services.registry import deploy_registry
from ..urls import Reach, url_form
from . import cluster
from .output import Progress
from .secrets import prepare_secrets
from .shipping import ship_plan
from .status import delete_apps, deploy, endpoint_labels, one_line, wait_for_routes
from .volumes import prepare_volumes

if TYPE_CHECKING:
    from ..app import App


@dataclass
class Deployed:
    """The result of ``deploy_app``: what runs now, and where."""

    app_name: str
    labels: dict[str, str]  # each endpoint's label, by tag
    reach: Reach  # where they are reached (``rayweb/urls.py``)
    removed: list[str]
    working_dir: str | None
    excluded: list[str] = dataclasses.field(default_factory=list)  # files not shipped

    @property
    def urls(self) -> dict[str, str]:
        return {tag: self.reach.url(label) for tag, label in self.labels.items()}


def deploy_connected(app: App) -> Deployed:
    """``app.deploy()``: onto the Ray this process is connected to, else ``RAY_ADDRESS``'s
    (never an embedded Ray: it would end with this process)."""
    import ray

    address = None if ray.is_initialized() else os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized() and not address:
        raise InvalidError(
            "app.deploy() needs a running Ray cluster, and this process is connected to none. "
            "Suggestion: `rayweb cluster up` and set RAY_ADDRESS, or `rayweb deploy <file.py> "
            "--address <cluster>`."
        )
    return deploy_app(app, address=address)


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
        raise InvalidError(
            "A deployed app needs a name. Suggestion: rayweb.App('my-app'), or --name my-app."
        )
    cluster.prepare_env()  # before the compiler imports Ray
    # fail on bad specs before connecting; functions called with .remote() deploy too
    endpoints = compile_app(app) + compile_functions(app)
    url_form()  # a bad RAYWEB_URL_FORM fails before anything is deployed
    prepare_volumes(app)
    roots = {ep.payload.code.sys_path for ep in endpoints if ep.payload.code.sys_path}
    if len(roots) > 1:
        raise InvalidError(
            f"The endpoints of {app.name!r} come from several source roots {sorted(roots)}; "
            "rayweb deploy ships one directory. Suggestion: import them from one package."
        )
    runtime_env = None
    excluded: list[str] = []
    if roots:
        root = roots.pop()
        plan = ship_plan(Path(root))
        runtime_env, excluded = {"working_dir": root, "excludes": plan.excludes}, plan.excluded
    say(f"Connecting to Ray at {address}" + (" and uploading the code" if runtime_env else ""))
    cluster.ensure_ray(address, runtime_env=runtime_env)
    import ray

    working_dir = (ray.get_runtime_context().runtime_env or {}).get("working_dir")
    # Replicas import the shipped copy (their working directory), never the local path.
    http_host, http_port = cluster.ensure_serve(host, port)
    if not cluster.gateway_running():  # Serve's proxy only: each web method is its own app
        endpoints = compile_app(app, pool=False) + compile_functions(app, pool=False)
    shipped = [ship(ep, working_dir) for ep in endpoints] if working_dir else endpoints
    say("Storing secrets")
    prepare_secrets(app)
    registry = deploy_registry()
    previous: dict[str, CompiledEndpoint] = ray.get(registry.get.remote(app.name)) or {}
    limit = deploy_timeout if deploy_timeout is not None else compiler.deploy_timeout(shipped)
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
    removed = removed_endpoints(shipped, previous)
    delete_apps(removed)
    ray.get(registry.put.remote(app.name, {ep.name: ep for ep in shipped}))
    reach = Reach(http_host, http_port, cluster.origins_domain())
    wait_for_routes(reach.base, shipped, timeout=max(10.0, limit))
    return Deployed(app.name, endpoint_labels(shipped), reach, removed, working_dir, excluded)


@dataclass(frozen=True)
class RollbackPlan:
    """After a failed deploy: the previous versions to deploy again, the new endpoints to
    delete (they did not exist before)."""

    restore: list[CompiledEndpoint]
    delete: list[str]


def rollback_plan(
    failed: list[CompiledEndpoint], previous: dict[str, CompiledEndpoint]
) -> RollbackPlan:
    """What to do after ``failed`` did not start, given each endpoint's last good version.

    Endpoints of the previous deploy that the failed one did not touch keep running as they
    are; they need nothing."""
    return RollbackPlan(
        restore=[previous[ep.name] for ep in failed if ep.name in previous],
        delete=[ep.name for ep in failed if ep.name not in previous],
    )


def removed_endpoints(
    deployed: list[CompiledEndpoint], previous: dict[str, CompiledEndpoint]
) -> list[str]:
    """Endpoints of the previous deploy that the app no longer has (deleted on success)."""
    return sorted(set(previous) - {ep.name for ep in deployed})


def _roll_back(
    failed: list[CompiledEndpoint], previous: dict[str, CompiledEndpoint], say: Progress
) -> str | None:
    """Put back what ran before a failed deploy and delete endpoints that did not exist;
    return why the previous version could not be restored, if it could not."""
    plan = rollback_plan(failed, previous)
    back, new = plan.restore, plan.delete
    problem = None
    if back:
        say("Restoring the previous version")
        try:
            deploy(back, timeout=120, progress=say, delete_on_failure=False)
        except Exception as exc:
            problem = one_line(str(exc))
    delete_apps(new, wait_s=10)
    return problem
