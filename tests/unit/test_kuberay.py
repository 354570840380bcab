"""Generated RayService manifests: valid against KubeRay's CRD (strictly), Serve's schema,
free of secret values, and the samples in cluster/kuberay/ match what rayweb renders."""

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
from rayweb.driver.kuberay import render_rayservice, to_yaml
from rayweb.exception import InvalidError
from tests.conftest import EXAMPLES, ROOT

CRD = ROOT.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
SAMPLES = {
    "fastapi_endpoint": "fastapi_endpoint.py",
    "secret_bearer": "secret_bearer.py",
    "web_server_aiohttp": "web_server_aiohttp.py",
    "gpu_app": "resources.py::gpu_app",
    "backend_functions": "backend_functions.py",
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


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_samples_are_valid_and_in_sync(sample):
    ref = SAMPLES[sample]
    out = subprocess.run(
        [sys.executable, "-m", "rayweb.cli", "deploy", str(EXAMPLES / ref), "--kuberay"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    _check(yaml.safe_load(out))
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
