"""Each endpoint at its own origin on Kubernetes: ``rayweb deploy --kuberay --domain D``
renders host rules that send ``*.D`` (every endpoint's origin) and ``D`` (the path form) to
the RayService's serve Service, where the gateway's HAProxy routes on the ``Host`` header.

An ``Ingress`` by default (``--ingress-class`` names its class), or a Gateway API
``HTTPRoute`` attached to an existing Gateway (``--http-route NAME`` or
``NAMESPACE/NAME``). Needs a wildcard DNS record ``*.D`` for the Ingress' (or Gateway's)
address; TLS for the wildcard is the Ingress controller's (or Gateway's) to add.
"""

from __future__ import annotations

from typing import Any

from ..exception import InvalidError

SERVE_SERVICE_SUFFIX = "-serve-svc"  # KubeRay's Service in front of the serve port


def host_rules(
    service: str,
    domain: str,
    port: int,
    *,
    ingress_class: str | None = None,
    http_route: str | None = None,
) -> dict[str, Any]:
    """The Ingress (or HTTPRoute) for the RayService ``service``'s endpoints under ``domain``
    (``port``: the serve port of KubeRay's serve Service)."""
    hosts = [f"*.{domain}", domain]
    backend = f"{service}{SERVE_SERVICE_SUFFIX}"
    metadata = {"name": f"{service}-hosts", "labels": {"app.kubernetes.io/managed-by": "rayweb"}}
    if http_route is not None:
        if ingress_class is not None:
            raise InvalidError(
                "--ingress-class and --http-route both name what routes the domain. "
                "Suggestion: one of them (an Ingress of that class, or an HTTPRoute on that "
                "Gateway)."
            )
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": metadata,
            "spec": {
                "parentRefs": [_parent(http_route)],
                "hostnames": hosts,
                "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
            },
        }
    path = {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": backend, "port": {"number": port}}},
    }
    spec: dict[str, Any] = {"rules": [{"host": h, "http": {"paths": [path]}} for h in hosts]}
    if ingress_class is not None:
        spec = {"ingressClassName": ingress_class, **spec}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def _parent(ref: str) -> dict[str, str]:
    namespace, _, name = ref.rpartition("/")
    if not name or "/" in namespace:
        raise InvalidError(
            f"--http-route {ref!r} is not a Gateway. Suggestion: --http-route NAME or "
            "--http-route NAMESPACE/NAME (a Gateway API Gateway that listens for the domain)."
        )
    return {"name": name, "namespace": namespace} if namespace else {"name": name}
