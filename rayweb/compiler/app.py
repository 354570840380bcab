"""The whole app: which endpoints ``compile_app`` compiles (a class's web methods go to its
pool, ``functions.py``), how long deploying them may take, and the Serve ``Application``
of each compiled endpoint.

Pure but for ``build_application`` (imports Ray Serve).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..exception import InvalidError
from ..spec import FunctionPayload
from .core import CompiledEndpoint, compile_endpoint

if TYPE_CHECKING:
    from ..app import App
    from ..functions import Function


# The web kinds whose methods share their class's replicas (one pool per @app.cls): a
# web_server's code runs in a sidecar of its own, so it keeps an application of its own.
POOLED_KINDS = ("fastapi_endpoint", "asgi_app", "wsgi_app")


def pooled(function: Function[Any, Any]) -> bool:
    """Whether a web method runs in its class's pool (``compile_functions``) rather than in
    an application of its own."""
    web = function.web  # a Server's kind is "server": not pooled
    return function.cls is not None and web is not None and web.kind in POOLED_KINDS


def deploy_timeout(endpoints: Iterable[CompiledEndpoint]) -> float:
    """How long deploying ``endpoints`` together may take: the longest startup timeout."""
    return max((ep.startup_timeout for ep in endpoints), default=300.0)


def compile_app(
    app: App,
    *,
    dev: bool = False,
    available_accelerators: Iterable[str] | None = None,
    pool: bool = True,
) -> list[CompiledEndpoint]:
    """Compile every web endpoint of ``app``; duplicate labels are an error. With ``pool``
    (rayweb's gateway in front), the web methods of an ``@app.cls`` are left to their
    class's pool (``compile_functions``); without it (Serve's proxy only, KubeRay), each is
    an application of its own."""
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
    if pool:
        in_pools = {f.tag for f in app.web_endpoints if pooled(f)}
        endpoints = [ep for ep in endpoints if ep.tag not in in_pools]
    _warn_unsupported_image_steps(app)
    if not endpoints and not app.registered_functions and not app.registered_classes:
        raise InvalidError(
            f"App {app.name!r} has no web endpoints to serve. Suggestion: decorate a function "
            "with @app.function() above @rayweb.fastapi_endpoint() or @rayweb.asgi_app()."
        )
    return endpoints


def _warn_unsupported_image_steps(app: App) -> None:
    """apt/run_commands steps cannot be applied per deployment on Ray: say so (once per
    distinct message; Python's warning registry drops repeats)."""
    steps: list[str] = []
    for function in app.web_endpoints:
        image = function.options.image or app.image
        for step in image.unsupported_steps() if image else []:
            if step not in steps:
                steps.append(step)
    if steps:
        warnings.warn(
            f"rayweb: Ray cannot apply these Image steps per deployment: {', '.join(steps)}. "
            "The cluster's node image must already provide them (on KubeRay: build them into "
            "--image).",
            stacklevel=3,
        )


def build_application(endpoint: CompiledEndpoint) -> Any:
    """The Serve ``Application`` for one compiled endpoint (imports Ray Serve)."""
    from ray import serve

    from ..replica.deployment import RaywebReplica
    from ..replica.function import RaywebFunctionReplica
    from ..replica.pool import RaywebPoolReplica

    replica_class: Any = RaywebReplica
    if isinstance(endpoint.payload, FunctionPayload):
        replica_class = RaywebPoolReplica if endpoint.payload.routes else RaywebFunctionReplica
    deployment = serve.deployment(replica_class).options(  # type: ignore[attr-defined]
        **endpoint.deployment_options
    )
    return deployment.bind(endpoint.payload)
