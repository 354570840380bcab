"""The path form done right for every kind of endpoint (``http://<host>:<port>/<label>/...``):
each app gets the prefix as its ASGI ``root_path``, its WSGI ``SCRIPT_NAME`` or its server's
``X-Forwarded-Prefix``, so ``url_for``, FastAPI's docs and redirects built from the router
stay inside the endpoint; a hard-coded root-relative redirect or cookie path is put under the
prefix by the gateway. (``@app.server``: ``test_servers.py``, on both of its hops.)"""

import subprocess
import sys

import httpx
import pytest

import rayweb
from tests.integration.conftest import TEST_PORT

HEADERS_SERVER = """
import http.server, json, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/login":
            self.send_response(303)
            self.send_header("location", "/home")
            self.send_header("set-cookie", "who=me; Path=/")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def urls(ray_cluster):
    app = rayweb.App("prefixes")

    @app.function(serialized=True)
    @rayweb.fastapi_endpoint(docs=True)
    def endpoint(x: int = 1):
        return {"x": x}

    @app.function(serialized=True)
    @rayweb.asgi_app()
    def starlette():
        from fastapi import FastAPI, Request
        from fastapi.responses import RedirectResponse, Response

        web = FastAPI()

        @web.get("/result")
        def result(request: Request):
            return {"root_path": request.scope["root_path"], "path": request.url.path}

        @web.get("/go")
        def go(request: Request):
            return RedirectResponse(request.url_for("result"), status_code=303)

        @web.get("/hard")
        def hard():
            response = RedirectResponse("/result", status_code=303)
            response.set_cookie("seen", "1", path="/")
            return response

        @web.get("/where")
        def where(request: Request):
            return Response(str(request.url_for("result")), media_type="text/plain")

        return web

    @app.function(serialized=True)
    @rayweb.wsgi_app()
    def flask_app():
        from flask import Flask, jsonify, redirect, request, url_for

        web = Flask("prefixes")

        @web.get("/result")
        def result():
            return jsonify(script_name=request.environ["SCRIPT_NAME"], path=request.path)

        @web.get("/go")
        def go():
            return redirect(url_for("result"))

        @web.get("/hard")
        def hard():
            return redirect("/result")

        @web.get("/where")
        def where():
            return url_for("result", _external=True)

        return web

    @app.function(serialized=True)
    @rayweb.web_server(port=8241, startup_timeout=30)
    def server():
        subprocess.Popen([sys.executable, "-c", HEADERS_SERVER, "8241"])

    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    yield handle.urls
    handle.stop()


def _prefix(url: str) -> str:
    return "/" + url.rsplit("/", 1)[1]


def test_fastapi_endpoint_docs_under_the_prefix(urls):
    url, prefix = urls["endpoint"], _prefix(urls["endpoint"])
    assert httpx.get(url, params={"x": 3}).json() == {"x": 3}
    docs = httpx.get(url + "/docs")
    assert docs.status_code == 200
    assert f"'{prefix}/openapi.json'" in docs.text  # the page loads its schema inside
    assert httpx.get(url + "/openapi.json").json()["paths"]


def test_asgi_url_for_and_redirects_under_the_prefix(urls):
    url, prefix = urls["starlette"], _prefix(urls["starlette"])
    base = url[: -len(prefix)]
    assert httpx.get(url + "/where").text == f"{url}/result"
    go = httpx.get(url + "/go")
    assert (go.status_code, go.headers["location"]) == (303, f"{url}/result")
    assert httpx.get(go.headers["location"]).json() == {
        "root_path": prefix,
        "path": f"{prefix}/result",
    }
    hard = httpx.get(url + "/hard")  # hard-coded `/result` and a cookie for `/`
    assert hard.headers["location"] == f"{prefix}/result"
    assert hard.headers["set-cookie"] == f"seen=1; Path={prefix}; SameSite=lax"
    assert httpx.get(base + hard.headers["location"]).status_code == 200
    docs = httpx.get(url + "/docs")
    assert f"'{prefix}/openapi.json'" in docs.text
    assert "/result" in httpx.get(url + "/openapi.json").json()["paths"]


def test_wsgi_script_name_url_for_and_redirects_under_the_prefix(urls):
    url, prefix = urls["flask_app"], _prefix(urls["flask_app"])
    assert httpx.get(url + "/result").json() == {"script_name": prefix, "path": "/result"}
    assert httpx.get(url + "/where").text == f"{url}/result"
    assert httpx.get(url + "/go").headers["location"] == f"{prefix}/result"
    assert httpx.get(url + "/hard").headers["location"] == f"{prefix}/result"


def test_web_server_gets_the_prefix_and_its_answers_stay_under_it(urls):
    url, prefix = urls["server"], _prefix(urls["server"])
    headers = httpx.get(url + "/page").json()
    assert headers["x-forwarded-prefix"] == prefix
    assert headers["x-forwarded-host"] == f"127.0.0.1:{TEST_PORT}"
    login = httpx.get(url + "/login")
    assert login.headers["location"] == f"{prefix}/home"
    assert login.headers["set-cookie"] == f"who=me; Path={prefix}"
