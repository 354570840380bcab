"""Every endpoint at the root of its own origin (``http://<label>.localhost:<port>/``), as on
Modal: an unmodified app's HTML form posting to ``/process``, its redirect built from the
request URL to ``/result``, its root-relative assets and ``url_for`` all work there, for a
FastAPI app and for a web server; the path form keeps working beside it; an unknown host of
the domain gets a 404 that names the endpoints. (Requests go to 127.0.0.1 with the origin's
``Host`` header: what a browser resolving ``*.localhost`` sends.)"""

import subprocess
import sys

import httpx
import pytest

import rayweb
from tests.integration.conftest import TEST_PORT

SITE_SERVER = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.send_response(302)
            self.send_header("location", "/home")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = f'<a href="/next">{self.path}</a>'.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def origins(ray_cluster):
    app = rayweb.App("origins")

    @app.function(serialized=True)
    @rayweb.asgi_app()
    def site():
        from urllib.parse import parse_qs

        from fastapi import FastAPI, Request, Response, WebSocket
        from fastapi.responses import HTMLResponse, RedirectResponse

        web = FastAPI()

        @web.get("/", response_class=HTMLResponse)
        def page():
            return '<form action="/process" method="post"></form><link href="/static/app.css">'

        @web.post("/process")
        async def process(request: Request):
            x = parse_qs((await request.body()).decode())["x"][0]
            target = request.url.replace(path="/result", query=f"x={x}")
            return RedirectResponse(str(target), status_code=303)

        @web.get("/result")
        def result(x: str):
            return {"x": x}

        @web.get("/static/app.css")
        def css():
            return Response("body {}", media_type="text/css")

        @web.websocket("/ws")
        async def ws(socket: WebSocket):
            await socket.accept()
            text = await socket.receive_text()
            await socket.send_text(
                f"{text} at {socket.url.path} under {socket.scope['root_path']!r}"
            )
            await socket.close()

        @web.get("/where")
        def where(request: Request):
            return {
                "root_path": request.scope.get("root_path"),
                "url": str(request.url_for("result")),
            }

        return web

    @app.function(serialized=True)
    @rayweb.web_server(port=8240, startup_timeout=30)
    def files():
        subprocess.Popen([sys.executable, "-c", SITE_SERVER, "8240"])

    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    yield handle.urls
    handle.stop()


def _at(origin: str) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{TEST_PORT}", headers={"Host": origin})


def test_an_unmodified_app_works_at_the_root_of_its_origin(origins):
    label = origins["site"].rsplit("/", 1)[1]
    origin = f"{label}.localhost:{TEST_PORT}"
    with _at(origin) as client:
        page = client.get("/")
        assert 'action="/process"' in page.text
        assert client.get("/static/app.css").text == "body {}"  # the page's root-relative asset
        posted = client.post(
            "/process", content="x=7", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert posted.status_code == 303
        assert posted.headers["location"] == f"http://{origin}/result?x=7"
        assert client.get("/result?x=7").json() == {"x": "7"}
        where = client.get("/where").json()
        assert where == {"root_path": "", "url": f"http://{origin}/result"}
    # the path form beside it: the prefix is the app's root_path there
    path_form = httpx.get(origins["site"] + "/where").json()
    assert path_form["root_path"] == f"/{label}"
    assert path_form["url"] == origins["site"] + "/result"


def test_a_websocket_at_the_root_of_its_origin(origins):
    import socket

    from websockets.sync.client import connect

    label = origins["site"].rsplit("/", 1)[1]
    sock = socket.create_connection(("127.0.0.1", TEST_PORT))  # what `<label>.localhost` is
    with connect(f"ws://{label}.localhost:{TEST_PORT}/ws", sock=sock) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi at /ws under ''"
    with connect(origins["site"].replace("http://", "ws://") + "/ws") as ws:  # the path form
        ws.send("hi")
        assert ws.recv(timeout=10) == f"hi at /{label}/ws under '/{label}'"


def test_a_web_server_at_its_origin_keeps_its_own_redirects_and_links(origins):
    label = origins["files"].rsplit("/", 1)[1]
    with _at(f"{label}.localhost:{TEST_PORT}") as client:
        first = client.get("/")
        assert (first.status_code, first.headers["location"]) == (302, "/home")
        assert client.get("/home").text == '<a href="/next">/home</a>'
    # under the prefix the same redirect is sent back under it
    prefixed = httpx.get(origins["files"] + "/")
    assert prefixed.headers["location"] == f"/{label}/home"


def test_an_unknown_host_of_the_domain_names_the_endpoints(origins):
    with _at(f"nothing-here.localhost:{TEST_PORT}") as client:
        missing = client.get("/")
    assert missing.status_code == 404
    detail = missing.json()["detail"]
    assert "No endpoint is served at this host" in detail
    assert origins["site"].rsplit("/", 1)[1] in detail


def test_a_named_domain_changes_the_running_gateway_and_gives_origin_urls(served, monkeypatch):
    import ray

    from rayweb.services.gateway import find_gateway

    monkeypatch.setenv("RAYWEB_DOMAIN", "Apps.Test.")  # as `rayweb serve --domain` sets it
    app = rayweb.App("named-domain")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint()
    def hello():
        return "hi"

    gateway = find_gateway()
    try:
        handle = served(app)
        url = hello.get_web_url()
        label = handle.labels["hello"]
        # a domain the user named is trusted to resolve (wildcard DNS): the origin form
        assert url == handle.urls["hello"] == f"http://{label}.apps.test:{TEST_PORT}"
        with _at(f"{label}.apps.test:{TEST_PORT}") as client:
            assert client.get("/").json() == "hi"
        with _at(f"{label}.localhost:{TEST_PORT}") as client:  # the old domain is gone
            assert client.get("/").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{TEST_PORT}/{label}").json() == "hi"
    finally:
        ray.get(gateway.set_domain.remote("localhost"))
    assert ray.get(gateway.reach.remote())[2] == "localhost"
