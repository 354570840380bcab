"""Misuse is rejected at decoration time with Modal's exception types and messages."""

from __future__ import annotations

import pytest

import rayweb
from rayweb.exception import DeprecationError, InvalidError

app = rayweb.App("unit")


def test_decorators_without_parentheses():
    for decorator in (rayweb.fastapi_endpoint, rayweb.asgi_app, rayweb.wsgi_app):
        with pytest.raises(TypeError, match="Did you forget parentheses"):

            @decorator
            def f():
                pass

    with pytest.raises(TypeError):
        rayweb.web_server()  # type: ignore[call-arg]


def test_web_decorator_above_app_function():
    with pytest.raises(
        InvalidError,
        match=r"Cannot stack `@rayweb.fastapi_endpoint` on top of `@app.function`. "
        r"Hint: swap the order of the decorators.",
    ):

        @rayweb.fastapi_endpoint()
        @app.function(serialized=True)
        def f():
            pass


def test_concurrent_above_app_cls():
    with pytest.raises(
        InvalidError, match=r"Cannot stack `@rayweb.concurrent` on top of `@app.cls\(\)`"
    ):

        @rayweb.concurrent(max_inputs=2)
        @app.cls()
        class C:
            pass


def test_asgi_app_with_parameters_and_async():
    with pytest.raises(
        InvalidError, match="Functions decorated by `@rayweb.asgi_app` can't have parameters."
    ):

        @rayweb.asgi_app()
        def f(x):
            pass

    with pytest.raises(
        InvalidError,
        match="The `@rayweb.wsgi_app` decorator can't be applied to an async function.",
    ):

        @rayweb.wsgi_app()
        async def g():
            pass


def test_asgi_app_method_self_is_allowed():
    class C:
        @rayweb.asgi_app()
        def web(self):
            pass

    assert C.__dict__["web"].params.web.kind == "asgi_app"


def test_web_endpoint_is_deprecated():
    with pytest.raises(DeprecationError, match="renamed to `@rayweb.fastapi_endpoint`"):
        rayweb.web_endpoint()


def test_concurrent_rules():
    with pytest.raises(
        InvalidError, match="`target_inputs` parameter cannot be greater than `max_inputs`."
    ):
        rayweb.concurrent(max_inputs=2, target_inputs=5)
    with pytest.raises(
        TypeError, match=r"`@rayweb.concurrent\(\)` missing required argument: `max_inputs`."
    ):

        @app.function(serialized=True)
        @rayweb.concurrent(target_inputs=3)
        @rayweb.fastapi_endpoint()
        def f():
            pass


def test_concurrent_either_side_of_the_web_decorator():
    @app.function(serialized=True)
    @rayweb.concurrent(max_inputs=4)
    @rayweb.fastapi_endpoint()
    def above():
        pass

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    @rayweb.concurrent(max_inputs=4)
    def below():
        pass

    assert above.concurrency == below.concurrency == rayweb.spec.ConcurrencySpec(4, None)


def test_min_greater_than_max_and_other_options():
    with pytest.raises(
        InvalidError, match=r"`min_containers` \(3\) cannot be greater than `max_containers` \(1\)"
    ):
        app.function(min_containers=3, max_containers=1)
    with pytest.raises(InvalidError, match="`min_containers` must be an int, not float"):
        app.function(min_containers=1.5)
    with pytest.raises(
        InvalidError, match=r"`scaledown_window` must be between 2 and 3600 \(inclusive\)"
    ):
        app.function(scaledown_window=1)
    with pytest.raises(InvalidError, match="The `timeout` parameter cannot be set to None"):
        app.function(timeout=None)


@pytest.mark.parametrize(
    ("kwarg", "message"),
    [
        ("keep_warm", "renamed to `min_containers`"),
        ("concurrency_limit", "renamed to `max_containers`"),
        ("container_idle_timeout", "renamed to `scaledown_window`"),
        ("allow_concurrent_inputs", "Use the '@rayweb.concurrent' decorator instead."),
    ],
)
def test_removed_arguments(kwarg, message):
    with pytest.raises(DeprecationError, match=message):
        app.function(**{kwarg: 1})


def test_custom_init_on_cls_and_concurrent_on_method_reported_together():
    with pytest.raises(InvalidError) as info:

        @app.cls()
        class Bad:
            def __init__(self):
                pass

            @rayweb.concurrent(max_inputs=2)
            @rayweb.fastapi_endpoint()
            def web(self):
                pass

    text = str(info.value)
    assert "cannot have a custom constructor (__init__) method. Use @rayweb.enter()" in text
    assert (
        "The `@rayweb.concurrent` decorator cannot be used on methods; decorate the class instead."
        in text
    )


def test_combinations():
    with pytest.raises(InvalidError, match="Cannot set `webhook_config` twice."):

        @rayweb.asgi_app()
        @rayweb.fastapi_endpoint()
        def f():
            pass

    with pytest.raises(
        InvalidError, match="Callable decorators cannot be combined with web interface decorators."
    ):

        @rayweb.method()
        @rayweb.fastapi_endpoint()
        def g(self):
            pass

    with pytest.raises(
        InvalidError, match="Interface decorators cannot be combined with lifecycle decorators."
    ):

        @rayweb.enter()
        @rayweb.fastapi_endpoint()
        def h(self):
            pass

    with pytest.raises(InvalidError, match="Cannot apply `@rayweb.fastapi_endpoint` to a class."):

        @rayweb.fastapi_endpoint()
        class K:
            pass


def test_generators_web_server_and_retries():
    with pytest.raises(InvalidError, match="Webhooks cannot be generators"):

        @rayweb.fastapi_endpoint()
        def gen():
            yield 1

    with pytest.raises(InvalidError, match=r"must be a local port, such as `@web_server\(8000\)`"):
        rayweb.web_server("8000")  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="must be positive"):
        rayweb.web_server(8000, startup_timeout=0)
    with pytest.raises(InvalidError, match="Web Functions do not support retries."):

        @app.function(retries=3, serialized=True)
        @rayweb.fastapi_endpoint()
        def r():
            pass

    with pytest.raises(
        InvalidError, match=r"custom_domains must be `Iterable\[str\]` but is `str` instead."
    ):
        rayweb.fastapi_endpoint(custom_domains="a.com")


def test_app_function_targets():
    with pytest.raises(TypeError, match="Please use `@app.cls` instead."):

        @app.function()
        class C:
            pass

    with pytest.raises(
        InvalidError, match="must apply to functions in global scope, unless `serialized=True`"
    ):

        @app.function()
        def local():
            pass

    with pytest.raises(TypeError, match="The @app.cls decorator must be used on a class."):
        app.cls()(lambda: None)


def test_class_parameters_are_checked():
    with pytest.raises(InvalidError, match="float is not a supported rayweb.parameter\\(\\) type"):

        @app.cls()
        class P:
            x: float = rayweb.parameter(default=1.0)

    @app.cls()
    class Q:
        name: str = rayweb.parameter(default="a")

        @rayweb.enter()
        def setup(self):
            self.ready = self.name + "!"

        @rayweb.method()
        def shout(self) -> str:
            return self.ready

    assert Q(name="b").shout.local() == "b!"
    assert Q().shout.local() == "a!"


def test_app_validation():
    with pytest.raises(InvalidError, match="Invalid value for `name`: Must be string."):
        rayweb.App(3)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidError, match="`secrets=` has to be a list or tuple of `rayweb.Secret` objects"
    ):
        rayweb.App("x", secrets=["nope"])  # type: ignore[list-item]
    with pytest.raises(InvalidError, match="`image=` has to be a `rayweb.Image` object"):
        rayweb.App("x", image="python:3.11")  # type: ignore[arg-type]


def test_local_calls_and_remote_on_web_functions():
    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert add.local(1) == 3
    with pytest.raises(
        InvalidError,
        match="A webhook function cannot be invoked for remote execution with `.remote`",
    ):
        add.remote(1)
    with pytest.raises(rayweb.exception.ExecutionError, match="has not been hydrated"):
        add.get_web_url()
    with pytest.raises(InvalidError, match=r"add.local\(...\)"):
        add(1)
