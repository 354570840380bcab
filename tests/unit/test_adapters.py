"""The in-replica ASGI adapters, driven in-process with Starlette's TestClient."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from rayweb.replica.adapters import (
    LifespanGuard,
    RootSlash,
    fastapi_endpoint_app,
    wsgi_adapter,
)
from rayweb.replica.chain import Chain
from rayweb.spec import WebSpec


class Item(BaseModel):
    name: str


def search(query: str, limit: int = 10) -> dict:
    return {"query": query, "limit": limit}


def create(item: Item) -> dict:
    return {"name": item.name}


def test_fastapi_endpoint_one_route_at_root():
    client = TestClient(Chain(fastapi_endpoint_app(search, WebSpec("fastapi_endpoint"))).serve_path)
    assert client.get("/", params={"query": "x"}).json() == {"query": "x", "limit": 10}
    assert client.get("/").status_code == 422
    assert client.post("/").status_code == 405
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404
    r = client.options(
        "/", headers={"Origin": "http://a.test", "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://a.test"


def test_fastapi_endpoint_post_model_and_docs():
    client = TestClient(
        Chain(
            fastapi_endpoint_app(create, WebSpec("fastapi_endpoint", method="POST", docs=True))
        ).serve_path
    )
    assert client.post("/", json={"name": "a"}).json() == {"name": "a"}
    assert client.post("/", json={}).status_code == 422
    assert client.get("/docs").status_code == 200


def test_root_slash_serves_the_bare_prefix_without_redirect():
    app = fastapi_endpoint_app(create, WebSpec("fastapi_endpoint", method="POST"))
    client = TestClient(RootSlash(app), root_path="/label")
    r = client.post("/label", json={"name": "b"}, follow_redirects=False)
    assert r.status_code == 200 and r.json() == {"name": "b"}


def test_root_slash_keeps_the_query_string():
    seen = {}

    async def app(scope, receive, send):
        seen.update(path=scope["path"], raw=scope["raw_path"], qs=scope["query_string"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = TestClient(RootSlash(app), root_path="/label")
    client.get("/label?x=1")
    assert seen["path"] == "/label/" and seen["qs"] == b"x=1"
    assert seen["raw"].startswith(b"/label/")


async def raw_app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw"})


def test_lifespan_guard_completes_lifespan_for_apps_without_it():
    with TestClient(LifespanGuard(raw_app)) as client:  # runs startup and shutdown
        assert client.get("/").text == "raw"


def test_lifespan_guard_keeps_real_startup_failures():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("db unreachable")
        yield

    with (
        pytest.raises(RuntimeError, match="db unreachable"),
        TestClient(LifespanGuard(FastAPI(lifespan=lifespan))),
    ):
        pass


def _serve_like_a_replica(app, requests: int) -> None:
    """Drive ``app`` the way a Serve replica does: a loop in its own thread (run_forever,
    so AnyIO finds no root task), lifespan as one long task, each request as its own task."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start_lifespan():
        queue: asyncio.Queue = asyncio.Queue()
        started = asyncio.Event()

        async def send(message):
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await queue.put({"type": "lifespan.startup"})
        task = asyncio.ensure_future(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send)
        )
        await started.wait()
        return queue, task

    async def get():
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"",
            "headers": [], "server": ("test", 80), "client": ("test", 1),
        }  # fmt: skip

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        await app(scope, receive, send)

    try:
        queue, task = asyncio.run_coroutine_threadsafe(start_lifespan(), loop).result(10)
        for _ in range(requests):
            asyncio.run_coroutine_threadsafe(get(), loop).result(10)
        asyncio.run_coroutine_threadsafe(queue.put({"type": "lifespan.shutdown"}), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_lifespan_adopts_anyio_root_task():
    """Sync routes reuse AnyIO's worker threads instead of starting one per request."""
    from fastapi import FastAPI

    api = FastAPI()
    local = threading.local()  # fresh in every new thread (idents can be reused; this can't)
    started: list[int] = []

    @api.get("/")
    def sync_route():
        if not getattr(local, "seen", False):
            local.seen = True
            started.append(1)
        return {}

    _serve_like_a_replica(Chain(api).serve_path, requests=20)
    assert 1 <= len(started) <= 2, f"{len(started)} threads started for 20 requests"


def test_wsgi_adapter_flask():
    from flask import Flask, request

    web = Flask(__name__)

    @web.post("/echo")
    def echo():
        return {"got": request.get_json()}

    client = TestClient(Chain(wsgi_adapter(web, threads=2)).serve_path)
    assert client.post("/echo", json={"a": 1}).json() == {"got": {"a": 1}}
