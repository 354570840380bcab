"""``rayweb.serve(app)``: deploy every web endpoint, wait until each answers, return URLs.

Deploys all endpoints at once (one Serve application each, ``status.deploy``): a failing
``@enter``/factory fails fast with the user's traceback, and a replica that cannot be placed
(say it needs a GPU the cluster lacks) times out with a message naming what it lacks.
Whatever this call deployed is deleted when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import compiler
from ..common import is_remote
from ..compiler import CompiledEndpoint, compile_app, compile_functions
from ..urls import Reach, url_form
from . import cluster
from .output import Progress, print_urls, url_table_html
from .secrets import prepare_secrets
from .status import delete_apps, deploy, endpoint_labels, wait_for_routes
from .volumes import prepare_volumes

if TYPE_CHECKING:
    from ..app import App


@dataclass
class ServeHandle:
    """A served app: ``urls`` maps each endpoint's tag (``"search"``, ``"Model.web"``) to its URL
    (its own origin or its path form: ``rayweb/urls.py``), ``labels`` to its label.

    ``stop()`` deletes the endpoints (and the embedded Ray, once no other handle uses it);
    ``with rayweb.serve(app) as handle:`` stops on exit.
    """

    app: App | None
    endpoints: list[CompiledEndpoint] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    reach: Reach | None = None  # where the endpoints are reached
    holds_embedded: bool = False
    stopped: bool = False
    functions: list[CompiledEndpoint] = field(default_factory=list)  # called with .remote()
    pool: bool = True  # whether a class's web methods share its replicas (the gateway runs)

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        reach = self.reach
        return {tag: reach.url(label) for tag, label in self.labels.items()} if reach else {}

    def __repr__(self) -> str:
        return f"ServeHandle(urls={self.urls!r})"

    def _repr_html_(self) -> str:
        """The notebook's table: each URL, and the other form beside it."""
        if self.reach is None:
            return "<table></table>"
        return url_table_html(self.labels, self.reach)

    def stop(self) -> None:
        """Delete this app's endpoints; stop the embedded Ray when no other handle uses it."""
        if self.stopped:
            return
        self.stopped = True
        delete_apps([ep.name for ep in [*self.endpoints, *self.functions]])
        if self.app is not None:
            for function in self.app.web_endpoints:
                function._hydrate(None)
            record_served(self.app, None)
        from ..calls.handles import forget_handles

        forget_handles()
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
    if is_remote():
        return ServeHandle(app=None, stopped=True)  # a replica importing a serving script
    say = progress or (lambda _msg: None)
    cluster.prepare_env()  # before the compiler imports Ray
    endpoints = compile_app(app, dev=dev)  # fail on bad specs before starting anything
    url_form()  # and on a bad RAYWEB_URL_FORM, read once the endpoints run
    functions = compile_functions(app, dev=dev)
    prepare_volumes(app)
    picked = cluster.pick_address(address)  # the running local cluster, if any
    if picked is not None and address is None and not quiet:
        print(
            f"rayweb: on the running local cluster {picked!r} (`rayweb cluster down --name "
            f"{picked}` stops it; address='local': a Ray of its own)."
        )
    address = picked
    say("Starting Ray" if address is None else f"Connecting to Ray at {address}")
    cluster.ensure_ray(address)
    holds = cluster.hold()
    try:
        http_host, http_port = cluster.ensure_serve(host, port)
        pool = cluster.gateway_running()  # a class's web methods share its replicas
        if not pool or any(len(f.options.resources.gpu) > 1 for f in app.web_endpoints):
            accelerators = cluster.available_accelerators()
            endpoints = compile_app(app, dev=dev, available_accelerators=accelerators, pool=pool)
            functions = compile_functions(app, dev=dev, pool=pool)
        say("Storing secrets")
        prepare_secrets(app)
        reach = Reach(http_host, http_port, cluster.origins_domain())
        base = reach.base
        limit = deploy_timeout if deploy_timeout is not None else compiler.deploy_timeout(endpoints)
        say(f"Deploying {sum(len(ep.web_routes) for ep in endpoints + functions)} endpoint(s)")
        deploy(endpoints + functions, timeout=limit, progress=say, registered=True)
        say("Waiting for the HTTP routes")
        wait_for_routes(base, endpoints, timeout=max(10.0, limit))
    except BaseException:
        if holds:
            cluster.release()
        raise
    labels = endpoint_labels(endpoints + functions)
    handle = ServeHandle(
        app, endpoints, labels, reach, holds_embedded=holds, functions=functions, pool=pool
    )
    for function in app.web_endpoints:
        function._hydrate(handle.urls.get(function.tag))
    record_served(app, dev)
    if not quiet:
        print_urls(labels, reach)
    return handle


def record_served(app: App, dev: bool | None) -> None:
    """Which Serve application runs each function and class, for calls from this process
    (None: the app stopped)."""
    from ..spec import function_app_name

    owners: list[Any] = [*app.registered_functions.values(), *app.registered_classes.values()]
    for owner in owners:
        name = None if dev is None else function_app_name(app.name, owner.tag, dev=dev)
        owner._served_as = name
