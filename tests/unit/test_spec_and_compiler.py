"""Labels, GPU parsing and the spec -> Serve options mapping (DESIGN.md section 4), no cluster."""

from __future__ import annotations

import pytest

import rayweb
from rayweb.compiler import (
    choose_gpu,
    compile_app,
    compile_endpoint,
    deployment_options,
    endpoint_spec,
)
from rayweb.compiler.core import SCALEDOWN_LAG_INTERVALS
from rayweb.exception import InvalidError
from rayweb.spec import GpuSpec, make_label, parse_gpu

app = rayweb.App("My_Service")


@app.function()
@rayweb.fastapi_endpoint()
def get_item():
    return {}


@app.function(
    gpu="H100:2",
    cpu=2,
    memory=1024,
    min_containers=1,
    max_containers=4,
    buffer_containers=1,
    scaledown_window=30,
    secrets=[rayweb.Secret.from_dict({"TOKEN": "t"})],
    env={"MODE": "x", "DROPPED": None},
)
@rayweb.concurrent(max_inputs=8, target_inputs=4)
@rayweb.asgi_app(label="big-one")
def big():
    pass


@app.cls(gpu="any")
class Model:
    @rayweb.fastapi_endpoint(method="post")
    def predict_now(self):
        pass


def test_labels_follow_modals_rule():
    assert get_item.label == "my-service-get-item"
    assert big.label == "big-one"
    assert Model.predict_now.label == "my-service-model-predict-now"
    assert make_label(None, "f") == "f"
    long = make_label("a" * 50, "b" * 50)
    assert len(long) == 63 and long != make_label("a" * 50, "c" * 50)
    with pytest.raises(InvalidError, match="Invalid label"):
        rayweb.fastapi_endpoint(label="Bad_Label")


def test_gpu_parsing():
    assert parse_gpu("L40S") == (GpuSpec("L40S", 1),)
    assert parse_gpu("h100:2") == (GpuSpec("H100", 2),)
    assert parse_gpu("any") == (GpuSpec(None, 1),)
    assert parse_gpu(["A100-80GB", "a10g"]) == (GpuSpec("A100-80G", 1), GpuSpec("A10G", 1))
    with pytest.raises(InvalidError, match="Unknown GPU type 'Z9'"):
        parse_gpu("Z9")
    with pytest.raises(InvalidError, match="positive integer"):
        parse_gpu("H100:0")


def test_fallback_list_takes_the_first_available():
    choices = parse_gpu(["H100", "L40S"])
    assert choose_gpu(choices, {"L40S"}) == GpuSpec("L40S", 1)
    assert choose_gpu(choices, set()) == GpuSpec("H100", 1)  # an autoscaler may add it
    assert choose_gpu(choices, None) == GpuSpec("H100", 1)


def test_defaults_are_modal_like_and_fractional():
    opts = deployment_options(endpoint_spec(get_item))
    assert opts["max_ongoing_requests"] == 1  # no @concurrent: one at a time
    assert opts["ray_actor_options"] == {"num_cpus": 0.1}
    scaling = opts["autoscaling_config"]
    assert scaling["min_replicas"] == 0  # scale to zero
    assert scaling["initial_replicas"] == 1  # but deploy starts one, so failures show
    assert scaling["target_ongoing_requests"] == 1
    # Modal's 60 s scaledown window: Serve's look-back, its delay and its figures' lag
    late = scaling["metrics_interval_s"] * SCALEDOWN_LAG_INTERVALS
    assert scaling["look_back_period_s"] + scaling["downscale_delay_s"] + late == 60
    assert opts["max_surge_percent"] == 100


def test_full_mapping():
    spec = endpoint_spec(big)
    opts = deployment_options(spec)
    actor = opts["ray_actor_options"]
    assert actor["num_gpus"] == 2 and actor["accelerator_type"] == "H100"
    assert actor["num_cpus"] == 2.0 and actor["memory"] == 1024 * 1024 * 1024
    assert opts["max_ongoing_requests"] == 8
    scaling = opts["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]) == (
        1,
        4,
        1,
    )
    assert scaling["target_ongoing_requests"] == 4
    late = scaling["metrics_interval_s"] * SCALEDOWN_LAG_INTERVALS
    assert scaling["look_back_period_s"] + scaling["downscale_delay_s"] + late == 30
    assert scaling["policy"]["policy_kwargs"] == {"buffer": 1}
    values = {k: v for ref in spec.secrets for k, v in (ref.values or {}).items()}
    assert values == {"TOKEN": "t", "MODE": "x"}
    ep = compile_endpoint(big)
    assert [name for name, _ in ep.payload.secrets] == [ref.name for ref in spec.secrets]
    assert all(name.startswith("_inline-") for name, _ in ep.payload.secrets)


def test_any_gpu_and_method_on_cls():
    ep = compile_endpoint(Model.predict_now, dev=True)
    assert ep.name == "my-service-model-predict-now-dev" and ep.route_prefix == "/" + ep.name
    assert ep.deployment_options["ray_actor_options"]["num_gpus"] == 1
    assert "accelerator_type" not in ep.deployment_options["ray_actor_options"]
    assert ep.payload.is_cls and ep.payload.code.attr == "predict_now"
    assert ep.payload.web.method == "POST"


def test_module_functions_are_shipped_by_reference():
    ep = compile_endpoint(get_item)
    assert ep.payload.code.module == __name__ and ep.payload.code.pickled is None
    assert ep.payload.code.qualname == "get_item"


def test_compiled_options_are_valid_serve_options():
    from ray import serve
    from ray.serve.config import AutoscalingConfig

    for ep in compile_app(app):
        AutoscalingConfig(**ep.deployment_options["autoscaling_config"])
        from rayweb.replica.deployment import RaywebReplica

        serve.deployment(RaywebReplica).options(**ep.deployment_options).bind(ep.payload)


def test_an_app_without_web_endpoints_is_an_error():
    with pytest.raises(InvalidError, match="has no web endpoints"):
        compile_app(rayweb.App("empty"))


def test_buffer_policy():
    from types import SimpleNamespace

    from rayweb.services.autoscaling import BufferedPolicy

    config = SimpleNamespace(get_target_ongoing_requests=lambda: 4)
    ctx = SimpleNamespace(
        total_num_requests=9,
        config=config,
        capacity_adjusted_min_replicas=0,
        aggregated_metrics={},
        running_replicas=[],
        current_num_replicas=0,
    )
    assert BufferedPolicy(buffer=2)(ctx)[0] == 3 + 2
    assert (
        BufferedPolicy(buffer=2)(SimpleNamespace(**{**vars(ctx), "total_num_requests": 0}))[0] == 0
    )
    # Requests on the direct (gateway) path arrive as a per-replica custom metric.
    direct = {"rayweb_direct_ongoing": {"replica-a": 6.0, "replica-b": 5.0}}
    only_direct = SimpleNamespace(**{**vars(ctx), "total_num_requests": 0})
    only_direct.aggregated_metrics = direct
    assert BufferedPolicy()(only_direct)[0] == 3  # ceil(11 / 4)
    both = SimpleNamespace(**{**vars(ctx), "aggregated_metrics": direct})
    assert BufferedPolicy()(both)[0] == 5  # ceil((9 + 11) / 4)
    # An idle endpoint scales to zero once its replicas have reported, not before.
    idle = {"rayweb_direct_ongoing": {"replica-a": 0.0}}
    fresh = SimpleNamespace(**{**vars(ctx), "total_num_requests": 0, "aggregated_metrics": idle})
    fresh.running_replicas, fresh.current_num_replicas = ["replica-a", "replica-new"], 2
    assert BufferedPolicy()(fresh)[0] == 2  # replica-new has not sent a sample yet
    fresh.running_replicas = ["replica-a"]
    assert BufferedPolicy()(fresh)[0] == 0


def test_every_deployment_uses_raywebs_policy():
    """Even without buffer_containers: Serve's default policy would not see the direct path."""
    app = rayweb.App("policy")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def f() -> dict:
        return {}

    ep = compile_endpoint(f)
    policy = ep.deployment_options["autoscaling_config"]["policy"]
    assert policy["policy_function"] == "rayweb.services.autoscaling:BufferedPolicy"
    assert policy["policy_kwargs"] == {"buffer": 0}
    assert ep.payload.drain_s == ep.deployment_options["graceful_shutdown_timeout_s"] - 3


def test_the_scaledown_window_is_the_idle_time_serve_waits():
    """Serve averages over its look-back before it counts the delay, on figures that leave
    the average 1.5 push intervals late on average: the three make the window."""
    from ray.serve.config import AutoscalingConfig

    from rayweb.compiler.core import scaledown_timing

    for window in (2, 10, 60, 300, 3600):
        timing = scaledown_timing(float(window))
        late = timing["metrics_interval_s"] * SCALEDOWN_LAG_INTERVALS
        assert timing["look_back_period_s"] + timing["downscale_delay_s"] + late == window
        assert timing["metrics_interval_s"] < timing["look_back_period_s"] <= 30
        assert timing["metrics_interval_s"] <= 2  # the spread around the window: one interval
        AutoscalingConfig(min_replicas=0, max_replicas=1, **timing)  # Serve takes it
    assert scaledown_timing(2.0) == {
        "look_back_period_s": 1.0,
        "downscale_delay_s": 0.25,
        "metrics_interval_s": 0.5,
    }
