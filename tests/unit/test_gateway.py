"""The gateway's parts without Ray: HAProxy config, a real HAProxy process with reloads,
the trust/prefix/counting middlewares and a replica's direct uvicorn server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request  # module level: FastAPI resolves annotations here

from rayweb.common import CLIENT_HEADER, KEY_HEADER
from rayweb.replica.direct import Counted, DirectServer
from rayweb.replica.trust import GatewayTrust, RoutePrefix
from rayweb.services.haproxy import HAProxyProcess, haproxy_binary
from rayweb.services.haproxy_config import (
    Route,
    Server,
    parse_trusted,
    render_config,
    server_name,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "check.cfg"
    cfg.write_text(config)
    return subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True)


def test_config_routes_longest_prefix_first_with_serve_as_backup(tmp_path):
    routes = {
        "a": Route("/a", {"r1": Server("127.0.0.1", 1001, 4), "r2": Server("127.0.0.1", 1002, 4)}),
        "ab": Route("/a-b", {"r3": Server("127.0.0.1", 1003, 1)}),
        "idle": Route("/idle", {}, max_body=10),  # no replica: Serve's proxy, limits kept
    }
    config = render_config(
        bind=("127.0.0.1", 8000), serve=("127.0.0.1", 9000), key="k3y", routes=routes
    )
    lines = config.splitlines()
    acl_ab = lines.index("    acl r1 path,url_dec -m str /a-b")
    assert acl_ab < lines.index("    acl r2 path,url_dec -m str /a")
    assert "    acl r2 path,url_dec -m beg /a/" in lines  # "/a" must not take "/a-b" or "/ab"
    idle = lines.index("backend b0  # idle")
    backend = lines[idle : lines.index("backend b1  # ab")]
    servers = [line for line in backend if line.startswith("    server ")]
    assert servers == ["    server serve 127.0.0.1:9000 backup"]  # its only server
    assert any("req.hdr(content-length) -m int gt 10 }" in line for line in backend)
    assert "    default_backend serve" in lines
    assert config.count("server serve 127.0.0.1:9000 backup") == 3
    assert f"server {server_name('r1')} 127.0.0.1:1001 maxconn 4 check" in config
    assert f"http-request del-header {KEY_HEADER}" in config
    assert f"http-request set-header {KEY_HEADER} k3y" in config
    assert "x-forwarded-for" not in config  # nobody trusted: the peer is the client
    result = _check(config, tmp_path)
    assert result.returncode == 0, result.stderr


def test_config_trusts_forwarded_for_only_from_named_proxies(tmp_path):
    trusted = parse_trusted("198.51.100.5, 203.0.113.0/24")
    assert trusted == ["198.51.100.5/32", "203.0.113.0/24"]
    config = render_config(
        bind=("127.0.0.1", 8000), serve=("127.0.0.1", 9000), key="k", routes={}, trusted=trusted
    )
    assert "acl rayweb_trusted src 198.51.100.5/32 203.0.113.0/24" in config
    assert "req.hdr_ip(x-forwarded-for,-1)" in config
    assert _check(config, tmp_path).returncode == 0
    with pytest.raises(ValueError, match="Suggestion: RAYWEB_TRUSTED_PROXIES="):
        parse_trusted("198.51.100.5, proxy.example")


class _Upstream:
    """A tiny HTTP server that answers with its name and the headers it got."""

    def __init__(self, name: str, keep_alive: bool = False) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                outer.peers.append(self.client_address[1])  # one port per connection
                body = name.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.seen: list[dict[str, str]] = []
        self.peers: list[int] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_haproxy_process_routes_reloads_and_stops(tmp_path):
    serve, replica = _Upstream("serve"), _Upstream("replica")
    port = _free_port()
    common = {"bind": ("127.0.0.1", port), "serve": ("127.0.0.1", serve.port), "key": "k"}
    proc = HAProxyProcess(tmp_path, render_config(routes={}, **common))
    try:
        proc.wait_listening("127.0.0.1", port)
        assert oct(os.stat(tmp_path / "haproxy.cfg").st_mode & 0o777) == "0o600"
        url = f"http://127.0.0.1:{port}/app/x"
        # spoofed gateway headers from a client are replaced
        spoof = {KEY_HEADER: "guess", CLIENT_HEADER: "203.0.113.9"}
        assert httpx.get(url, headers=spoof).text == "serve"  # not registered: Serve's proxy
        assert serve.seen[-1][KEY_HEADER] == "k"
        assert serve.seen[-1][CLIENT_HEADER] == "127.0.0.1"
        routes = {"app": Route("/app", {"r": Server("127.0.0.1", replica.port, 2)})}
        proc.reload(render_config(routes=routes, **common))
        assert httpx.get(url).text == "replica"  # the reload is applied when it returns
        assert httpx.get(f"http://127.0.0.1:{port}/application").text == "serve"
        proc.reload(render_config(routes={}, **common))
        assert httpx.get(url).text == "serve"
        with pytest.raises(RuntimeError, match="reload failed"):
            proc.reload("global\n    nonsense-keyword\n")
        assert httpx.get(url).text == "serve"  # a bad config keeps the old one serving
    finally:
        proc.stop()
        serve.close()
        replica.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_new_client_connection_goes_on_an_idle_connection_to_the_replica(tmp_path):
    """``http-reuse always`` in a replica's backend: a client's first request reuses an
    idle connection to the replica (no connect, no accept in the replica's Python)."""
    replica = _Upstream("replica", keep_alive=True)
    port = _free_port()
    routes = {"app": Route("/app", {"r": Server("127.0.0.1", replica.port, 4)})}
    config = render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 1), key="k", routes=routes)
    assert config.count("    http-reuse always") == 1  # the replica's backend only
    proc = HAProxyProcess(tmp_path, config)
    try:
        proc.wait_listening("127.0.0.1", port)
        for _ in range(3):
            with httpx.Client() as client:  # a new client connection each time
                assert client.get(f"http://127.0.0.1:{port}/app/x").text == "replica"
        assert len(replica.peers) == 3 and len(set(replica.peers)) == 1, replica.peers
    finally:
        proc.stop()
        replica.close()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path):
    serve = _Upstream("serve")
    port = _free_port()
    common = {"bind": ("127.0.0.1", port), "serve": ("127.0.0.1", serve.port), "key": "k"}
    proc = HAProxyProcess(tmp_path, render_config(routes={}, **common))
    try:
        proc.wait_listening("127.0.0.1", port)
        xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5"}
        httpx.get(f"http://127.0.0.1:{port}/", headers=xff)
        assert serve.seen[-1][CLIENT_HEADER] == "127.0.0.1"  # loopback is nobody's proxy
        trusted = parse_trusted("127.0.0.0/8")
        proc.reload(render_config(routes={}, trusted=trusted, **common))
        httpx.get(f"http://127.0.0.1:{port}/", headers=xff)
        assert serve.seen[-1][CLIENT_HEADER] == "203.0.113.5"  # the hop the proxy added
        httpx.get(f"http://127.0.0.1:{port}/")
        assert serve.seen[-1][CLIENT_HEADER] == "127.0.0.1"  # no header: the peer
    finally:
        proc.stop()
        serve.close()


def test_haproxy_dies_with_the_process_it_watches(tmp_path):
    """HAProxy and its keeper must not outlive the process they watch (the head's raylet
    for the gateway): they would hold the port."""
    port = _free_port()
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rayweb.services.haproxy import HAProxyProcess\n"
        "from rayweb.services.haproxy_config import render_config\n"
        f"p = HAProxyProcess(Path({str(tmp_path)!r}), render_config(bind=('127.0.0.1', {port}),"
        " serve=('127.0.0.1', 9), key='k', routes={}))\n"
        f"p.wait_listening('127.0.0.1', {port})\n"
        "print(p.master_pid, p.keeper_pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]  # type: ignore[union-attr]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again


async def _echo_scope(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = repr(
        (scope.get("client"), scope.get("root_path"), dict(scope.get("headers", ())))
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _call(app, headers, type_="http"):
    sent = []
    scope = {"type": type_, "path": "/p/x", "headers": headers, "client": ("127.0.0.1", 5)}

    async def receive():
        return {"type": "websocket.connect"} if type_ == "websocket" else {"type": "http.request"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_gateway_trust_takes_client_only_with_the_key():
    good = [(KEY_HEADER.encode(), b"s3cret"), (CLIENT_HEADER.encode(), b"198.51.100.7")]
    app = GatewayTrust(_echo_scope, "s3cret", require=True)
    sent = asyncio.run(_call(app, good + [(b"x-other", b"1")]))
    client, _root, headers = eval(sent[1]["body"])  # noqa: S307 - our own repr
    assert client == ("198.51.100.7", 0)
    assert headers == {b"x-other": b"1"}  # the gateway's headers are not the app's business

    wrong = [(KEY_HEADER.encode(), b"guess"), (CLIENT_HEADER.encode(), b"198.51.100.7")]
    sent = asyncio.run(_call(app, wrong))
    assert sent[0]["status"] == 403
    assert asyncio.run(_call(app, [], "websocket")) == [{"type": "websocket.close", "code": 1008}]

    optional = GatewayTrust(_echo_scope, "s3cret", require=False)  # Serve's path
    client, _root, headers = eval(asyncio.run(_call(optional, wrong))[1]["body"])  # noqa: S307
    assert client == ("127.0.0.1", 5)  # a wrong key does not move the client
    assert headers == {}
    no_key = GatewayTrust(_echo_scope, None, require=False)  # no gateway in this cluster
    client, _root, _h = eval(asyncio.run(_call(no_key, good))[1]["body"])  # noqa: S307
    assert client == ("127.0.0.1", 5)


def test_route_prefix_and_counting():
    app = Counted(RoutePrefix(_echo_scope, "/p"))
    _client, root, _h = eval(asyncio.run(_call(app, []))[1]["body"])  # noqa: S307
    assert root == "/p"
    assert app.ongoing == 0 and app.idle.is_set()

    async def slow(scope, receive, send):
        await asyncio.sleep(0.05)

    counted = Counted(slow)

    async def two():
        task = asyncio.ensure_future(_call(counted, []))
        await asyncio.sleep(0.01)
        during = (counted.ongoing, counted.idle.is_set())
        await task
        return during, (counted.ongoing, counted.idle.is_set())

    assert asyncio.run(two()) == ((1, False), (0, True))


def test_direct_server_serves_on_its_own_port_and_drains():
    async def slow_app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def main():
        server = DirectServer(slow_app, host="127.0.0.1", ws_max_size=None)
        await server.start()
        async with httpx.AsyncClient() as client:
            request = asyncio.ensure_future(client.get(f"http://127.0.0.1:{server.port}/"))
            await asyncio.sleep(0.1)
            assert server.ongoing == 1
            await server.stop(grace_s=5)  # waits for the request in flight
            response = await request
        return server.port, response.text

    port, text = asyncio.run(main())
    assert text == "done"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # closed after the drain


def test_swappable_and_lifespan_of_a_swapped_in_app():
    from contextlib import asynccontextmanager

    from rayweb.replica.hotswap import Swappable, start_lifespan

    events: list[str] = []

    def make(version: str) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app):
            events.append(f"start {version}")
            yield {"version": version}
            events.append(f"stop {version}")

        api = FastAPI(lifespan=lifespan)

        @api.get("/")
        async def root(request: Request) -> dict:
            return {"code": version, "state": getattr(request.state, "version", None)}

        return api

    async def get(app) -> dict:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/")).json()

    async def scenario():
        swappable = Swappable(make("v1"))
        before = await get(swappable)
        v2 = make("v2")
        state, stop = await start_lifespan(v2)
        swappable.swap(v2, state)
        after = await get(swappable)
        await stop()

        async def broken_lifespan(scope, receive, send):
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

        with pytest.raises(RuntimeError, match="no database"):
            await start_lifespan(broken_lifespan)

        async def plain(scope, receive, send):  # no lifespan support at all
            if scope["type"] == "lifespan":
                raise RuntimeError("lifespan not supported")

        plain_state, plain_stop = await start_lifespan(plain)
        await plain_stop()
        return before, after, plain_state

    before, after, plain_state = asyncio.run(scenario())
    assert before == {"code": "v1", "state": None}
    assert after == {"code": "v2", "state": "v2"}  # the new app's lifespan state reaches it
    assert events == ["start v2", "stop v2"]
    assert plain_state == {}


def _event_stream_server(events: int, gap_s: float) -> tuple[socket.socket, list[float]]:
    """A raw HTTP/1.1 server that answers one request with ``events`` chunked SSE events,
    ``gap_s`` apart; returns the listening socket and the send times it records."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    sent: list[float] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for i in range(events):
                time.sleep(gap_s)
                event = b"data: %d\n\n" % i
                sent.append(time.monotonic())
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            conn.sendall(b"0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return listener, sent


def test_streamed_events_leave_the_gateway_at_once(tmp_path):
    """Each SSE event reaches the client when it is sent, not in a burst later."""
    listener, sent = _event_stream_server(events=20, gap_s=0.05)
    upstream = listener.getsockname()[1]
    port = _free_port()
    routes = {"sse": Route("/sse", {"r": Server("127.0.0.1", upstream, 4)})}
    config = render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes=routes)
    proc = HAProxyProcess(tmp_path, config)
    arrived: list[float] = []
    try:
        proc.wait_listening("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /sse/ HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while len(arrived) < 20:
                chunk = client.recv(65536)
                assert chunk, "the stream ended early"
                received += chunk
                arrived += [time.monotonic()] * (received.count(b"data: ") - len(arrived))
    finally:
        proc.stop()
        listener.close()
    late_ms = sorted((a - s) * 1000 for a, s in zip(arrived, sent, strict=True))
    # Without `option http-no-delay` events arrived ~100-200 ms late, in bursts.
    assert late_ms[len(late_ms) // 2] < 10, late_ms
    assert late_ms[-1] < 40, late_ms


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/r/x", timeout=1).text == "replica"
    except httpx.HTTPError:
        return False


def test_the_keeper_restarts_haproxy_after_a_killed_worker_or_master(tmp_path):
    replica = _Upstream("replica")
    port = _free_port()
    routes = {"r": Route("/r", {"a": Server("127.0.0.1", replica.port, 4)})}
    config = render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes=routes)
    proc = HAProxyProcess(tmp_path, config)
    try:
        proc.wait_listening("127.0.0.1", port)
        assert _answers(port)
        for victim in ("worker", "master"):
            master = proc.master_pid
            assert master is not None
            worker = int(Path(f"/proc/{master}/task/{master}/children").read_text().split()[0])
            os.kill(worker if victim == "worker" else master, 9)
            assert _wait_for(lambda m=master: proc.master_pid not in (None, m)), victim
            assert _wait_for(lambda: _answers(port)), f"no answer after the {victim} was killed"
            # the restarted HAProxy still takes reloads (and serves the new table)
            proc.reload(
                render_config(
                    bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes=routes
                )
            )
            assert _answers(port)
        events = (tmp_path / "events.log").read_text().splitlines()
        assert len(events) == 2, events
        assert "after one of its workers was killed" in events[0]
        assert "killed by SIGKILL" in events[1]
        # a restarted actor adopts the running HAProxy and can stop it
        adopted = HAProxyProcess.adopt(tmp_path)
        assert adopted is not None and adopted.keeper_pid == proc.keeper_pid
        master, keeper = proc.master_pid, proc.keeper_pid
        assert master is not None and keeper is not None
        adopted.stop()
        assert _wait_for(lambda: not _alive(master) and not _alive(keeper))
        assert HAProxyProcess.adopt(tmp_path) is None
    finally:
        proc.stop()
        replica.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_bad_config_never_replaces_the_last_good_one(tmp_path):
    port = _free_port()
    good = render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes={})
    proc = HAProxyProcess(tmp_path, good)
    try:
        proc.wait_listening("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="bad configuration"):
            proc.reload("global\n    nonsense-keyword\n")
        assert (tmp_path / "haproxy.cfg").read_text() == good  # what a restart would use
    finally:
        proc.stop()


def test_gateway_refuses_declared_oversized_bodies_unread_and_routes_encoded_paths(tmp_path):
    """A 5 GB Content-Length gets 413 from HAProxy itself, warm or cold (no replica), and
    nothing reaches a server; a percent-encoded prefix reaches the endpoint's replica."""
    serve, replica = _Upstream("serve"), _Upstream("replica")
    port = _free_port()
    routes = {
        "warm": Route("/warm", {"r": Server("127.0.0.1", replica.port, 4)}, max_body=1000),
        "cold": Route("/cold", {}, max_body=1000),
        "default": Route("/default", {}, max_body=4 * 1024**3),  # Limits' default: over 2^32
    }
    common = {"bind": ("127.0.0.1", port), "serve": ("127.0.0.1", serve.port), "key": "k"}
    proc = HAProxyProcess(tmp_path, render_config(routes=routes, **common))
    try:
        proc.wait_listening("127.0.0.1", port)
        for path in ("/warm/up", "/cold/up", "/w%61rm/up", "/%63old", "/default/up"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(
                    f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000000\r\n\r\n".encode()
                    + b"x" * 65536
                )
                reply = client.recv(65536).decode()
            assert reply.startswith("HTTP/1.1 413"), (path, reply)
            assert "larger than the limit of" in reply
        assert serve.seen == [] and replica.seen == []  # refused before any server saw it
        assert httpx.post(f"http://127.0.0.1:{port}/warm/up", content=b"x" * 1000).text == "replica"
        assert httpx.get(f"http://127.0.0.1:{port}/w%61rm/x").text == "replica"
        assert httpx.get(f"http://127.0.0.1:{port}/cold/x").text == "serve"
        assert httpx.get(f"http://127.0.0.1:{port}/warmer").text == "serve"
    finally:
        proc.stop()
        serve.close()
        replica.close()


def test_gateway_holds_a_slow_small_body_and_answers_408_itself(tmp_path):
    replica = _Upstream("replica")
    port = _free_port()
    routes = {"r": Route("/r", {"a": Server("127.0.0.1", replica.port, 4)}, body_timeout=0.5)}
    config = render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes=routes)
    assert "    http-request wait-for-body time 500ms at-least 16k" in config.splitlines()
    proc = HAProxyProcess(tmp_path, config)
    try:
        proc.wait_listening("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST /r/x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")
            reply = client.recv(65536).decode()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert replica.seen == []  # the replica never saw it
        assert httpx.post(f"http://127.0.0.1:{port}/r/x", content=b"a" * 100).text == "replica"
    finally:
        proc.stop()
        replica.close()
