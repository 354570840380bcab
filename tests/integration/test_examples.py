"""Every example, served on the shared cluster and called over real HTTP."""

from __future__ import annotations

import httpx

from tests.integration.conftest import example_app


def test_fastapi_endpoint_example(served):
    handle = served(example_app("fastapi_endpoint.py"))
    urls = handle.urls
    assert urls["search"].endswith("/api-service-search")

    r = httpx.get(urls["search"], params={"query": "ray", "limit": 2})
    assert r.status_code == 200
    assert r.json() == {"query": "ray", "results": ["ray-0", "ray-1"]}
    assert len(httpx.get(urls["search"], params={"query": "q"}).json()["results"]) == 10

    # FastAPI's own validation and method answers
    assert httpx.get(urls["search"]).status_code == 422
    assert httpx.get(urls["search"], params={"query": "q", "limit": "x"}).status_code == 422
    assert httpx.post(urls["search"]).status_code == 405

    # POST to the bare /<label> is served, not redirected
    r = httpx.post(urls["echo"], json={"a": [1, 2]}, follow_redirects=False)
    assert r.status_code == 200 and r.json() == {"received": {"a": [1, 2]}}
    r = httpx.post(urls["order"], json={"name": "tea", "qty": 2}, follow_redirects=False)
    assert r.json() == {"name": "tea", "total": 6}
    assert httpx.post(urls["order"], json={"qty": 2}).status_code == 422

    # docs only where docs=True
    assert httpx.get(urls["order"] + "/docs").status_code == 200
    assert httpx.get(urls["order"] + "/openapi.json").json()["paths"]
    assert httpx.get(urls["search"] + "/docs").status_code == 404

    r = httpx.get(urls["plain"], params={"name": "ray"})
    assert r.text == "hello ray" and r.headers["x-greeting"] == "1"
    assert r.headers["content-type"].startswith("text/plain")

    r = httpx.get(urls["stream"], params={"n": 3})
    assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert r.headers["content-type"].startswith("text/event-stream")

    # CORS *, as Modal's fastapi_endpoint
    r = httpx.get(urls["search"], params={"query": "q"}, headers={"Origin": "http://x.test"})
    assert r.headers["access-control-allow-origin"] in ("*", "http://x.test")

    # get_web_url() matches, and works only while served
    app = handle.app
    assert app.registered_functions["search"].get_web_url() == urls["search"]


def test_asgi_app_example(served):
    url = served(example_app("asgi_app.py")).urls["web"]
    assert httpx.get(url).json() == {"hello": "asgi"}
    assert httpx.get(url + "/").json() == {"hello": "asgi"}
    assert httpx.get(url + "/items/3", params={"q": "z"}).json() == {"item_id": 3, "q": "z"}
    assert httpx.post(url + "/items", json={"k": 1}).json() == {"created": {"k": 1}}
    assert httpx.get(url + "/lifespan").json() == {"started": True}
    assert httpx.get(url + "/nope").status_code == 404


def test_raw_asgi_without_lifespan(served):
    url = served(example_app("raw_asgi.py")).urls["raw"]
    r = httpx.get(url + "/some/path")
    assert r.status_code == 200
    assert r.text.startswith("raw asgi at ") and r.text.endswith("/some/path")


def test_wsgi_flask_example(served):
    url = served(example_app("wsgi_flask.py")).urls["flask_app"]
    assert httpx.get(url).text == "hello from flask"
    assert httpx.post(url + "/echo", json={"x": 1}).json() == {"got": {"x": 1}}
    with httpx.stream("GET", url + "/stream") as r:
        chunks = list(r.iter_text())
    assert "".join(chunks) == "chunk 0\nchunk 1\nchunk 2\n"


def test_resources_example_env_and_secrets(served):
    url = served(example_app("resources.py")).urls["settings"]
    assert httpx.get(url).json() == {
        "greeting": "hi",
        "mode": "demo",
        "has_token": True,
        "is_local": False,
    }


def test_serve_config_builder_runs_an_endpoint(ray_cluster):
    """What KubeRay's serveConfigV2 runs: rayweb.entry:build(args)."""
    import sys

    from ray import serve

    from rayweb.entry import build
    from tests.conftest import EXAMPLES
    from tests.integration.conftest import TEST_PORT

    sys.path.insert(0, str(EXAMPLES))
    try:
        serve.run(
            build({"app": "fastapi_endpoint:app", "tag": "search"}),
            name="from-config",
            route_prefix="/from-config",
        )
        r = httpx.get(
            f"http://127.0.0.1:{TEST_PORT}/from-config", params={"query": "k8s", "limit": 1}
        )
        assert r.json() == {"query": "k8s", "results": ["k8s-0"]}
    finally:
        serve.delete("from-config")
        sys.path.remove(str(EXAMPLES))


def test_serve_config_builder_runs_functions_called_with_remote(ray_cluster):
    """A rendered manifest's function applications (route_prefix None): built the same way,
    named as callers compute, and called from this process."""
    import sys

    from ray import serve

    from rayweb.entry import build
    from rayweb.spec import function_app_name
    from tests.conftest import EXAMPLES

    sys.path.insert(0, str(EXAMPLES))
    app = example_app("backend_functions.py")
    names = [function_app_name("backend", tag, dev=False) for tag in ("square", "Model")]
    try:
        for tag, name in zip(("square", "Model"), names, strict=True):
            args = {"app": "backend_functions:app", "tag": tag, "function": True}
            serve.run(build(args), name=name, route_prefix=None)
        assert app.registered_functions["square"].remote(7) == 49
        assert app.registered_classes["Model"]().predict.remote(4)["y"] == 4
    finally:
        for name in names:
            serve.delete(name)
        sys.path.remove(str(EXAMPLES))
