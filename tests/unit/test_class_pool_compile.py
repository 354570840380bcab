"""One container pool per @app.cls, compiled (no cluster): with the gateway, a class's
fastapi/asgi/wsgi web methods leave ``compile_app`` for their class's application, which
carries each one's payload as a route; web_server methods and Servers keep applications of
their own; without the gateway (``pool=False``) nothing is pooled. The pool's prefix
dispatch, with plain ASGI calls."""

from __future__ import annotations

import asyncio

import pytest

import rayweb
from rayweb.compiler import compile_app, compile_functions
from rayweb.exception import InvalidError
from rayweb.replica.direct import PrefixDispatch
from rayweb.spec import FunctionPayload

app = rayweb.App("Pools", limits=rayweb.Limits(rate_limit=7))


@app.cls(cpu=0.5, max_containers=3)
@rayweb.concurrent(max_inputs=4)
class Model:
    @rayweb.enter()
    def load(self) -> None:
        self.ready = True

    @rayweb.fastapi_endpoint(method="POST", requires_proxy_auth=True)
    def predict(self) -> dict:
        return {}

    @rayweb.asgi_app(label="model-api")
    def api(self):
        return None

    @rayweb.web_server(8000)
    def ui(self) -> None:
        pass

    @rayweb.method()
    def embed(self, x: int) -> int:
        return x


@app.cls()
class WebOnly:
    @rayweb.wsgi_app()
    def legacy(self):
        return None


@app.function()
@rayweb.fastapi_endpoint()
def plain() -> dict:
    return {}


def test_web_methods_go_to_their_class_pool_with_the_gateway():
    endpoints = {ep.tag for ep in compile_app(app, dev=True)}
    assert endpoints == {"plain", "Model.ui"}  # a web_server keeps its own sidecar app
    pools = {ep.tag: ep for ep in compile_functions(app, dev=True)}
    assert set(pools) == {"Model", "WebOnly"}  # a class with web methods only gets a pool
    model = pools["Model"]
    assert model.name == "rayweb-fn-pools-model-dev" and model.route_prefix is None
    assert isinstance(model.payload, FunctionPayload)
    routes = {tag: (label, payload) for tag, label, payload in model.web_routes}
    assert set(routes) == {"Model.predict", "Model.api"}
    label, predict = routes["Model.predict"]
    assert label == predict.label == "pools-model-predict-dev"
    assert routes["Model.api"][0] == "model-api-dev"
    assert predict.web.method == "POST" and predict.auth_headers is not None
    assert predict.limits.rate_limit == 7 and predict.code.attr == "predict"
    assert not predict.hot_swap  # a pool is redeployed on save
    # @concurrent on the class: the pool's slots, which every route shares
    assert model.payload.max_inputs == predict.max_inputs == 4
    assert model.deployment_options["max_ongoing_requests"] == 4
    assert model.payload.enter_methods == ("load",)
    assert [label for _, label, _ in pools["WebOnly"].web_routes] == ["pools-webonly-legacy-dev"]


def test_without_the_gateway_each_web_method_is_its_own_application():
    endpoints = {ep.tag for ep in compile_app(app, pool=False)}
    assert endpoints == {"plain", "Model.predict", "Model.api", "Model.ui", "WebOnly.legacy"}
    (model,) = compile_functions(app, pool=False)  # WebOnly has nothing to call
    assert model.tag == "Model" and model.web_routes == []


def test_a_pooled_label_still_conflicts_with_another_endpoint():
    clash = rayweb.App("clash")

    @clash.cls(serialized=True)
    class Api:
        @rayweb.fastapi_endpoint(label="same")
        def one(self) -> dict:
            return {}

    @clash.function(serialized=True)
    @rayweb.fastapi_endpoint(label="same")
    def two() -> dict:
        return {}

    with pytest.raises(InvalidError, match="Duplicate URL label 'same'"):
        compile_app(clash)


def _answer(tag: str):
    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            return
        body = f"{tag} {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def _call(app, path: str, kind: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": kind, "path": path}, receive, send))
    return sent


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/m-predict", b"predict /m-predict"),
        ("/m-predict/x", b"predict /m-predict/x"),
        ("/m-predict-v2/y", b"v2 /m-predict-v2/y"),  # the longest prefix wins
        ("/m-predictor", None),  # a prefix of a path segment is not a match
        ("/other", None),
    ],
)
def test_prefix_dispatch_sends_each_label_to_its_app(path, expected):
    dispatch = PrefixDispatch({"/m-predict": _answer("predict"), "/m-predict-v2": _answer("v2")})
    sent = _call(dispatch, path)
    if expected is None:
        assert sent[0]["status"] == 404
    else:
        assert sent[0]["status"] == 200 and sent[1]["body"] == expected


def test_prefix_dispatch_closes_a_websocket_to_no_label():
    dispatch = PrefixDispatch({"/a": _answer("a")})
    assert _call(dispatch, "/b", "websocket") == [{"type": "websocket.close", "code": 1008}]
    assert _call(dispatch, "/a/ws", "websocket") == [{"type": "websocket.accept"}]
