"""Class variants on the real cluster (examples/model_variants.py): ``Cls.with_options``,
``with_concurrency`` and ``with_batching`` from the driver, from a web endpoint and through
``Cls.from_name``; each variant runs in a Serve application of its own, with the new options."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ray import serve

import rayweb
from rayweb.exception import FunctionTimeoutError, InvalidError
from tests.integration.conftest import TEST_PORT, example_app

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def variants(ray_cluster):
    app = example_app("model_variants.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    try:
        yield app, handle
    finally:
        handle.stop()
    left = [name for name in serve.status().applications if name.startswith("rayweb-fn-variants")]
    assert left == []  # stopping the app deleted its variants too


def _apps() -> set[str]:
    return set(serve.status().applications)


def test_with_options_runs_the_class_in_its_own_pool_with_the_new_options(variants):
    app, _ = variants
    Model = app.registered_classes["Model"]
    base = Model().describe.remote()
    assert base["cpu"] == pytest.approx(0.1)
    before = _apps()
    bigger = Model.with_options(cpu=0.25, timeout=2)
    got = bigger(size=3).describe.remote()
    assert got["cpu"] == pytest.approx(0.25) and got["size"] == 3
    assert got["pid"] != base["pid"]  # another container pool
    (new,) = _apps() - before
    assert new.startswith("rayweb-fn-variants-model~")
    # The same options name the same variant: no second pool; the base is untouched.
    again = Model.with_options(timeout=2, cpu=0.25)(size=3).describe.remote()
    assert again["pid"] == got["pid"] and _apps() - before == {new}
    assert Model().describe.remote()["pid"] == base["pid"]
    # The variant's timeout (2 s) applies to it, not to the base (60 s).
    with pytest.raises(FunctionTimeoutError, match="timed out after 2 seconds"):
        bigger().slow.remote(4)
    assert Model().slow.remote(2.5) == 2.5


def test_each_parameter_set_is_a_pool_of_its_own(variants):
    app, _ = variants
    Model = app.registered_classes["Model"]
    base = Model().describe.remote()
    before = _apps()
    assert Model(size=1).describe.remote()["pid"] == base["pid"]  # the defaults: the class's
    assert _apps() == before
    two, five = Model(size=2).describe.remote(), Model(size=5).describe.remote()
    assert (two["size"], five["size"]) == (2, 5)
    assert len({base["pid"], two["pid"], five["pid"]}) == 3
    assert len(_apps() - before) == 2
    # Each pool made its instance when its container started (its @enter ran before the call).
    assert two["entered_before_call"] and five["entered_before_call"]
    assert Model(size=2).describe.remote()["pid"] == two["pid"]


def test_with_concurrency_lets_one_container_take_more_inputs(variants):
    app, _ = variants
    Model = app.registered_classes["Model"]

    async def peak(cls) -> int:
        calls = [cls().describe.remote.aio(nap=0.6) for _ in range(4)]
        return max(r["peak"] for r in await asyncio.gather(*calls))

    assert asyncio.run(peak(Model)) == 1  # max_inputs=1, max_containers=1
    assert asyncio.run(peak(Model.with_concurrency(max_inputs=4))) > 1


def test_with_batching_changes_the_batch_limits(variants):
    app, _ = variants
    Embedder = app.registered_classes["Embedder"]
    texts = [f"text {i}" for i in range(8)]
    base = list(Embedder().embed.map(texts))
    assert [r["length"] for r in base] == [len(t) for t in texts]
    assert max(r["batch"] for r in base) <= 2
    wider = list(Embedder.with_batching(max_batch_size=8, wait_ms=500)().embed.map(texts))
    assert max(r["batch"] for r in wider) > 2


def test_a_web_endpoint_and_a_looked_up_class_use_variants_too(variants):
    _, handle = variants
    url = handle.urls["api"]
    base = httpx.get(url + "/describe", timeout=120).json()
    got = httpx.get(url + "/describe", params={"cpu": 0.15}, timeout=120).json()
    assert base["cpu"] == pytest.approx(0.1) and got["cpu"] == pytest.approx(0.15)
    # From a process without the code: the class's replicas start the variant.
    Looked = rayweb.Cls.from_name("variants", "Model")
    via_name = Looked.with_options(cpu=0.15)().describe.remote()
    assert via_name["pid"] == got["pid"]  # the endpoint's variant: same options, same pool
    other = Looked.with_options(cpu=0.2)().describe.remote()
    assert other["cpu"] == pytest.approx(0.2)


def test_variant_options_are_checked_before_any_call(variants):
    app, _ = variants
    Model = app.registered_classes["Model"]
    with pytest.raises(InvalidError, match="`max_containers` must be at least 1"):
        Model.with_options(max_containers=0)
    with pytest.raises(InvalidError, match="`timeout` must be between"):
        Model.with_options(timeout=0)
    with pytest.raises(InvalidError, match="target_inputs"):
        Model.with_concurrency(max_inputs=2, target_inputs=3)
    with pytest.raises(InvalidError, match="no @rayweb.batched method"):
        Model.with_batching(max_batch_size=4, wait_ms=10)
    with pytest.raises(InvalidError, match="Secret.from_name"):
        Model.with_options(secrets=[rayweb.Secret.from_dict({"A": "1"})])
