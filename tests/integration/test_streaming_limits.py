"""Streaming, WebSockets and rayweb's limits through rayweb's URL on the real cluster."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

import rayweb
from tests.integration.conftest import example_app


@pytest.fixture(scope="module")
def urls(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(example_app("streaming.py"), port=TEST_PORT, quiet=True)
    yield handle.urls
    handle.stop()


def _arrivals(url: str, **params) -> list[tuple[float, str]]:
    start = time.monotonic()
    out = []
    with httpx.stream("GET", url, params=params, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_text():
            out.append((time.monotonic() - start, chunk))
    return out


@pytest.mark.parametrize(
    ("endpoint", "path"), [("events", ""), ("live", "/sse"), ("classic", "/sse")]
)
def test_sse_events_arrive_as_they_are_produced(urls, endpoint, path):
    arrivals = _arrivals(urls[endpoint] + path, n=5, delay=0.3)
    assert "".join(c for _, c in arrivals) == "".join(f"data: {i}\n\n" for i in range(5))
    assert arrivals[0][0] < 0.6 < 1.2 < arrivals[-1][0], arrivals  # not buffered to the end


def test_client_disconnect_cancels_the_generator(served, tmp_path):
    log = tmp_path / "generator.log"
    app = rayweb.App("sse-cancel")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def ticks():
        import asyncio

        from fastapi.responses import StreamingResponse

        async def stream():
            try:
                for i in range(100):
                    with open(log, "a") as f:
                        f.write(f"{i}\n")
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                with open(log, "a") as f:
                    f.write("cancelled\n")
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")

    url = served(app).urls["ticks"]
    with httpx.stream("GET", url) as r:
        for chunk in r.iter_text():
            if "data: 2" in chunk:
                break
    deadline = time.monotonic() + 10
    while "cancelled" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log.read_text().split()
    assert lines[-1] == "cancelled"
    assert len(lines) < 40  # stopped within ~3 s of a 10 s stream


def test_websocket_echo_binary_subprotocol_and_close_code(urls):
    ws_url = urls["live"].replace("http://", "ws://") + "/ws"
    with connect(ws_url, subprotocols=["v2.chat"]) as ws:
        assert ws.subprotocol == "v2.chat"
        ws.send("hi")
        assert ws.recv() == "hi"
        ws.send(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
        ws.send("close:4003")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv()
    assert info.value.rcvd.code == 4003


def test_websocket_message_limit_default_2_mib(urls):
    ws_url = urls["live"].replace("http://", "ws://") + "/ws"
    limit = 2 * 1024 * 1024
    with connect(ws_url, max_size=None) as ws:
        ws.send(b"z" * limit)
        assert len(ws.recv()) == limit
        ws.send(b"z" * (limit + 1))
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv()
    assert info.value.rcvd.code == 1009


def test_an_open_websocket_holds_one_slot(served):
    app = rayweb.App("ws-slot")

    @app.function(serialized=True, max_containers=1)
    @rayweb.asgi_app()
    def web():
        from fastapi import FastAPI
        from starlette.routing import WebSocketRoute

        async def ws(socket):  # a Starlette endpoint: no annotation needed
            await socket.accept()
            await socket.receive_text()
            await socket.close()

        api = FastAPI(routes=[WebSocketRoute("/ws", ws)])

        @api.get("/")
        def ping():
            return "pong"

        return api

    url = served(app).urls["web"]
    assert httpx.get(url).json() == "pong"
    done = threading.Event()
    with connect(url.replace("http://", "ws://") + "/ws") as ws:
        threading.Thread(
            target=lambda: (httpx.get(url, timeout=60), done.set()), daemon=True
        ).start()
        assert not done.wait(3)  # max_inputs=1: the GET waits while the socket is open
        ws.send("bye")
    assert done.wait(30)


def test_body_limit_413_and_bodies_under_it_stream(urls):
    limit = 256 * 1024**2
    assert httpx.post(urls["live"] + "/upload", content=b"a" * (8 << 20)).json() == {
        "bytes": 8 << 20
    }
    # Declare a too-large body and send none of it: the answer must come anyway.
    url = httpx.URL(urls["live"] + "/upload")
    with socket.create_connection((url.host, url.port), timeout=20) as sock:
        sock.sendall(
            f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n".encode()
        )
        assert sock.recv(200).startswith(b"HTTP/1.1 413")

    def chunks():
        block = b"b" * (1 << 20)
        for _ in range(257):
            yield block

    r = httpx.post(urls["live"] + "/upload", content=chunks(), timeout=120)
    assert r.status_code == 413


def test_client_ip_is_real_and_x_forwarded_for_is_not_trusted(urls):
    who = urls["live"] + "/whoami"
    assert httpx.get(who).json() == {"client": "127.0.0.1"}
    spoofed = httpx.get(who, headers={"X-Forwarded-For": "6.6.6.6"}).json()
    assert spoofed == {"client": "127.0.0.1"}


def test_rate_limit_is_shared_across_replicas(served):
    rate, burst_s, seconds = 20, 1.0, 3.0
    app = rayweb.App("rl", limits=rayweb.Limits(rate_limit=rate, rate_limit_burst_s=burst_s))

    @app.function(serialized=True, min_containers=2, max_containers=2)
    @rayweb.concurrent(max_inputs=20)
    @rayweb.fastapi_endpoint()
    def ok() -> str:
        import os

        return str(os.getpid())

    url = served(app).urls["ok"]
    results: list[httpx.Response] = []
    stop = time.monotonic() + seconds
    start = time.monotonic()

    def hammer():
        with httpx.Client() as c:
            while time.monotonic() < stop:
                results.append(c.get(url))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    passed = [r for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    allowed = rate * burst_s + rate * elapsed
    assert len({r.text for r in passed}) == 2, "both replicas served"
    assert abs(len(passed) - allowed) <= 0.2 * allowed, (len(passed), allowed, len(results))
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)


def test_request_timeout_gives_504(served):
    app = rayweb.App("slow", limits=rayweb.Limits(request_timeout=1))

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    async def nap(seconds: float) -> float:
        import asyncio

        await asyncio.sleep(seconds)
        return seconds

    url = served(app).urls["nap"]
    assert httpx.get(url, params={"seconds": 0.1}).json() == 0.1
    start = time.monotonic()
    r = httpx.get(url, params={"seconds": 30}, timeout=60)
    assert r.status_code == 504 and time.monotonic() - start < 10
