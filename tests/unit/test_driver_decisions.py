"""The driver's decisions, without a cluster: what a reload swaps or redeploys, what a failed
deploy rolls back, and what a pending replica is said to miss (from the resource plan)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import rayweb
from rayweb.compiler import (
    ResourcePlan,
    compile_app,
    compile_endpoint,
    compile_functions,
    deploy_timeout,
)
from rayweb.driver.deploy import removed_endpoints, rollback_plan
from rayweb.driver.dev import plan_reload
from rayweb.driver.status import _servers, registered_apps, starting_replicas, timeout_message
from rayweb.exception import InvalidError

app = rayweb.App("decide")


@app.function()
@rayweb.fastapi_endpoint()
def a() -> dict:
    return {}


@app.function(timeout=40, startup_timeout=90)
@rayweb.fastapi_endpoint()
def b() -> dict:
    return {}


@app.function(gpu="L40S", cpu=2)
@rayweb.web_server(8000)
def server() -> None:
    pass


def _dev() -> dict[str, object]:
    return {ep.name: ep for ep in compile_app(app, dev=True)}


def test_only_source_changes_are_swapped_in_place():
    old = _dev()
    eps = list(old.values())
    old_fp = {name: "v1" for name in old}
    names = [ep.name for ep in eps]
    a_name, b_name, server_name = names

    # a's source changed; b's options changed; the web_server's source changed; c is new.
    b_new = dataclasses.replace(
        old[b_name],
        deployment_options={**old[b_name].deployment_options, "max_ongoing_requests": 7},
    )
    added = dataclasses.replace(old[a_name], name="decide-c-dev")
    new_eps = [old[a_name], b_new, old[server_name], added]
    new_fp = {a_name: "v2", b_name: "v2", server_name: "v2", "decide-c-dev": "v1"}
    plan = plan_reload(old_fp, old, new_fp, new_eps)
    assert [ep.name for ep in plan.changed] == [a_name, b_name, server_name, "decide-c-dev"]
    assert [ep.name for ep in plan.swap] == [a_name]  # web_server code runs in its sidecar
    assert plan.added == ["decide-c-dev"]
    assert plan.removed == []

    # Nothing changed but an endpoint went away.
    plan = plan_reload(old_fp, old, {a_name: "v1"}, [old[a_name]])
    assert plan.changed == [] and plan.swap == [] and sorted(plan.removed) == [b_name, server_name]


def test_deploys_are_never_swapped():
    """`rayweb deploy` (dev=False) always starts new replicas."""
    old = {ep.name: ep for ep in compile_app(app)}
    plan = plan_reload(dict.fromkeys(old, "v1"), old, dict.fromkeys(old, "v2"), list(old.values()))
    assert len(plan.changed) == 3 and plan.swap == []


def test_rollback_restores_the_previous_versions_and_deletes_new_endpoints():
    current = compile_app(app)
    previous = {current[0].name: dataclasses.replace(current[0], tag="old-a")}
    plan = rollback_plan(current, previous)
    assert [ep.tag for ep in plan.restore] == ["old-a"]  # the last good version, not the new
    assert plan.delete == [current[1].name, current[2].name]
    assert rollback_plan(current, {}).restore == []
    gone = {"decide-gone": current[0], **previous}
    assert removed_endpoints(current, gone) == ["decide-gone"]


def test_deploy_timeout_is_the_longest_startup_timeout():
    eps = compile_app(app)
    assert deploy_timeout(eps) == 300.0  # a's and server's Modal default (timeout=300)
    assert deploy_timeout([eps[1]]) == 90.0  # startup_timeout wins over timeout


def test_an_unplaceable_web_server_names_the_gpu_it_lacks():
    ep = compile_endpoint(server)
    assert ep.plan.replica == {"CPU": 0.05}
    assert ep.plan.total == {
        "CPU": 2.05,
        "GPU": 1,
        "accelerator_type:L40S": 0.001,
    }
    have = {"CPU": 2.0, "memory": 8 * 2**30, "object_store_memory": 2**29, "node:127.0.0.1": 1}
    message = timeout_message([ep], {ep.name: "DEPLOYING"}, 5, have)
    assert "missing: CPU, GPU, accelerator_type:L40S" in message
    assert "'server'" not in message and "server (decide-server)" in message
    plenty = {**have, "CPU": 8.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}
    assert "(missing:" not in timeout_message([ep], {ep.name: "DEPLOYING"}, 5, plenty)


def test_plan_missing_and_gpu_facts():
    plan = ResourcePlan({"CPU": 0.1, "GPU": 2, "accelerator_type:H100": 0.001})
    assert plan.gpus == 2 and plan.accelerator == "H100" and plan.cpus == 0.1
    assert plan.missing({"CPU": 4, "GPU": 1}) == ["GPU", "accelerator_type:H100"]


def test_unsupported_image_steps_are_named_in_a_warning():
    image_app = rayweb.App("img", image=rayweb.Image.debian_slim().apt_install("ffmpeg"))

    @image_app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def f() -> dict:
        return {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile_app(image_app)
    messages = [str(w.message) for w in caught]
    assert any("apt_install('ffmpeg')" in m and "node image" in m for m in messages), messages


def test_non_volumes_and_environments_are_refused_not_ignored():
    with pytest.raises(InvalidError, match="is not usable as a volume"):
        rayweb.App("v", volumes={"/data": object()})
    other = rayweb.App("v2")
    with pytest.raises(InvalidError, match="is not usable as a volume"):
        other.function(volumes={"/data": object()})
    assert rayweb.App("v3", volumes={}).name == "v3"  # empty is fine
    with pytest.raises(InvalidError, match="no environments"):
        rayweb.Secret.from_name("s", environment_name="main")


def test_a_new_endpoint_is_up_when_each_replica_it_starts_has_registered():
    """rayweb.serve's early look at the gateway's table: every replica Serve starts for a
    new endpoint (one even when it scales to zero; min_containers when more) registered
    since the deploy began, a class pool's web methods counted by their pool."""
    pooled = rayweb.App("decide-pool")

    @pooled.cls(min_containers=3)
    class Model:
        @rayweb.fastapi_endpoint()
        def web(self) -> str:
            return ""

    (scaled_to_zero,) = [ep for ep in compile_app(app) if ep.tag == "a"]
    assert starting_replicas(scaled_to_zero) == 1
    (pool,) = compile_functions(pooled, pool=True)  # the class's pool serves its web methods
    assert starting_replicas(pool) == 3
    table = {
        "a-label": {"servers": {"r1": {}}, "serve_app": None},
        "Model.web-label": {"servers": {"p1": {}, "p2": {}}, "serve_app": "pool-app"},
        "Model.other-label": {"servers": {"p3": {}}, "serve_app": "pool-app"},
    }
    now = _servers(table)
    assert now == {"a-label": {"r1"}, "pool-app": {"p1", "p2", "p3"}}
    new = {"a-label": 1, "pool-app": 3}
    assert registered_apps(new, {}, now) == {"a-label", "pool-app"}
    # a replica that was registered before the deploy (a stale one) does not count
    assert registered_apps(new, {"pool-app": {"p1"}}, now) == {"a-label"}
    assert registered_apps(new, {}, {"pool-app": {"p1", "p2"}}) == set()
