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
from . import cluster
from .output import Progress, print_urls
from .secrets import prepare_secrets
from .status import delete_apps, deploy, endpoint_urls, wait_for_routes
from .volumes import prepare_volumes

if TYPE_CHECKING:
    from ..app import App


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
    functions: list[CompiledEndpoint] = field(default_factory=list)  # called with .remote()
    pool: bool = True  # whether a class's web methods share its replicas (the gateway runs)

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
    endpoints = compile_app(app, dev=dev)  # fail on bad specs before starting anything
    functions = compile_functions(app, dev=dev)
    prepare_volumes(app)
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
        base = f"http://{cluster.url_host(http_host)}:{http_port}"
        limit = deploy_timeout if deploy_timeout is not None else compiler.deploy_timeout(endpoints)
        say(f"Deploying {sum(len(ep.web_routes) for ep in endpoints + functions)} endpoint(s)")
        deploy(endpoints + functions, timeout=limit, progress=say)
        say("Waiting for the HTTP routes")
        wait_for_routes(base, endpoints, timeout=max(10.0, limit))
    except BaseException:
        if holds:
            cluster.release()
        raise
    urls = endpoint_urls(base, endpoints + functions)
    for function in app.web_endpoints:
        function._hydrate(urls.get(function.tag))
    record_served(app, dev)
    handle = ServeHandle(
        app, endpoints, urls, base, holds_embedded=holds, functions=functions, pool=pool
    )
    if not quiet:
        print_urls(handle.urls)
    return handle


def record_served(app: App, dev: bool | None) -> None:
    """Which Serve application runs each function and class, for calls from this process
    (None: the app stopped)."""
    from ..spec import function_app_name

    owners: list[Any] = [*app.registered_functions.values(), *app.registered_classes.values()]
    for owner in owners:
        name = None if dev is None else function_app_name(app.name, owner.tag, dev=dev)
        owner._served_as = name
