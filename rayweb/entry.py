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
    from .exception import NotFoundError

    install_modal_alias()
    if args.get("gateway"):
        ensure_gateway(dict(args["gateway"]))
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
        endpoint = compile_function(targets[args["tag"]], dev=dev)
    else:
        by_tag = {f.tag: f for f in app.web_endpoints}
        if args["tag"] not in by_tag:
            raise NotFoundError(
                f"App {app.name!r} has no web endpoint {args['tag']!r}: {sorted(by_tag)}"
            )
        endpoint = compile_endpoint(by_tag[args["tag"]], dev=dev)
    payload = dataclasses.replace(endpoint.payload, secrets=())  # from the pod's environment
    return build_application(dataclasses.replace(endpoint, payload=payload))


def ensure_gateway(spec: dict[str, Any]) -> None:
    """Start the cluster's gateway (or find it running) and wait until HAProxy listens; an
    error here fails the application's deploy, where KubeRay shows it."""
    import ray

    from .services.gateway import start_gateway

    gateway = start_gateway(
        str(spec.get("host", "0.0.0.0")),
        int(spec["port"]),
        "127.0.0.1",
        int(spec["serve_port"]),
        bool(spec.get("request_metrics", True)),
        bool(spec.get("every_node", False)),
    )
    ray.get(gateway.address.remote())
