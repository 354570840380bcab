"""The direct hop on a real HAProxy (no Ray): an ``@app.server``'s requests go from the
gateway's HAProxy straight to the server's port, and HAProxy does what the replica's chain
does on the other path: the prefix stripped and ``X-Forwarded-*`` set, redirects sent back
under the prefix, the gateway's own headers removed, proxy auth against the token map (a
revoked token is refused without a reload), the rate limit per client, ``max_concurrency``
as 429, and the holder while no server is up."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rayweb.common import CLIENT_HEADER, KEY_HEADER
from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import Direct, Route, Server, render_config, served
from rayweb.services.tokenmap import TokenMap
from rayweb.tokens import direct_digest
from tests.unit.test_gateway import _free_port, _Upstream

KEY, SECRET = "wk-test", "ws-" + "s" * 43
AUTH = {"Modal-Key": KEY, "Modal-Secret": SECRET}


class _Server:
    """A user's server: answers with the path and headers it got; ``/slow`` takes 1.5 s;
    ``.../go?to=X`` redirects to X; ``.../cookie?c=A&c=B`` sets one cookie per value."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                with contextlib.suppress(ConnectionResetError):  # HAProxy's health checks
                    super().handle()

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path.startswith("/slow"):
                    time.sleep(1.5)
                if url.path.endswith(("/go", "/cookie")):
                    query = parse_qs(url.query)
                    self.send_response(302 if url.path.endswith("/go") else 200)
                    for value in query.get("to", []):
                        self.send_header("location", value)
                    for cookie in query.get("c", []):
                        self.send_header("set-cookie", cookie)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _route(direct: Direct, *ports: int, maxconn: int = 8) -> Route:
    servers = {
        f"replica-{port}": Server("127.0.0.1", 1, 4, ("127.0.0.1", port, maxconn)) for port in ports
    }
    return Route("/app", servers, direct=direct)


def test_a_route_is_direct_only_while_every_server_is_reached_and_tokens_are_known():
    direct = Direct(auth_headers=("Modal-Key", "Modal-Secret"))
    route = _route(direct, 9001)
    table = served({"app": route}, tokens_ready=True)["app"]
    assert table.direct == direct
    assert table.servers == {"replica-9001": Server("127.0.0.1", 9001, 8)}
    # proxy auth needs every active token in the map: else the replica checks
    assert served({"app": route}, tokens_ready=False)["app"].direct is None
    # one replica whose server the gateway cannot reach: the whole route stays on replicas
    route.servers["replica-x"] = Server("192.0.2.9", 2, 4, None)  # TEST-NET-1: never contacted
    table = served({"app": route}, tokens_ready=True)["app"]
    assert table.direct is None
    assert table.servers["replica-9001"] == Server("127.0.0.1", 1, 4)
    # no auth: no need for the map
    open_route = _route(Direct(), 9002)
    assert served({"app": open_route}, tokens_ready=False)["app"].direct == Direct()


@pytest.fixture
def gateway(tmp_path):
    """HAProxy serving one direct route; yields (url, serve, holder, proc, tokens, table)."""
    upstream, holder = _Server(), _Upstream("holder")
    serve = _Upstream("serve")
    tokens = TokenMap(tmp_path)
    tokens.digests = {direct_digest(KEY, SECRET): KEY}
    tokens.version, tokens.complete = 1, True
    tokens._write()
    port = _free_port()
    direct = Direct(
        auth_headers=("Modal-Key", "Modal-Secret"),
        rate_limit=1000.0,
        rate_limit_burst_s=1.0,
        full=True,
    )
    routes = {"app": _route(direct, upstream.port, maxconn=1)}

    def config(table: dict[str, Route]) -> str:
        return render_config(
            bind=("127.0.0.1", port),
            serve=("127.0.0.1", serve.port),
            key="gateway-key",
            routes=served(table, tokens.ready),
            holder=("127.0.0.1", holder.port),
            tokens_map=str(tokens.path),
        )

    proc = HAProxyProcess(tmp_path, config(routes))
    try:
        proc.wait_listening("127.0.0.1", port)
        time.sleep(0.3)  # the first health check
        yield f"http://127.0.0.1:{port}", upstream, holder, proc, tokens, config
    finally:
        proc.stop()
        for server in (upstream, holder, serve):
            server.close()


def test_requests_reach_the_server_as_the_replica_would_send_them(gateway):
    url, _upstream, _holder, _proc, _tokens, _config = gateway
    with httpx.Client() as client:
        seen = client.get(url + "/app/hi?x=1", headers=AUTH).json()
        assert seen["path"] == "/hi?x=1"  # the prefix stripped, the query kept
        assert client.get(url + "/app", headers=AUTH).json()["path"] == "/"
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert headers["x-forwarded-prefix"] == "/app"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-host"].startswith("127.0.0.1:")
        # the gateway's own headers never reach user code (the key would let it forge them)
        assert KEY_HEADER.lower() not in headers
        assert CLIENT_HEADER.lower() not in headers
        # redirects to the server's own paths come back under the route's prefix
        go = url + "/app/go?to="
        for target, sent in (
            ("/login", "/app/login"),
            ("/", "/app/"),
            ("/app/done", "/app/done"),
            ("//cdn.example/x", "//cdn.example/x"),
            ("https://example.com/x", "https://example.com/x"),
        ):
            r = client.get(go + target, headers=AUTH)
            assert (r.status_code, r.headers["location"]) == (302, sent)


def test_proxy_auth_at_haproxy_and_a_revoked_token_without_a_reload(gateway):
    url, _upstream, _holder, proc, tokens, _config = gateway
    with httpx.Client() as client:
        missing = client.get(url + "/app/x")
        assert missing.status_code == 401
        assert missing.json()["detail"] == "rayweb: missing credentials for proxy authorization"
        assert missing.headers["www-authenticate"] == 'Bearer realm="rayweb"'
        wrong = client.get(url + "/app/x", headers={**AUTH, "Modal-Secret": "ws-wrong"})
        assert wrong.json()["detail"] == "rayweb: invalid credentials for proxy authorization"
        assert client.get(url + "/app/x", headers=AUTH).status_code == 200
        bearer = {"Authorization": f"Bearer {KEY}.{SECRET}"}
        assert client.get(url + "/app/x", headers=bearer).status_code == 200
        master = proc.master_pid
        removed = {hashlib.sha256(f"{KEY}.{SECRET}".encode()).hexdigest()}
        for command in tokens.commands({}, removed):
            assert proc.runtime(command).strip() == ""
        assert client.get(url + "/app/x", headers=AUTH).status_code == 401
        assert proc.master_pid == master  # no reload


def test_max_concurrency_answers_429_and_no_server_up_means_the_holder(gateway):
    url, upstream, holder, _proc, _tokens, _config = gateway
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        slow = pool.submit(httpx.get, url + "/app/slow", headers=AUTH, timeout=10)
        time.sleep(0.4)  # it holds the only server's only connection
        full = httpx.get(url + "/app/x", headers=AUTH)
        assert slow.result().status_code == 200
    assert full.status_code == 429
    assert full.headers["retry-after"] == "1"
    assert httpx.get(url + "/app/x", headers=AUTH).status_code == 200  # free again
    # The server's port closes: once HAProxy's check marks it down, the holder gets the
    # request, path and all (it wakes the endpoint and relays to a replica's own port).
    upstream.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not holder.seen:
        httpx.get(url + "/app/x", headers=AUTH)
        time.sleep(0.3)
    assert holder.seen, "no request reached the holder"
    assert holder.seen[-1][KEY_HEADER] == "gateway-key"  # the holder's relay is trusted


def test_the_rate_limit_counts_admitted_requests_per_client(tmp_path):
    upstream = _Server()
    port = _free_port()
    direct = Direct(rate_limit=3.0, rate_limit_burst_s=1.0)
    routes = served({"app": _route(direct, upstream.port)}, tokens_ready=False)
    proc = HAProxyProcess(
        tmp_path,
        render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 1), key="k", routes=routes),
    )
    try:
        proc.wait_listening("127.0.0.1", port)
        time.sleep(0.3)
        with httpx.Client() as client:
            codes = [client.get(f"http://127.0.0.1:{port}/app/x").status_code for _ in range(6)]
            assert codes == [200, 200, 200, 429, 429, 429]
            r = client.get(f"http://127.0.0.1:{port}/app/x")
            assert r.headers["retry-after"] == "1"
            assert r.json()["detail"] == "Too many requests from this client. Retry later."
            time.sleep(2.1)  # the window has passed: the refused ones did not count
            assert client.get(f"http://127.0.0.1:{port}/app/x").status_code == 200
    finally:
        proc.stop()
        upstream.close()
