"""A Serve application builder, so a Serve config file (KubeRay's ``serveConfigV2``, or
``serve deploy``) can run a rayweb endpoint: ``import_path: rayweb.entry:build``. It runs on
the cluster, where Serve builds applications from the config.

``args``: ``app`` is ``module:variable`` (importable where the cluster runs, e.g. baked into
the image), ``tag`` the endpoint (``"search"``, ``"Model.web"``), ``dev`` adds ``-dev``.
Secrets come from the replica's environment (Kubernetes Secrets via ``envFrom``), so the
compiled payload asks the store for nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


def build(args: dict[str, Any]) -> Any:
    from ._compat import install_modal_alias
    from .app import App
    from .compiler import build_application, compile_endpoint
    from .exception import NotFoundError

    install_modal_alias()
    module_name, _, variable = str(args["app"]).partition(":")
    app = getattr(importlib.import_module(module_name), variable or "app")
    if not isinstance(app, App):
        raise NotFoundError(f"{args['app']!r} is not a rayweb.App.")
    by_tag = {f.tag: f for f in app.web_endpoints}
    if args["tag"] not in by_tag:
        raise NotFoundError(
            f"App {app.name!r} has no web endpoint {args['tag']!r}: {sorted(by_tag)}"
        )
    endpoint = compile_endpoint(by_tag[args["tag"]], dev=bool(args.get("dev", False)))
    payload = dataclasses.replace(endpoint.payload, secrets=())  # from the pod's environment
    return build_application(dataclasses.replace(endpoint, payload=payload))
