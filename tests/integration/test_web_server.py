"""@rayweb.web_server: sidecar actors behind the proxy route, over real HTTP and WebSockets."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

import rayweb
from rayweb.exception import DeploymentError
from tests.integration.conftest import example_app


@pytest.fixture(scope="module")
def aio(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(example_app("web_server_aiohttp.py"), port=TEST_PORT, quiet=True)
    yield handle.urls["server"]
    handle.stop()


def test_http_server_example_serves_files(served):
    url = served(example_app("web_server_http.py")).urls["files"]
    assert httpx.get(url + "/hello.txt").text == "hello from a file\n"
    assert "rayweb static site" in httpx.get(url).text  # the bare label is "/"
    assert httpx.get(url + "/missing.txt").status_code == 404


def test_methods_query_headers_and_prefix(aio):
    r = httpx.request(
        "PATCH",
        aio + "/echo/a/b",
        params={"x": "1", "y": "two words"},
        content=b"payload",
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "X-Keep": "kept"},
    )
    seen = r.json()
    assert seen["method"] == "PATCH" and seen["body"] == "payload"
    assert seen["path"] == "/echo/a/b"  # route prefix stripped
    assert seen["query"] == {"x": "1", "y": "two words"}
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-keep"] == "kept"
    assert "x-hop" not in headers  # named in Connection: hop-by-hop
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-prefix"] == "/aiohttp-demo-server"
    for method in ("PUT", "DELETE", "OPTIONS"):
        assert httpx.request(method, aio + "/echo/m").json()["method"] == method


def test_redirects_are_passed_through_not_followed(aio):
    r = httpx.get(aio + "/redirect", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == "/aiohttp-demo-server/echo/redirected"
    assert httpx.get(aio + "/redirect", follow_redirects=True).json()["path"] == "/echo/redirected"


def test_sse_events_arrive_as_produced(aio):
    start = time.monotonic()
    arrivals = []
    with httpx.stream("GET", aio + "/sse", params={"n": 5, "delay": 0.5}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_text():
            arrivals.append((time.monotonic() - start, chunk))
    assert "".join(c for _, c in arrivals) == "".join(f"data: {i}\n\n" for i in range(5))
    assert arrivals[0][0] < 1.0 < arrivals[-1][0]  # first event long before the 2 s total


def test_large_upload_and_download_stream(aio):
    size = 64 << 20

    def body():
        block = b"u" * (1 << 20)
        for _ in range(size >> 20):
            yield block

    assert httpx.post(aio + "/upload", content=body(), timeout=120).json() == {"bytes": size}
    total = 0
    with httpx.stream("GET", aio + "/download", params={"size": size}, timeout=120) as r:
        assert r.headers["content-length"] == str(size)
        for chunk in r.iter_bytes():
            total += len(chunk)
    assert total == size


def test_websocket_text_binary_subprotocol_and_close_code(aio):
    with connect(aio.replace("http://", "ws://") + "/ws", subprotocols=["chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\xff" * 1000)
        assert ws.recv() == b"\x00\xff" * 1000
        ws.send("close:4001")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv()
    assert info.value.rcvd.code == 4001


def _own_copy(name: str) -> rayweb.App:
    """The aiohttp example under its own label, so it never replaces the module fixture's."""
    app = example_app("web_server_aiohttp.py")
    app.name = name
    return app


def test_server_dies_with_its_replica(served):
    handle = served(_own_copy("aiohttp-life"))
    pid = httpx.get(handle.urls["server"] + "/pid").json()["pid"]
    assert psutil.pid_exists(pid)
    handle.stop()
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(pid)


def test_dead_server_gives_502s_then_a_replacement(served):
    url = served(_own_copy("aiohttp-dead")).urls["server"]
    pid = httpx.get(url + "/pid").json()["pid"]
    psutil.Process(pid).kill()
    statuses = set()
    new_pid = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = httpx.get(url + "/pid", timeout=10)  # answers (502/503), never hangs
        statuses.add(r.status_code)
        if r.status_code == 200 and r.json()["pid"] != pid:
            new_pid = r.json()["pid"]
            break
        time.sleep(0.5)
    assert statuses & {502, 503}, statuses
    assert new_pid is not None, f"no replacement server; saw {statuses}"


def test_n_replicas_get_n_sidecars_on_one_node(served):
    app = rayweb.App("ws-scale")

    @app.function(serialized=True, min_containers=2, max_containers=2)
    @rayweb.web_server(8000, startup_timeout=20)
    def server():
        import subprocess
        import sys

        code = (
            "import http.server, os\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = str(os.getpid()).encode()\n"
            "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
            "        self.end_headers(); self.wfile.write(body)\n"
            "http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
        )
        subprocess.Popen([sys.executable, "-c", code])

    url = served(app).urls["server"]
    pids = {httpx.get(url).text for _ in range(40)}
    assert len(pids) == 2, pids  # both declared port 8000; each got its own


def test_enter_runs_in_the_sidecar_before_the_function(served, tmp_path):
    app = rayweb.App("ws-cls")

    @app.cls(serialized=True)
    class Site:
        @rayweb.enter()
        def prepare(self):
            self.root = tmp_path / "site"
            self.root.mkdir(exist_ok=True)
            (self.root / "state.txt").write_text("made by @enter")

        @rayweb.web_server(8000, startup_timeout=20)
        def serve_files(self):
            import subprocess
            import sys

            subprocess.Popen(
                [sys.executable, "-m", "http.server", "8000", "--directory", str(self.root)]
            )

    url = served(app).urls["Site.serve_files"]
    assert httpx.get(url + "/state.txt").text == "made by @enter"


def test_port_never_opening_fails_with_modals_message_and_output(served, tmp_path):
    pid_file = tmp_path / "child.pid"
    app = rayweb.App("ws-slow")

    @app.function(serialized=True)
    @rayweb.web_server(8000, startup_timeout=3)
    def never():
        import subprocess

        child = subprocess.Popen(["sleep", "300"])
        pid_file.write_text(str(child.pid))
        print("warming up the model, please wait", flush=True)

    with pytest.raises(DeploymentError) as info:
        served(app, deploy_timeout=120)
    text = str(info.value)
    assert "Waited too long for port 8000 to start accepting connections" in text
    assert "bound to 0.0.0.0" in text and "startup_timeout" in text
    assert "warming up the model, please wait" in text  # the server's last output lines
    child = int(pid_file.read_text())
    # The last try may still have been starting when the failed deploy was deleted: then
    # Serve stops its replica (and the sidecar with its group) within the replica's graceful
    # shutdown timeout, 30 s here, not at the startup timeout.
    deadline = time.monotonic() + 60
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_failing_web_server_function_shows_the_user_traceback(served):
    app = rayweb.App("ws-raise")

    @app.function(serialized=True)
    @rayweb.web_server(8000)
    def broken():
        raise OSError("model weights not found")

    with pytest.raises(DeploymentError) as info:
        served(app, deploy_timeout=120)
    assert "OSError: model weights not found" in str(info.value)
    assert "broken" in (info.value.user_traceback or "")


def test_a_web_servers_own_process_calls_the_apps_functions(served):
    app = rayweb.App("ws-calls")

    @app.function(serialized=True)
    def double(x: int) -> int:
        return 2 * x

    @app.function(serialized=True)
    @rayweb.web_server(8000, startup_timeout=30)
    def server():
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = str(double.remote(int(self.path.strip("/") or 1))).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    url = served(app).urls["server"]
    assert httpx.get(url + "/21", timeout=120).text == "42"  # joined Ray at its first call
    assert httpx.get(url + "/5", timeout=60).text == "10"
