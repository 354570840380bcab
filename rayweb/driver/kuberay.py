"""Render a KubeRay ``RayService`` for an app (a pure function of the app and options).

- ``serveConfigV2``: one Serve application per endpoint (a class's web methods: in its
  pool's), built on the cluster by ``rayweb.entry:build`` from the app's module (which must
  be importable in the image), with the compiler's deployment options. The first build
  starts rayweb's gateway on the head (``args.gateway``): its HAProxy owns the head
  container's ``serve`` port (8000, what KubeRay's serve Service targets; it answers the head
  check ``GET /-/healthz`` itself), Serve's proxy listens behind it on 127.0.0.1:8001 of the
  head only (``proxy_location: HeadOnly``, so worker pods stay out of the serve Service unless
  ``gateway_nodes="every"`` gives each its own gateway), and replicas register their own
  ports with it: the gateway connects to them pod to pod.
- ``rayClusterConfig``: ``rayVersion`` = the installed Ray, in-tree autoscaling on, token
  auth on (Ray's default), a head group that runs no replicas (``num-cpus: "0"``), a CPU
  worker group and one GPU worker group per accelerator type the app asks for, each with
  the Ray resources the replicas request, scaling from 0.
- Secrets: named ones become ``envFrom: secretRef`` (a Kubernetes Secret of the same name,
  sanitised); values never appear. Secrets given in code cannot go in a manifest and are an
  error naming the fix.
- Volumes: each named ``Volume`` the app mounts is a ``PersistentVolumeClaim``
  ``rayweb-vol-<name>`` (``ReadWriteMany``, ``volume_size``, ``storage_class`` if given). Every
  pod has ``RAYWEB_VOLUME_ROOT=/mnt/rayweb/volumes`` (an ``emptyDir``, so rayweb's mount
  record there is writable) with each claim at ``<root>/<name>``; worker pods mount it at the
  script's mount path too, which ``replica/mounts.py`` accepts as the volume already. The
  payloads are compiled in the pod (``rayweb.entry:build``), so their ``volume_root`` is the
  pod's. ``Volume.ephemeral()`` cannot go in a manifest (an error naming ``from_name``).
- Dicts and Queues: the head mounts the claim ``rayweb-state-<service>`` (``ReadWriteOnce``,
  ``state_size``) at ``RAYWEB_STORE_DIR=/mnt/rayweb/store``, so the state survives a restart
  of the head pod. One claim per RayService: two clusters never share a store.
- Warm workers: every pod sets ``RAY_preload_python_modules``, so each Ray worker imports
  Serve's and rayweb's replica code before it waits for work (``services/warmpool.py``).
- ``render_manifests`` gives the claims, then the RayService; ``to_yaml`` of that list is a
  multi-document YAML file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..app import App
from ..compiler import compile_app, compile_functions, endpoint_spec
from ..exception import InvalidError
from ..services.warmpool import PRELOAD_ENV, PRELOAD_MODULES
from ..urls import check_domain
from ..volstore import ROOT_ENV
from .kuberay_hosts import host_rules

DEFAULT_IMAGE = "rayproject/ray:{version}-py311"
SERVE_PORT = 8000  # the head container's `serve` port: the gateway's HAProxy
SERVE_PROXY_PORT = 8001  # Serve's own proxy, on the head's loopback, behind the gateway
VOLUME_ROOT = "/mnt/rayweb/volumes"  # RAYWEB_VOLUME_ROOT in every container
STORE_DIR = "/mnt/rayweb/store"  # RAYWEB_STORE_DIR on the head: Dicts and Queues
DEFAULT_VOLUME_SIZE = "10Gi"
DEFAULT_STATE_SIZE = "1Gi"
STORE_ENV = "RAYWEB_STORE_DIR"
RAY_GROUP = 100  # the group of rayproject/ray's `ray` user: claims are made writable for it
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def k8s_name(name: str) -> str:
    """A DNS-1123 name for a Kubernetes object."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return out[:63].rstrip("-") or "rayweb"


def render_manifests(
    app: App,
    *,
    module: str,
    variable: str = "app",
    name: str | None = None,
    image: str | None = None,
    ray_version: str | None = None,
    max_workers: int = 10,
    volume_size: str = DEFAULT_VOLUME_SIZE,
    state_size: str = DEFAULT_STATE_SIZE,
    storage_class: str | None = None,
    gateway_nodes: str = "head",
    domain: str | None = None,
    ingress_class: str | None = None,
    http_route: str | None = None,
) -> list[dict[str, Any]]:
    """Every object ``app`` needs on Kubernetes, ready for YAML: a ``PersistentVolumeClaim``
    per named volume it mounts (``storage_class`` applies to these, which must be
    ``ReadWriteMany``), the head's claim for Dicts and Queues, the RayService, and with a
    ``domain`` the Ingress or HTTPRoute of each endpoint's own origin (``kuberay_hosts.py``)."""
    volume_size, state_size = _quantity(volume_size), _quantity(state_size)
    domain = check_domain(domain) if domain is not None else None
    if domain is None and (ingress_class is not None or http_route is not None):
        raise InvalidError(
            "--ingress-class and --http-route route a domain's hosts. Suggestion: add "
            "--domain apps.example.com (with a wildcard DNS record for it)."
        )
    service = render_rayservice(
        app,
        module=module,
        variable=variable,
        name=name,
        image=image,
        ray_version=ray_version,
        max_workers=max_workers,
        gateway_nodes=gateway_nodes,
        domain=domain,
    )
    claims = [
        _claim(claim, "ReadWriteMany", volume_size, storage_class, volume=volume)
        for volume, claim, _paths in _volumes(app)
    ]
    state = _claim(_state_claim(service["metadata"]["name"]), "ReadWriteOnce", state_size)
    hosts = []
    if domain is not None:
        name = service["metadata"]["name"]
        hosts = [
            host_rules(name, domain, SERVE_PORT, ingress_class=ingress_class, http_route=http_route)
        ]
    return [*claims, state, service, *hosts]


def render_rayservice(
    app: App,
    *,
    module: str,
    variable: str = "app",
    name: str | None = None,
    image: str | None = None,
    ray_version: str | None = None,
    max_workers: int = 10,
    gateway_nodes: str = "head",
    domain: str | None = None,
) -> dict[str, Any]:
    """The RayService manifest (a dict ready for YAML) for ``app``, defined in ``module``;
    the claims its pods mount are in ``render_manifests``. ``gateway_nodes``: ``head`` (one
    gateway) or ``every`` (one on every node too: each worker's HAProxy listens on the serve
    port, passes KubeRay's readiness check there and joins the serve Service)."""
    if gateway_nodes not in ("head", "every"):
        raise InvalidError(
            f"gateway_nodes={gateway_nodes!r} is not a choice. Suggestion: --gateway-nodes head "
            "(the default) or --gateway-nodes every."
        )
    if ray_version is None:
        import ray

        ray_version = str(ray.__version__)
    image = image or (app.image.base_image if app.image and app.image.base_image else None)
    image = image or DEFAULT_IMAGE.format(version=ray_version)
    # web, then called with .remote(); a class's web methods share its pool (the gateway
    # runs here too), so they are in its application (`pool: true`)
    endpoints = compile_app(app) + compile_functions(app)
    gateway: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": SERVE_PORT,
        "serve_port": SERVE_PROXY_PORT,
    }
    if gateway_nodes == "every":
        gateway["every_node"] = True
    if domain is not None:  # else the gateway's default, `localhost` (a port-forward's)
        gateway["domain"] = domain
    service = k8s_name(name or app.name or "rayweb")
    pods = _Pods(image, _named_secrets(app), _volumes(app), _state_claim(service))

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
                "args": _build_args(ep, f"{module}:{variable}", gateway),
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
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": SERVE_PROXY_PORT},
        "applications": applications,
    }
    workers = [_group("cpu", pods, {"CPU": math.ceil(cpu_per_worker)}, max_workers)]
    for kind, need in sorted(gpu_groups.items()):
        workers.append(
            _group(
                f"gpu-{k8s_name(kind)}",
                pods,
                {"CPU": max(2, math.ceil(need["CPU"])), "GPU": math.ceil(need["GPU"])},
                max_workers,
                accelerator=None if kind == "any" else kind,
            )
        )
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": service},
        "spec": {
            "serveConfigV2": SERVE_CONFIG_NOTE + _yaml(serve_config),
            "rayClusterConfig": {
                "rayVersion": ray_version,
                "enableInTreeAutoscaling": True,
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": pods.template({"cpu": "2", "memory": "8Gi"}, head=True),
                },
                "workerGroupSpecs": workers,
            },
        },
    }


def _build_args(ep: Any, app_ref: str, gateway: dict[str, Any]) -> dict[str, Any]:
    """``rayweb.entry:build``'s arguments for one application."""
    args: dict[str, Any] = {"app": app_ref, "tag": ep.tag, "gateway": dict(gateway)}
    if ep.route_prefix is None:  # called with .remote()
        args["function"] = True
        if ep.web_routes:  # and a class whose web methods share its pool
            args["pool"] = True
    return args


SERVE_CONFIG_NOTE = f"""\
# rayweb: the first application's build starts rayweb's gateway (HAProxy) on the head, on
# the head container's `serve` port ({SERVE_PORT}); Serve's proxy stays behind it, on the
# head's 127.0.0.1:{SERVE_PROXY_PORT}. Replicas register their own ports with the gateway,
# which connects to them from the head pod: the pods of this cluster must reach each other
# on any TCP port (replica ports are ephemeral: the kernel's range, 32768-60999 by default).
"""


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
    pods: _Pods,
    ray_resources: dict[str, int],
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
        "template": pods.template(limits, head=False),
    }
    if accelerator:
        # Replicas ask for accelerator_type:<X>; this group's nodes provide it.
        spec["resources"] = {f"accelerator_type:{accelerator}": "1"}
    return spec


@dataclass(frozen=True)
class _Pods:
    """What every pod of the cluster shares: the image, secrets, volumes and state claim."""

    image: str
    secrets: list[str]
    volumes: list[tuple[str, str, list[str]]]  # (volume name, claim, mount paths)
    state_claim: str

    def template(self, limits: dict[str, str], *, head: bool) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "ray-head" if head else "ray-worker",
            "image": self.image,
            "resources": {"limits": dict(limits), "requests": dict(limits)},
        }
        if head:
            container["ports"] = [
                {"containerPort": 6379, "name": "gcs-server"},
                {"containerPort": 8265, "name": "dashboard"},
                {"containerPort": 10001, "name": "client"},
                {"containerPort": SERVE_PORT, "name": "serve"},
            ]
        if self.secrets:
            container["envFrom"] = [{"secretRef": {"name": k8s_name(s)}} for s in self.secrets]
        env = [
            {"name": ROOT_ENV, "value": VOLUME_ROOT},
            {"name": PRELOAD_ENV, "value": ",".join(PRELOAD_MODULES)},  # warm workers
        ]
        # the root is an emptyDir, so rayweb's mount record (.rayweb-mounts) is writable
        mounts = [{"name": "rayweb-volume-root", "mountPath": VOLUME_ROOT}]
        volumes: list[dict[str, Any]] = [{"name": "rayweb-volume-root", "emptyDir": {}}]
        for volume, claim, paths in self.volumes:
            volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
            mounts.append({"name": claim, "mountPath": f"{VOLUME_ROOT}/{volume}"})
            # replicas run on workers: the files are at the script's path, and mounts.py
            # accepts a path that is the volume's directory already
            mounts += [] if head else [{"name": claim, "mountPath": p} for p in paths]
        if head:  # the rayweb-state actor runs on the head
            env.append({"name": STORE_ENV, "value": STORE_DIR})
            mounts.append({"name": "rayweb-state", "mountPath": STORE_DIR})
            claim_ref = {"claimName": self.state_claim}
            volumes.append({"name": "rayweb-state", "persistentVolumeClaim": claim_ref})
        container |= {"env": env, "volumeMounts": mounts}
        security = {"fsGroup": RAY_GROUP, "fsGroupChangePolicy": "OnRootMismatch"}
        return {
            "spec": {"containers": [container], "volumes": volumes, "securityContext": security}
        }


def _volumes(app: App) -> list[tuple[str, str, list[str]]]:
    """``(volume name, claim name, mount paths)`` of each named volume the app mounts; one
    volume per path across the app (a pod has one filesystem), nothing under /mnt/rayweb."""
    owners: list[Any] = app.owners
    at: dict[str, str] = {}  # mount path -> volume name
    claims: dict[str, str] = {}  # claim -> volume name
    out: dict[str, tuple[str, str, list[str]]] = {}
    for owner in owners:
        for path, volume in owner.options.volumes:
            if volume.name is None:
                raise InvalidError(
                    f"{owner.tag}: a Volume.ephemeral() (mounted at {path}) exists only inside "
                    "one process's `with` block and cannot go in a Kubernetes manifest. "
                    "Suggestion: use rayweb.Volume.from_name('<name>', create_if_missing=True); "
                    "the manifest makes it a PersistentVolumeClaim."
                )
            name = volume.name
            if path == "/mnt/rayweb" or path.startswith("/mnt/rayweb/"):
                raise InvalidError(
                    f"{owner.tag}: Volume '{name}' is mounted at {path}, under /mnt/rayweb, "
                    "where the Kubernetes manifest keeps rayweb's volumes and state. "
                    "Suggestion: mount it elsewhere, such as /data."
                )
            for other, other_name in at.items():
                nested = path.startswith(other + "/") or other.startswith(path + "/")
                if other_name != name and (other == path or nested):
                    raise InvalidError(
                        f"{owner.tag}: Volume '{name}' at {path} and Volume '{other_name}' at "
                        f"{other}: on Kubernetes every pod mounts every volume of the app, so "
                        "one path holds one volume and no mount path may be inside another. "
                        "Suggestion: give each volume its own path."
                    )
            claim = k8s_name(f"rayweb-vol-{name}")
            if claims.setdefault(claim, name) != name:
                raise InvalidError(
                    f"Volumes '{claims[claim]}' and '{name}' both become the Kubernetes "
                    f"claim {claim} (names are lower-cased, '_' and '.' become '-', 63 "
                    "characters at most). Suggestion: rename one of them."
                )
            at[path] = name
            paths = out.setdefault(name, (name, claim, []))[2]
            if path not in paths:
                paths.append(path)
    return sorted(out.values(), key=lambda v: v[1])  # by claim: stable as functions move


def _state_claim(service: str) -> str:
    return k8s_name(f"rayweb-state-{service}")


def _claim(
    name: str, access: str, size: str, storage_class: str | None = None, volume: str = ""
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "rayweb"}}
    if volume:
        metadata["annotations"] = {"rayweb/volume": volume}
    spec: dict[str, Any] = {"accessModes": [access], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def _quantity(size: str) -> str:
    if not _QUANTITY.match(size):
        raise InvalidError(
            f"Storage size {size!r} is not a Kubernetes quantity. Suggestion: write it like "
            "10Gi or 500Mi."
        )
    return size


def _yaml(data: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None  # serveConfigV2 stays readable
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return str(yaml.dump(data, Dumper=Dumper, sort_keys=False))


def to_yaml(manifest: dict[str, Any] | list[dict[str, Any]]) -> str:
    """One manifest, or a list of them as one multi-document YAML file."""
    if isinstance(manifest, dict):
        return _yaml(manifest)
    return "---\n".join(_yaml(document) for document in manifest)
