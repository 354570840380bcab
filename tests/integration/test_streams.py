"""Streams flow through the gateway: every event or frame an endpoint yields leaves at once.

For each web kind (``fastapi_endpoint``, ``asgi_app``, ``wsgi_app``, ``web_server``) the
endpoint sends 20 server-sent events 50 ms apart, each carrying the time it was sent
(``time.time()``: one machine, one clock); the client reads the raw socket and notes when
each event arrived. WebSocket frames likewise. Before ``option http-no-delay`` events came
~100-200 ms late, in bursts; the bound here (90% within 10 ms, none over 50 ms, to ride out
a noisy 2-core machine) tells held events from flowing ones.
"""

# No `from __future__ import annotations`: the endpoints below are shipped by value.

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

import rayweb

pytestmark = pytest.mark.cluster

EVENTS, GAP_S = 20, 0.05

streams = rayweb.App("streams", limits=rayweb.Limits(rate_limit=None))


@streams.function(serialized=True, min_containers=1)
@rayweb.fastapi_endpoint()
def endpoint():
    import asyncio
    import time

    from fastapi.responses import StreamingResponse

    async def events():
        for _ in range(20):
            yield f"data: {time.time()}\n\n"
            await asyncio.sleep(0.05)

    return StreamingResponse(events(), media_type="text/event-stream")


@streams.function(serialized=True, min_containers=1)
@rayweb.concurrent(max_inputs=4)
@rayweb.asgi_app()
def asgi():
    import asyncio
    import time

    from fastapi import FastAPI, WebSocket
    from fastapi.responses import StreamingResponse

    api = FastAPI()

    @api.get("/sse")
    async def sse():
        async def events():
            for _ in range(20):
                yield f"data: {time.time()}\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        for _ in range(20):
            await socket.send_text(str(time.time()))
            await asyncio.sleep(0.05)
        await socket.close()

    return api


@streams.function(serialized=True, min_containers=1)
@rayweb.wsgi_app()
def wsgi():
    import time

    from flask import Flask, Response

    api = Flask(__name__)

    @api.get("/sse")
    def sse():
        def events():
            for _ in range(20):
                yield f"data: {time.time()}\n\n"
                time.sleep(0.05)

        return Response(events(), mimetype="text/event-stream")

    return api


SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for _ in range(20):
            event = f"data: {time.time()}\\n\\n".encode()
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"0\\r\\n\\r\\n")

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@streams.function(serialized=True, min_containers=1)
@rayweb.web_server(8093, startup_timeout=30)
def server():
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", SERVER, "8093"])


@pytest.fixture(scope="module")
def urls(ray_cluster: None) -> Iterator[dict[str, str]]:
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(streams, port=TEST_PORT, quiet=True)
    try:
        yield handle.urls
    finally:
        handle.stop()


def _late_ms(url: str) -> list[float]:
    """How late each event arrived (ms), read from the raw socket."""
    parts = urlsplit(url)
    late: list[float] = []
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = b""
        while len(late) < EVENTS:
            chunk = sock.recv(65536)
            assert chunk, f"the stream ended after {len(late)} events"
            now = time.time()
            data += chunk
            while (start := data.find(b"data: ")) >= 0 and (end := data.find(b"\n\n", start)) >= 0:
                late.append((now - float(data[start + 6 : end])) * 1000)
                data = data[end + 2 :]
    return late


def _check(late: list[float]) -> None:
    ordered = sorted(late)
    assert len(late) == EVENTS
    assert ordered[int(EVENTS * 0.9) - 1] < 10, ordered
    assert ordered[-1] < 50, ordered


@pytest.mark.parametrize(
    ("tag", "path"),
    [("endpoint", ""), ("asgi", "/sse"), ("wsgi", "/sse"), ("server", "/events")],
)
def test_every_event_leaves_the_gateway_at_once(urls: dict[str, str], tag: str, path: str) -> None:
    _late_ms(urls[tag] + path)  # warm: imports, first connection
    _check(_late_ms(urls[tag] + path))


def test_websocket_frames_leave_the_gateway_at_once(urls: dict[str, str]) -> None:
    ws_url = urls["asgi"].replace("http://", "ws://") + "/ws"
    for _ in range(2):  # the first round warms up
        late = []
        with connect(ws_url, open_timeout=30) as ws:
            for _ in range(EVENTS):
                late.append((time.time() - float(json.loads(ws.recv(timeout=10)))) * 1000)
    _check(late)
