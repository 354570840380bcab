"""``@app.server`` without a cluster: Modal's decoration checks and messages, and what the
compiler makes of a Server (a sidecar endpoint, autoscaling only with target_concurrency,
proxy auth by default, 429 above max_concurrency, the exit grace period)."""

from __future__ import annotations

import pytest

import rayweb
from rayweb.compiler import compile_app, compile_endpoint
from rayweb.compiler.core import SERVER_MAX_INPUTS
from rayweb.exception import ExecutionError, InvalidError

app = rayweb.App("srv")


@app.server(port=9000)
class Plain:
    @rayweb.enter()
    def start(self):
        pass

    @rayweb.exit()
    def stop(self):
        pass


@app.server(
    port=8080,
    gpu="L40S",
    target_concurrency=2.345,
    max_concurrency=8,
    min_containers=1,
    max_containers=5,
    scaleup_window=3,
    exit_grace_period=12,
    unauthenticated=True,
    name="vllm",
    routing_region="eu-west",
)
class Big:
    @rayweb.enter()
    def start(self):
        pass


def test_a_server_compiles_to_a_sidecar_endpoint_with_auth_and_a_fixed_pool():
    ep = compile_endpoint(app.registered_servers["Plain"].function)
    assert ep.name == "srv-plain" and ep.route_prefix == "/srv-plain"
    payload = ep.payload
    assert payload.web.kind == "server" and payload.web.port == 9000
    assert payload.web.startup_timeout == 30  # Modal's default
    assert payload.auth_headers == ("Modal-Key", "Modal-Secret")  # proxy auth: on by default
    assert payload.is_cls and payload.enter_methods == ("start",)
    assert payload.exit_methods == ("stop",) and payload.code.attr is None
    assert payload.full_status is None and payload.max_inputs == SERVER_MAX_INPUTS
    assert ep.plan.sidecar  # the server runs next to the replica, which only proxies
    scaling = ep.deployment_options["autoscaling_config"]
    # no target_concurrency: no autoscaling; one container is started for a request
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (0, 1)
    assert payload.drain_s == 1.0 and not payload.hot_swap


def test_server_options_map_to_autoscaling_limits_and_resources():
    ep = compile_endpoint(app.registered_servers["vllm"].function)
    assert ep.name == "srv-vllm"
    options = ep.deployment_options
    scaling = options["autoscaling_config"]
    assert scaling["target_ongoing_requests"] == 2.35  # Modal rounds to hundredths
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 5)
    assert scaling["upscale_delay_s"] == 3.0
    assert options["max_ongoing_requests"] == 8
    assert ep.payload.full_status == 429  # above max_concurrency
    assert ep.payload.auth_headers is None  # unauthenticated=True
    assert ep.payload.drain_s == 12.0 and options["graceful_shutdown_timeout_s"] > 12
    assert ep.plan.sidecar["GPU"] == 1 and ep.plan.accelerator == "L40S"
    assert {e.name for e in compile_app(app)} == {"srv-plain", "srv-vllm"}
    assert app.web_endpoints[-1] is app.registered_servers["vllm"].function


def test_a_server_is_not_callable_and_has_no_url_until_served():
    with pytest.raises(TypeError, match="not callable"):
        app.registered_servers["Plain"]()
    with pytest.raises(rayweb.exception.ExecutionError, match="no URL until its app is served"):
        app.registered_servers["Plain"].get_url()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "Port must be a positive integer between 1 and 65535."),
        ({"port": "8000"}, "Port must be a positive integer between 1 and 65535."),
        ({"startup_timeout": 0}, "The `startup_timeout` argument must be positive."),
        ({"exit_grace_period": -1}, "The `exit_grace_period` argument must be non-negative."),
        ({"exit_grace_period": 3601}, "must not exceed 3600 seconds (1 hour)."),
        ({"routing_region": ""}, "The `routing_region` argument must be passed."),
        ({"target_concurrency": "2"}, "must be a number, not str."),
        ({"target_concurrency": -1}, "The `target_concurrency` argument must be non-negative."),
        ({"max_concurrency": 1.5}, "The `max_concurrency` argument must be an integer."),
        ({"max_concurrency": True}, "must be a number, not bool."),
        (
            {"target_concurrency": 4, "max_concurrency": 2},
            "The `target_concurrency` argument cannot be greater than `max_concurrency`.",
        ),
        ({"scaleup_window": 0}, "`scaleup_window` must be > 0"),
    ],
)
def test_bad_arguments_get_modals_messages(kwargs, message):
    with pytest.raises(InvalidError) as info:
        rayweb.App("bad").server(**kwargs)
    assert message in str(info.value)


def test_max_concurrency_zero_means_no_limit_with_any_target():
    rayweb.App("ok").server(target_concurrency=4, max_concurrency=0)  # Modal accepts it


def _class_problem(make) -> str:
    with pytest.raises((InvalidError, TypeError)) as info:
        make()
    return str(info.value)


def test_bad_classes_get_modals_messages():
    server = rayweb.App("bad").server()

    class NoEnter:
        pass

    assert "must have an @rayweb.enter()" in _class_problem(lambda: server(NoEnter))

    class WithMethod:
        @rayweb.enter()
        def start(self):
            pass

        @rayweb.method()
        def f(self):
            pass

    assert "Servers only expose HTTP endpoints." in _class_problem(lambda: server(WithMethod))

    class WithParameter:
        size: int = rayweb.parameter(default=1)

        @rayweb.enter()
        def start(self):
            pass

    assert "cannot use rayweb.parameter()" in _class_problem(lambda: server(WithParameter))

    class WithInit:
        def __init__(self):
            pass

        @rayweb.enter()
        def start(self):
            pass

    assert "cannot have a custom __init__ method" in _class_problem(lambda: server(WithInit))

    class Snapped:
        @rayweb.enter(snap=True)
        def start(self):
            pass

    assert "enable_memory_snapshot=True" in _class_problem(lambda: server(Snapped))

    class Concurrent:
        @rayweb.enter()
        def start(self):
            pass

    assert "Please use `target_concurrency`" in _class_problem(
        lambda: server(rayweb.concurrent(max_inputs=2)(Concurrent))
    )
    assert "must be used on a class" in _class_problem(lambda: server(lambda: None))


def test_regions_are_accepted_and_said_to_have_no_effect():
    with pytest.warns(UserWarning, match="compute_region, routing_region has no effect"):
        rayweb.App("regions").server(routing_region="eu-west", compute_region="eu-west")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        rayweb.App("regions").server(no_such_option=1)


def test_sessioned_marks_a_server_and_is_refused_elsewhere():
    app = rayweb.App("sessioned-checks")

    @app.server(port=8000)
    @rayweb.sessioned()
    class Room:
        @rayweb.enter()
        def start(self):
            pass

    assert Room.function.web.sessioned
    with pytest.raises(InvalidError, match="can only be used with `@app.server"):

        @app.cls()
        @rayweb.sessioned()
        class NotAServer:
            pass

    with pytest.raises(InvalidError, match="can only be applied to a Server class"):

        @rayweb.sessioned()
        def f():
            pass

    @app.server(port=8001, name="Plain")
    class Plain:
        @rayweb.enter()
        def start(self):
            pass

    assert not Plain.function.web.sessioned
    with pytest.raises(InvalidError, match="`idle_timeout` must be a positive integer"):
        Room.sessions.start(idle_timeout=0)
    with pytest.raises(ExecutionError, match="has no URL until its app is served"):
        Plain.sessions.start()  # not served: no URL, as get_url() says
