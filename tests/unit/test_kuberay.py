"""Generated KubeRay manifests: the RayService valid against KubeRay's CRD (strictly) and
Serve's schema, free of secret values; the claims for volumes and Dict/Queue state; and the
samples in cluster/kuberay/ match what rayweb renders."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import rayweb
from rayweb.driver.import_refs import load_app
from rayweb.driver.kuberay import (
    VOLUME_ROOT,
    k8s_name,
    render_manifests,
    render_rayservice,
    to_yaml,
)
from rayweb.exception import InvalidError
from tests.conftest import EXAMPLES, ROOT

CRD = ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
SAMPLES = {
    "fastapi_endpoint": "fastapi_endpoint.py",
    "secret_bearer": "secret_bearer.py",
    "web_server_aiohttp": "web_server_aiohttp.py",
    "gpu_app": "resources.py::gpu_app",
    "backend_functions": "backend_functions.py",
    "uploads": "uploads.py",
    "class_pool": "class_pool.py",
}


def _strict(schema: dict) -> dict:
    """The API server drops unknown fields silently: treat them as errors."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

    walk(schema)
    return schema


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    if not CRD.exists():
        pytest.fail(f"KubeRay CRD schema missing at {CRD} (shared/kuberay/)")
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _check(manifest: dict) -> dict:
    errors = sorted(_validator().iter_errors(manifest), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    from ray.serve.schema import ServeDeploySchema

    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    return serve_config


def _render(*args: str) -> subprocess.CompletedProcess:
    """``rayweb deploy ... --kuberay`` as a user runs it (examples mount at /data)."""
    env = {k: v for k, v in os.environ.items() if k != "EXAMPLE_MOUNT"}
    return subprocess.run(
        [sys.executable, "-m", "rayweb.cli", "deploy", *args, "--kuberay"],
        capture_output=True, text=True, check=True, cwd=ROOT, env=env,
    )  # fmt: skip


def _check_claim(claim: dict, access: str, size: str) -> None:
    """What the API server needs of a PersistentVolumeClaim (no schema of v1 core here)."""
    assert set(claim) == {"apiVersion", "kind", "metadata", "spec"}
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    name = claim["metadata"]["name"]
    assert len(name) <= 63 and name == k8s_name(name)
    assert claim["spec"]["accessModes"] == [access]
    assert claim["spec"]["resources"] == {"requests": {"storage": size}}


def _check_all(documents: list) -> tuple[list, dict]:
    """The claims (each named by a pod) and the RayService, which comes last."""
    *claims, service = documents
    _check(service)
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    named = {
        v["persistentVolumeClaim"]["claimName"]
        for pod in pods
        for v in pod["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert named == {c["metadata"]["name"] for c in claims}
    for claim in claims:
        is_state = claim["metadata"]["name"].startswith("rayweb-state-")
        _check_claim(
            claim,
            "ReadWriteOnce" if is_state else "ReadWriteMany",
            claim["spec"]["resources"]["requests"]["storage"],
        )
    return claims, service


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_samples_are_valid_and_in_sync(sample):
    ref = SAMPLES[sample]
    out = _render(str(EXAMPLES / ref)).stdout
    _check_all(list(yaml.safe_load_all(out)))
    stored = (ROOT / "cluster" / "kuberay" / f"{sample}.yaml").read_text()
    assert out == stored, (
        f"cluster/kuberay/{sample}.yaml is stale: rerun `rayweb deploy examples/{ref} --kuberay -o ...`"
    )


def test_gpu_endpoint_gets_a_gpu_worker_group():
    app = load_app(str(EXAMPLES / "resources.py::gpu_app"))
    manifest = render_rayservice(app, module="resources", variable="gpu_app", ray_version="2.60.0")
    serve_config = _check(manifest)
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu-l40s"]
    assert gpu["resources"] == {"accelerator_type:L40S": "1"}
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        gpu["minReplicas"] == 0 and manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"]
    )
    actor = serve_config["applications"][0]["deployments"][0]["ray_actor_options"]
    assert actor["num_gpus"] == 1 and actor["accelerator_type"] == "L40S"
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    # every pod's raylet has its workers import the replica code before they wait for work
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    for template in (head, gpu["template"]):
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        modules = env["RAY_preload_python_modules"].split(",")
        assert "rayweb.replica.deployment" in modules and "ray.serve._private.replica" in modules


def test_web_server_sidecar_resources_count_for_the_worker_group():
    app = rayweb.App("ws-k8s")

    @app.function(serialized=True, gpu="H100:2", cpu=4)
    @rayweb.web_server(8000)
    def vllm():
        pass

    manifest = render_rayservice(app, module="m", ray_version="2.60.0")
    _check(manifest)
    group = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    assert group["groupName"] == "gpu-h100" and group["rayStartParams"]["num-gpus"] == "2"
    assert group["rayStartParams"]["num-cpus"] == "5"  # sidecar 4 + proxy 0.05, rounded up


def test_named_secrets_are_references_and_code_secrets_are_refused():
    app = load_app(str(EXAMPLES / "secret_bearer.py"))
    text = to_yaml(render_rayservice(app, module="secret_bearer", ray_version="2.60.0"))
    assert "secretRef:\n" in text and "name: my-web-auth-token" in text

    inline = rayweb.App("inline", secrets=[rayweb.Secret.from_dict({"K": "canary-k8s"})])

    @inline.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def f() -> str:
        return "x"

    with pytest.raises(InvalidError, match="cannot go in a Kubernetes manifest") as info:
        render_rayservice(inline, module="m", ray_version="2.60.0")
    assert "canary-k8s" not in str(info.value)


def test_deploy_to_a_missing_cluster_names_the_fix(tmp_path: Path):
    """No Ray is started: the named cluster does not exist, and the message says how to
    make it (the deploy itself is tested in tests/e2e/test_cluster.py)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rayweb.cli",
            "deploy",
            str(EXAMPLES / "fastapi_endpoint.py"),
            "--address",
            "nosuch",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "RAYWEB_CLUSTERS_DIR": str(tmp_path)},
        timeout=120,
    )
    assert out.returncode == 1
    assert "No rayweb cluster 'nosuch'. Suggestion: rayweb cluster up --name nosuch" in out.stderr
    assert "Traceback" not in out.stderr


def _mounts(container: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for mount in container["volumeMounts"]:
        out.setdefault(mount["name"], []).append(mount["mountPath"])
    return out


def test_volumes_become_claims_mounted_at_the_root_and_the_scripts_path():
    vol = rayweb.Volume.from_name("Models_v1")
    app = rayweb.App("vols", volumes={"/shared": rayweb.Volume.from_name("shared")})

    @app.function(serialized=True, volumes={"/models": vol}, gpu="L4")
    def infer():
        pass

    @app.function(serialized=True, volumes={"/weights": vol})
    @rayweb.fastapi_endpoint()
    def web() -> str:
        return "x"

    documents = render_manifests(
        app, module="m", ray_version="2.60.0", volume_size="50Gi", storage_class="nfs"
    )
    claims, service = _check_all(documents)
    assert [c["metadata"]["name"] for c in claims] == [
        "rayweb-vol-models-v1", "rayweb-vol-shared", "rayweb-state-vols"
    ]  # fmt: skip
    models = claims[0]
    assert models["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert models["spec"]["storageClassName"] == "nfs"
    assert models["metadata"]["annotations"] == {"rayweb/volume": "Models_v1"}
    state = claims[2]
    assert state["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in state["spec"]  # the cluster's default class
    cluster = service["spec"]["rayClusterConfig"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == ["cpu", "gpu-l4"]
    for group in cluster["workerGroupSpecs"]:  # every group mounts every volume
        (container,) = group["template"]["spec"]["containers"]
        assert {"name": "RAYWEB_VOLUME_ROOT", "value": VOLUME_ROOT} in container["env"]
        assert _mounts(container) == {
            "rayweb-volume-root": [VOLUME_ROOT],
            "rayweb-vol-models-v1": [f"{VOLUME_ROOT}/Models_v1", "/models", "/weights"],
            "rayweb-vol-shared": [f"{VOLUME_ROOT}/shared", "/shared"],
        }
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"name": "RAYWEB_STORE_DIR", "value": "/mnt/rayweb/store"} in head["env"]
    assert _mounts(head)["rayweb-state"] == ["/mnt/rayweb/store"]
    assert "/models" not in str(head["volumeMounts"])  # no replicas on the head
    text = to_yaml(documents)
    assert text.count("\n---\n") == 3 and list(yaml.safe_load_all(text)) == documents
    assert render_rayservice(app, module="m", ray_version="2.60.0") == service


def test_payloads_compiled_in_the_pod_carry_the_pods_root(monkeypatch: pytest.MonkeyPatch):
    """rayweb.entry:build compiles in the pod, where RAYWEB_VOLUME_ROOT is the manifest's."""
    from rayweb.compiler import compile_functions

    monkeypatch.setenv("RAYWEB_VOLUME_ROOT", VOLUME_ROOT)
    app = rayweb.App("root")

    @app.function(serialized=True, volumes={"/data": rayweb.Volume.from_name("d")})
    def f():
        pass

    (ep,) = compile_functions(app)
    assert ep.payload.volume_root == VOLUME_ROOT and ep.payload.mounts == (("/data", "d"),)


def test_volumes_a_manifest_cannot_hold_are_refused():
    def app_with(*mounts: dict) -> rayweb.App:
        app = rayweb.App("bad")
        for i, volumes in enumerate(mounts):
            app.function(serialized=True, volumes=volumes, name=f"f{i}")(lambda: None)
        return app

    ephemeral = rayweb.Volume.ephemeral()
    with ephemeral as eph, pytest.raises(InvalidError, match=r"f0: a Volume.ephemeral\(\)"):
        render_manifests(app_with({"/data": eph}), module="m", ray_version="2.60.0")
    a, b = rayweb.Volume.from_name("a"), rayweb.Volume.from_name("b")
    for clash in ({"/data": b}, {"/data/sub": b}):
        with pytest.raises(InvalidError, match="one path holds one volume"):
            render_manifests(app_with({"/data": a}, clash), module="m", ray_version="2.60.0")
    twins = app_with({"/x": rayweb.Volume.from_name("a_b")}, {"/y": rayweb.Volume.from_name("a.b")})
    with pytest.raises(InvalidError, match="both become the Kubernetes claim rayweb-vol-a-b"):
        render_manifests(twins, module="m", ray_version="2.60.0")
    with pytest.raises(InvalidError, match="under /mnt/rayweb"):
        render_manifests(app_with({"/mnt/rayweb/x": a}), module="m", ray_version="2.60.0")
    with pytest.raises(InvalidError, match="not a Kubernetes quantity"):
        render_manifests(app_with(), module="m", ray_version="2.60.0", volume_size="10 GB")


def test_cli_storage_options(tmp_path: Path):
    out = tmp_path / "out.yaml"
    args = ["--volume-size", "50Gi", "--storage-class", "nfs", "--state-size", "2Gi"]
    result = _render(str(EXAMPLES / "uploads.py"), "-o", str(out), *args)
    assert "Claims: rayweb-vol-uploads-files, rayweb-state-uploads." in result.stderr
    (volume, state), _service = _check_all(list(yaml.safe_load_all(out.read_text())))
    assert volume["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "nfs",
    }
    assert state["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_the_gateway_runs_on_the_heads_serve_port_or_on_every_node():
    app = load_app(str(EXAMPLES / "fastapi_endpoint.py"))
    manifest = render_rayservice(app, module="fastapi_endpoint", ray_version="2.60.0")
    config = _check(manifest)
    assert config["proxy_location"] == "HeadOnly"
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8001}  # behind HAProxy
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in head["containers"][0]["ports"]}
    for application in config["applications"]:
        assert application["args"]["gateway"] == {
            "host": "0.0.0.0",
            "port": ports["serve"],
            "serve_port": 8001,
        }
    every = render_rayservice(
        app, module="fastapi_endpoint", ray_version="2.60.0", gateway_nodes="every"
    )
    assert all(a["args"]["gateway"]["every_node"] for a in _check(every)["applications"])
    with pytest.raises(InvalidError, match="--gateway-nodes every"):
        render_rayservice(app, module="fastapi_endpoint", ray_version="2.60.0", gateway_nodes="all")


def test_a_domain_becomes_host_rules_for_the_serve_service(tmp_path: Path):
    out = tmp_path / "out.yaml"
    result = _render(str(EXAMPLES / "fastapi_endpoint.py"), "-o", str(out), "--domain", "Apps.Test")
    assert result.returncode == 0
    *documents, ingress = list(yaml.safe_load_all(out.read_text()))
    _claims, service = _check_all(documents)
    name = service["metadata"]["name"]
    assert (ingress["apiVersion"], ingress["kind"]) == ("networking.k8s.io/v1", "Ingress")
    backend = {"service": {"name": f"{name}-serve-svc", "port": {"number": 8000}}}
    assert ingress["spec"]["rules"] == [
        {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
        for host in ("*.apps.test", "apps.test")  # each endpoint's origin, and the path form
    ]
    for application in _check(service)["applications"]:  # the gateway routes on the host
        assert application["args"]["gateway"]["domain"] == "apps.test"
    app = load_app(str(EXAMPLES / "fastapi_endpoint.py"))
    routed = render_manifests(
        app, module="m", ray_version="2.60.0", domain="apps.test", http_route="infra/public"
    )[-1]
    assert (routed["kind"], routed["spec"]["hostnames"]) == (
        "HTTPRoute",
        ["*.apps.test", "apps.test"],
    )
    assert routed["spec"]["parentRefs"] == [{"name": "public", "namespace": "infra"}]
    assert routed["spec"]["rules"] == [
        {"backendRefs": [{"name": f"{name}-serve-svc", "port": 8000}]}
    ]
    classed = render_manifests(
        app, module="m", ray_version="2.60.0", domain="a.test", ingress_class="nginx"
    )
    assert classed[-1]["spec"]["ingressClassName"] == "nginx"
    # without a domain: no host rules, and the gateway keeps its default (a port-forward's)
    plain = render_manifests(app, module="m", ray_version="2.60.0")
    assert plain[-1]["kind"] == "RayService"
    assert "domain" not in _check(plain[-1])["applications"][0]["args"]["gateway"]
    for bad, fix in (
        ({"domain": "https://apps.test"}, "is not a DNS name. Suggestion: --domain apps"),
        ({"ingress_class": "nginx"}, "Suggestion: add --domain"),
        ({"domain": "a.test", "http_route": "a/b/c"}, "--http-route NAMESPACE/NAME"),
        ({"domain": "a.test", "http_route": "gw", "ingress_class": "x"}, "Suggestion: one of"),
    ):
        with pytest.raises(InvalidError, match=fix):
            render_manifests(app, module="m", ray_version="2.60.0", **bad)
