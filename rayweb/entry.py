"""A Serve application builder, so a Serve config file (KubeRay's ``serveConfigV2``, or
``serve deploy``) can run a rayweb endpoint: ``import_path: rayweb.entry:build``. It runs on
the cluster, where Serve builds applications from the config.

``args``: ``app`` is ``module:variable`` (importable where the cluster runs, e.g. baked into
the image), ``tag`` the endpoint (``"search"``, ``"Model.web"``), or with ``function: true``
a non-web function or class called with ``.remote()`` (``"square"``, ``"Model"``; its
application must have the name callers compute, ``rayweb-fn-<app>-<tag>``, as the
rendered manifest has it); ``dev`` adds ``-dev``; ``gateway`` (a rendered manifest gives
every application one: ``host``, ``port``, ``serve_port``) starts rayweb's gateway on the head
node, if the cluster has none yet, before this application's replicas exist, so they
register with it (its HAProxy on ``host:port``, Serve's proxy behind it on 127.0.0.1:
``serve_port``, where ``http_options`` put it).
Secrets come from the replica's environment (Kubernetes Secrets via ``envFrom``), so the
compiled payload asks the store for nothing. Compiling here also makes the payload's volume
root the pod's ``RAYWEB_VOLUME_ROOT`` (the same in every pod of a rendered manifest).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


def build(args: dict[str, Any]) -> Any:
    from ._compat import install_modal_alias
    from .app import App
    from .compiler import build_application, compile_endpoint, compile_function
    from .compiler.functions import compile_functions
    from .exception import NotFoundError
    from .spec import FunctionPayload

    install_modal_alias()
    gateway = ensure_gateway(dict(args["gateway"])) if args.get("gateway") else None
    module_name, _, variable = str(args["app"]).partition(":")
    app = getattr(importlib.import_module(module_name), variable or "app")
    if not isinstance(app, App):
        raise NotFoundError(f"{args['app']!r} is not a rayweb.App.")
    dev = bool(args.get("dev", False))
    if args.get("function"):
        targets: dict[str, Any] = {
            **{f.tag: f for f in app.registered_functions.values() if not f.is_web},
            **app.registered_classes,
        }
        if args["tag"] not in targets:
            raise NotFoundError(
                f"App {app.name!r} has no function or class {args['tag']!r}: {sorted(targets)}"
            )
        if args.get("pool"):  # a class with web methods in its pool, as compile_functions has it
            endpoint = next(ep for ep in compile_functions(app, dev=dev) if ep.tag == args["tag"])
        else:
            endpoint = compile_function(targets[args["tag"]], dev=dev)
    else:
        by_tag = {f.tag: f for f in app.web_endpoints}
        if args["tag"] not in by_tag:
            raise NotFoundError(
                f"App {app.name!r} has no web endpoint {args['tag']!r}: {sorted(by_tag)}"
            )
        endpoint = compile_endpoint(by_tag[args["tag"]], dev=dev)
    payload = _without_secrets(endpoint.payload)  # they come from the pod's environment
    endpoint = dataclasses.replace(endpoint, payload=payload)
    if gateway is not None:
        # Its URLs hold at the gateway before a replica exists (admission; a pool's labels
        # wake the pool), as `rayweb deploy` declares them.
        import ray

        pools = [endpoint.name] if isinstance(payload, FunctionPayload) else []
        ray.get(gateway.declare.remote(endpoint.gateway_routes(), pools))
    return build_application(endpoint)


def _without_secrets(payload: Any) -> Any:
    routes = getattr(payload, "routes", ())
    if routes:  # a pool's web methods are replicas' payloads too
        payload = dataclasses.replace(
            payload, routes=tuple(dataclasses.replace(r, secrets=()) for r in routes)
        )
    return dataclasses.replace(payload, secrets=())


def ensure_gateway(spec: dict[str, Any]) -> Any:
    """Start the cluster's gateway (or find it running) and wait until HAProxy listens; an
    error here fails the application's deploy, where KubeRay shows it."""

    from .services.gateway import start_gateway, started_gateway_address

    gateway = start_gateway(
        str(spec.get("host", "0.0.0.0")),
        int(spec["port"]),
        "127.0.0.1",
        int(spec["serve_port"]),
        bool(spec.get("request_metrics", True)),
        bool(spec.get("every_node", False)),
        spec.get("domain", "localhost"),
    )
    started_gateway_address(gateway)
    return gateway
