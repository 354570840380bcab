"""Render a KubeRay ``RayService`` for an app (a pure function of the app and options).

- ``serveConfigV2``: one Serve application per endpoint, built on the cluster by
  ``rayweb.entry:build`` from the app's module (which must be importable in the
  image), with the compiler's deployment options.
- ``rayClusterConfig``: ``rayVersion`` = the installed Ray, in-tree autoscaling on, token
  auth on (Ray's default), a head group that runs no replicas (``num-cpus: "0"``), a CPU
  worker group and one GPU worker group per accelerator type the app asks for, each with
  the Ray resources the replicas request, scaling from 0.
- Secrets: named ones become ``envFrom: secretRef`` (a Kubernetes Secret of the same name,
  sanitised); values never appear. Secrets given in code cannot go in a manifest and are an
  error naming the fix.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..app import App
from ..compiler import compile_app, compile_functions, endpoint_spec
from ..exception import InvalidError

DEFAULT_IMAGE = "rayproject/ray:{version}-py311"
SERVE_PORT = 8000


def k8s_name(name: str) -> str:
    """A DNS-1123 name for a Kubernetes object."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return out[:63].rstrip("-") or "rayweb"


def render_rayservice(
    app: App,
    *,
    module: str,
    variable: str = "app",
    name: str | None = None,
    image: str | None = None,
    ray_version: str | None = None,
    max_workers: int = 10,
) -> dict[str, Any]:
    """The RayService manifest (a dict ready for YAML) for ``app``, defined in ``module``."""
    if ray_version is None:
        import ray

        ray_version = str(ray.__version__)
    image = image or (app.image.base_image if app.image and app.image.base_image else None)
    image = image or DEFAULT_IMAGE.format(version=ray_version)
    endpoints = compile_app(app) + compile_functions(app)  # web, then called with .remote()
    secrets = _named_secrets(app)

    applications = []
    gpu_groups: dict[str, dict[str, float]] = {}
    cpu_per_worker = 2.0
    for ep in endpoints:
        options = ep.deployment_options
        deployment = {
            k: v
            for k, v in options.items()
            if k in ("name", "max_ongoing_requests", "autoscaling_config", "ray_actor_options")
        }
        deployment["ray_actor_options"] = {
            k: v for k, v in deployment["ray_actor_options"].items() if k != "runtime_env"
        }
        applications.append(
            {
                "name": ep.name,
                "route_prefix": ep.route_prefix,
                "import_path": "rayweb.entry:build",
                "args": {"app": f"{module}:{variable}", "tag": ep.tag}
                | ({"function": True} if ep.route_prefix is None else {}),
                "deployments": [deployment],
            }
        )
        plan = ep.plan  # what one replica (and a web_server's sidecar) asks Ray for
        if plan.gpus:
            kind = plan.accelerator or "any"
            group = gpu_groups.setdefault(kind, {"GPU": 0.0, "CPU": 0.0})
            group["GPU"] = max(group["GPU"], plan.gpus)
            group["CPU"] = max(group["CPU"], plan.cpus)
        else:
            cpu_per_worker = max(cpu_per_worker, plan.cpus)

    serve_config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "applications": applications,
    }
    workers = [_group("cpu", image, {"CPU": math.ceil(cpu_per_worker)}, secrets, max_workers)]
    for kind, need in sorted(gpu_groups.items()):
        workers.append(
            _group(
                f"gpu-{k8s_name(kind)}",
                image,
                {"CPU": max(2, math.ceil(need["CPU"])), "GPU": math.ceil(need["GPU"])},
                secrets,
                max_workers,
                accelerator=None if kind == "any" else kind,
            )
        )
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": k8s_name(name or app.name or "rayweb")},
        "spec": {
            "serveConfigV2": _yaml(serve_config),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "enableInTreeAutoscaling": True,
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod(image, {"cpu": "2", "memory": "8Gi"}, secrets, head=True),
                },
                "workerGroupSpecs": workers,
            },
        },
    }


def _named_secrets(app: App) -> list[str]:
    names: list[str] = []
    for function in app.web_endpoints:
        for ref in endpoint_spec(function).secrets:
            if ref.values is not None:
                raise InvalidError(
                    f"{function.tag}: secrets given in code (Secret.from_dict, from_dotenv, "
                    "from_local_environ, env=) cannot go in a Kubernetes manifest. Suggestion: "
                    "create a Kubernetes Secret and use rayweb.Secret.from_name('<its name>')."
                )
            if ref.name not in names:
                names.append(ref.name)
    return names


def _group(
    group: str,
    image: str,
    ray_resources: dict[str, int],
    secrets: list[str],
    max_workers: int,
    accelerator: str | None = None,
) -> dict[str, Any]:
    limits = {"cpu": str(ray_resources["CPU"]), "memory": f"{4 * ray_resources['CPU']}Gi"}
    params: dict[str, str] = {"num-cpus": str(ray_resources["CPU"])}
    if "GPU" in ray_resources:
        limits["nvidia.com/gpu"] = str(ray_resources["GPU"])
        params["num-gpus"] = str(ray_resources["GPU"])
    spec: dict[str, Any] = {
        "groupName": group,
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max_workers,
        "rayStartParams": params,
        "template": _pod(image, limits, secrets, head=False),
    }
    if accelerator:
        # Replicas ask for accelerator_type:<X>; this group's nodes provide it.
        spec["resources"] = {f"accelerator_type:{accelerator}": "1"}
    return spec


def _pod(image: str, limits: dict[str, str], secrets: list[str], *, head: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "ray-head" if head else "ray-worker",
        "image": image,
        "resources": {"limits": dict(limits), "requests": dict(limits)},
    }
    if head:
        container["ports"] = [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": SERVE_PORT, "name": "serve"},
        ]
    if secrets:
        container["envFrom"] = [{"secretRef": {"name": k8s_name(s)}} for s in secrets]
    return {"spec": {"containers": [container]}}


def _yaml(data: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None  # serveConfigV2 stays readable
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return str(yaml.dump(data, Dumper=Dumper, sort_keys=False))


def to_yaml(manifest: dict[str, Any]) -> str:
    return _yaml(manifest)
