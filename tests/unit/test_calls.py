"""Function calls without a cluster: what compiles to which Serve options, the checks a call
makes before it reaches Ray, Modal's Retries, and the bounds of the spawned-results store."""

from __future__ import annotations

import asyncio
import time

import pytest

import rayweb
from rayweb.compiler import compile_functions
from rayweb.exception import ExecutionError, InvalidError, NotFoundError
from rayweb.services.results import ResultsActor, _Call
from rayweb.spec import FunctionPayload, Retries, function_app_name, parse_retries

app = rayweb.App("unit-calls")


@app.function(serialized=True, gpu="L40S", cpu=2, min_containers=1, timeout=30, retries=2)
@rayweb.concurrent(max_inputs=8)
def infer(x: int) -> int:
    return x


@app.function(serialized=True)
def tokens(n: int):
    yield from range(n)


@app.function(serialized=True)
@rayweb.fastapi_endpoint()
def web() -> dict:
    return {}


@app.cls(serialized=True)
class Model:
    size: int = rayweb.parameter(default=1)

    @rayweb.enter()
    def load(self) -> None:
        self.ready = True

    @rayweb.method()
    def predict(self, x: int) -> int:
        return x * self.size


def test_non_web_functions_and_classes_compile_to_routeless_serve_apps():
    compiled = {ep.tag: ep for ep in compile_functions(app, dev=True)}
    assert set(compiled) == {"infer", "tokens", "Model"}  # not the web endpoint
    infer_ep = compiled["infer"]
    assert (
        infer_ep.name
        == "rayweb-fn-unit-calls-infer-dev"
        == function_app_name("unit-calls", "infer", dev=True)
    )
    assert infer_ep.route_prefix is None
    options = infer_ep.deployment_options
    assert options["max_ongoing_requests"] == 8
    assert options["ray_actor_options"]["num_gpus"] == 1
    assert options["ray_actor_options"]["accelerator_type"] == "L40S"
    assert options["autoscaling_config"]["min_replicas"] == 1
    payload = infer_ep.payload
    assert isinstance(payload, FunctionPayload)
    assert payload.timeout == 30 and payload.dev and not payload.is_cls
    model = compiled["Model"].payload
    assert isinstance(model, FunctionPayload)
    assert model.is_cls and model.enter_methods == ("load",) and model.code.attr is None
    assert infer.options.retries == Retries(2, backoff_coefficient=1.0, initial_delay=1.0)


def test_call_forms_check_what_they_can_before_any_cluster():
    with pytest.raises(InvalidError, match="webhook function cannot be invoked.*`.remote`"):
        web.remote()
    with pytest.raises(InvalidError, match="webhook function cannot be invoked.*`.spawn`"):
        web.spawn()
    with pytest.raises(InvalidError, match="generator function cannot be called with `.remote"):
        tokens.remote(3)
    with pytest.raises(InvalidError, match="generator function cannot be called with `.map"):
        tokens.map([1])
    with pytest.raises(InvalidError, match="non-generator function cannot be called"):
        infer.remote_gen(1)
    assert tokens.is_generator and not infer.is_generator
    assert list(tokens.local(3)) == [0, 1, 2]
    with pytest.raises(AttributeError):
        Model(size=2).predict.not_a_call_form  # noqa: B018


def test_lookups_by_name_are_lazy_and_say_what_is_missing():
    # Passes with or without a Ray (the full suite has started one by now): either way the app
    # is not there, and the first call is the one that says so.
    square = rayweb.Function.from_name("no-such-app", "square")  # no cluster needed yet
    assert square.is_generator is None  # unknown until the first call
    with pytest.raises(NotFoundError, match="Lookup failed for Function 'square' from the 'no-"):
        square.remote(2)
    model = rayweb.Cls.from_name("no-such-app", "Model")
    bound = model(size=3).predict  # any method and parameters: its replicas will check
    with pytest.raises(NotFoundError, match="Lookup failed for Cls 'Model'"):
        bound.remote(1)
    with pytest.raises(ExecutionError, match="looked up by name"):
        bound.local(1)


def test_retries_follow_modal_s_rules():
    assert parse_retries(3) == Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=1.0)
    policy = Retries(max_retries=4, backoff_coefficient=2.0, initial_delay=0.5, max_delay=3)
    assert [policy.delay(k) for k in range(4)] == [0.5, 1.0, 2.0, 3.0]
    with pytest.raises(InvalidError, match="between 0 and 10"):
        Retries(max_retries=11)
    with pytest.raises(InvalidError, match="integer or instance of modal.Retries"):
        parse_retries("3")
    with pytest.raises(InvalidError, match="Web Functions do not support retries"):

        @app.function(serialized=True, retries=1)
        @rayweb.fastapi_endpoint()
        def retried_web() -> None: ...


def test_the_results_store_is_bounded_by_count_bytes_and_age():
    async def main() -> ResultsActor:
        store = ResultsActor()
        store.max_calls, store.max_bytes, store.retention_s = 3, 1000, 60.0
        now = time.time()
        for index in range(5):
            call = store.calls[f"fc-{index}"] = _Call(now - 10 + index, now - 10 + index)
            call.outcome = b"x" * 100
            store.bytes += 100
            call.done.set()
        running = store.calls["fc-running"] = _Call(now - 100)  # older, but never evicted
        store._evict()
        # over the count: the three oldest finished go, the running one stays
        assert list(store.calls) == ["fc-3", "fc-4", "fc-running"]
        assert store.bytes == 200
        assert await store.get("fc-0", 0) == ("expired", None)
        assert await store.get("fc-running", 0.01) == ("pending", None)
        assert (await store.get("fc-4", 0))[0] == "done"
        # too big in bytes: the oldest finished results go first
        store.max_calls, store.max_bytes = 100, 150
        store._evict()
        assert [cid for cid in store.calls if cid != "fc-running"] == ["fc-4"]
        # too old
        store.calls["fc-4"].finished = now - 120
        store._evict()
        assert list(store.calls) == ["fc-running"]
        running.done.set()
        return store

    asyncio.run(main())


def test_batched_follows_modal_s_rules():
    from rayweb.replica.batching import bind_input

    batching = rayweb.App("unit-batched")

    @batching.function(serialized=True)
    @rayweb.batched(max_batch_size=8, wait_ms=500)
    def lengths(texts: list[str], extra: list[int]) -> list[int]:
        return [len(t) + e for t, e in zip(texts, extra, strict=True)]

    (compiled,) = compile_functions(batching)
    options = compiled.deployment_options
    # one input slot takes a whole batch: Serve lets 8 wait in the replica, and scales on it
    assert options["max_ongoing_requests"] == 8
    assert options["autoscaling_config"]["target_ongoing_requests"] == 8
    assert compiled.payload.batching == (8, 500) and compiled.payload.max_inputs == 1
    assert lengths.local(["ab"], [1]) == [3]  # .local() takes the lists, as on Modal

    with pytest.raises(InvalidError, match="batched function gen cannot return generators"):

        @batching.function(serialized=True)
        @rayweb.batched(max_batch_size=2, wait_ms=0)
        def gen(xs: list[int]):
            yield xs

    with pytest.raises(InvalidError, match="batched function g does not accept default"):

        @batching.function(serialized=True)
        @rayweb.batched(max_batch_size=2, wait_ms=0)
        def g(xs: list[int] = []) -> list[int]:  # noqa: B006
            return xs

    with pytest.raises(InvalidError, match="Callable decorators cannot be combined with web"):
        rayweb.batched(max_batch_size=2, wait_ms=0)(rayweb.fastapi_endpoint()(lambda: None))
    with pytest.raises(InvalidError, match="cannot have other rayweb methods"):

        @batching.cls(serialized=True)
        class Mixed:
            @rayweb.method()
            def other(self) -> None: ...

            @rayweb.batched(max_batch_size=2, wait_ms=0)
            def many(self, xs: list[int]) -> list[int]:
                return xs

    with pytest.raises(InvalidError, match="can only have one batched function"):

        @batching.cls(serialized=True)
        class Twice:
            @rayweb.batched(max_batch_size=2, wait_ms=0)
            def one(self, xs: list[int]) -> list[int]:
                return xs

            @rayweb.batched(max_batch_size=2, wait_ms=0)
            def two(self, xs: list[int]) -> list[int]:
                return xs

    # each input is checked before it joins a batch, with Modal's messages
    names = ["texts", "extra"]
    assert bind_input(names, "lengths", ("a",), {"extra": 1}) == {"texts": "a", "extra": 1}
    with pytest.raises(InvalidError, match="takes 2 positional arguments, but one invocation"):
        bind_input(names, "lengths", ("a",), {})
    with pytest.raises(InvalidError, match="unexpected keyword argument other"):
        bind_input(names, "lengths", ("a",), {"other": 1})
    with pytest.raises(InvalidError, match="multiple values for argument texts"):
        bind_input(names, "lengths", ("a",), {"texts": 1})


def test_class_variants_merge_options_and_name_their_own_pool():
    from rayweb.compiler import compile_function
    from rayweb.compiler.variants import variant_app_name, variants_of

    variant = Model.with_options(cpu=0.5, max_containers=3).with_concurrency(max_inputs=4)
    assert Model.variant_key is None and Model.options.resources.cpu is None  # base untouched
    assert variant.options.resources.cpu == 0.5 and variant.options.scaling.max_containers == 3
    assert variant.functions["predict"].cls is variant and variant.base is Model
    # The same overrides in another order name the same pool; other values another one.
    same = Model.with_concurrency(max_inputs=4).with_options(max_containers=3, cpu=0.5)
    assert same.variant_key == variant.variant_key
    assert Model.with_options(cpu=0.25).variant_key != variant.variant_key
    compiled = compile_function(variant, name=variant_app_name("rayweb-fn-x", "k"))
    assert compiled.name == compiled.payload.label == "rayweb-fn-x~k"
    assert compiled.deployment_options["max_ongoing_requests"] == 4
    assert compiled.deployment_options["ray_actor_options"]["num_cpus"] == 0.5
    assert compiled.deployment_options["autoscaling_config"]["max_replicas"] == 3
    apps = ["rayweb-fn-x", "rayweb-fn-x~k", "rayweb-fn-x-y~k", "rayweb-fn-xy"]
    assert variants_of(["rayweb-fn-x"], apps) == ["rayweb-fn-x~k"]
    # A class looked up by name has no options here: the overrides are kept for its replicas.
    looked = rayweb.Cls.from_name("other-app", "Model").with_options(gpu="A100")
    assert looked.overrides == {"options": {"gpu": "A100"}} and looked.variant_key
    warm = rayweb.App("unit-variants").cls(serialized=True, min_containers=2)(type("Warm", (), {}))
    with pytest.raises(InvalidError, match="cannot be greater than `max_containers` \\(1\\)"):
        warm.with_options(max_containers=1)  # merged with the class's own min_containers
