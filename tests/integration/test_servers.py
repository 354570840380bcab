"""``@app.server`` on the real cluster: two containers of a stand-alone server, sticky
sessions, proxy auth on by default, 429 above ``max_concurrency``, Modal's startup-timeout
message with the server's output (and no orphan), and a dead server replaced. Requests take
the direct hop (the gateway's HAProxy straight to the server's port) and see the same as on
the replica's path (``RAYWEB_DIRECT_HOP=0``); a token made before digests were kept moves an
authenticated route back to the replica's path, where it still works."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import psutil
import pytest

import rayweb
from rayweb.exception import DeploymentError
from rayweb.services.store import Store
from tests.integration.conftest import example_app

SESSIONS = [f"user-{i}" for i in range(12)]


@pytest.fixture(scope="module")
def servers(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    app = example_app("server_sticky.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    yield handle.urls, app
    handle.stop()


def _wait_for(check, limit_s: float, what: str):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {limit_s} s: {what}")


def test_sessions_stick_to_their_container_and_new_ones_spread(servers):
    urls, app = servers
    url = urls["Counter"]
    assert app.registered_servers["Counter"].get_url() == url  # Server.get_url()
    assert url.endswith("/server-sticky-counter")
    with httpx.Client() as client:
        homes: dict[str, int] = {}
        for round_ in range(1, 4):
            for session in SESSIONS:
                seen = client.get(url + "/hi", headers={"Modal-Session-Id": session}).json()
                assert seen["path"] == "/hi"  # the route prefix is stripped
                homes.setdefault(session, seen["container"])
                assert seen["container"] == homes[session]  # the same container each time
                assert seen["count"] == round_  # which counted every request of the session
        assert len(set(homes.values())) == 2  # new sessions are spread over both
        plain = Counter(client.get(url).json()["container"] for _ in range(10))
        assert len(plain) == 2  # without the header too


def test_proxy_auth_is_on_by_default_and_max_concurrency_answers_429(servers):
    urls, _app = servers
    url = urls["Guarded"]
    r = httpx.get(url)
    assert r.status_code == 401
    key, secret = Store().create_token("servers")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    _wait_for(lambda: httpx.get(url, headers=headers).status_code == 200, 30, "token accepted")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(httpx.get, url + "/slow", headers=headers, timeout=30)]
        time.sleep(0.5)  # the first one holds the container's only slot
        futures += [pool.submit(httpx.get, url + "/fast", headers=headers) for _ in range(2)]
        codes = sorted(f.result().status_code for f in futures)
    assert codes == [200, 429, 429]


def _direct(label: str) -> bool:
    import ray

    from rayweb.services.gateway import find_gateway

    return bool(ray.get(find_gateway().table.remote())[label]["direct"])


def test_requests_take_the_direct_hop_and_revoked_tokens_are_refused(servers):
    urls, _app = servers
    assert _direct("server-sticky-counter") and _direct("server-sticky-guarded")
    url = urls["Guarded"]
    store = Store()
    key, secret = store.create_token("revoked-soon")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    _wait_for(lambda: httpx.get(url, headers=headers).status_code == 200, 30, "token accepted")
    store.revoke_token(key)
    _wait_for(lambda: httpx.get(url, headers=headers).status_code == 401, 10, "token refused")


def test_a_token_without_a_digest_keeps_auth_on_the_replicas_path(servers):
    urls, _app = servers
    url = urls["Guarded"]
    store = Store()
    key, secret = store.create_token("from-an-older-rayweb")
    with store._locked() as data:  # as a token made before digests were kept
        del data["tokens"][key]["digest"]
    _wait_for(lambda: not _direct("server-sticky-guarded"), 15, "auth back on the replicas")
    assert _direct("server-sticky-counter")  # a route without auth needs no digests
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    _wait_for(lambda: httpx.get(url, headers=headers).status_code == 200, 30, "old token works")
    assert httpx.get(url).status_code == 401
    store.revoke_token(key)
    _wait_for(lambda: _direct("server-sticky-guarded"), 15, "auth at HAProxy again")
    assert httpx.get(url, headers=headers).status_code == 401


ECHO = """
import http.server, json, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/go"):
            self.send_response(302)
            self.send_header("location", "/login")
            self.send_header("set-cookie", "seen=1; Path=/; HttpOnly")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = json.dumps({"path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.mark.parametrize("hop", ["direct", "replica"])
def test_the_server_sees_the_same_request_on_either_path(served, monkeypatch, hop):
    if hop == "replica":
        monkeypatch.setenv("RAYWEB_DIRECT_HOP", "0")
    app = rayweb.App(f"server-echo-{hop}")

    @app.server(port=8210, unauthenticated=True, serialized=True)
    class Echo:
        @rayweb.enter()
        def start(self):
            self.proc = subprocess.Popen([sys.executable, "-c", ECHO, "8210"])

    url = served(app).urls["Echo"]
    label = url.rsplit("/", 1)[1]
    assert _direct(label) == (hop == "direct")
    seen = httpx.get(url + "/a/b?c=1", headers={"X-Forwarded-For": "203.0.113.7"}).json()
    assert seen["path"] == "/a/b?c=1"
    headers = seen["headers"]
    assert headers["x-forwarded-prefix"] == f"/{label}"
    assert headers["x-forwarded-proto"] == "http"
    assert "127.0.0.1" in headers["x-forwarded-for"]
    assert not [h for h in headers if h.startswith("x-rayweb")]  # the gateway's own headers
    redirect = httpx.get(url + "/go")
    assert (redirect.status_code, redirect.headers["location"]) == (302, f"/{label}/login")
    assert redirect.headers["set-cookie"] == f"seen=1; Path=/{label}; HttpOnly"  # not the host's


def test_a_dead_server_fails_fast_and_its_container_is_replaced(servers):
    urls, _app = servers
    url = urls["Counter"]
    with httpx.Client() as client:
        victim = client.get(url, headers={"Modal-Session-Id": "victim"}).json()["container"]
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        codes = []
        while time.monotonic() - start < 60:
            r = client.get(url, headers={"Modal-Session-Id": "victim"}, timeout=10)
            codes.append(r.status_code)
            if r.status_code == 200:
                break
            time.sleep(0.2)
        # The session moves to a live container at once (HAProxy's retries and health
        # checks) or after a short 502 window; it never hangs.
        assert codes[-1] == 200, codes
        assert r.json()["container"] != victim

    # Serve replaces the dead container: two live servers again, the victim's gone
    def two_live() -> bool:
        seen = {httpx.get(url).json()["container"] for _ in range(10)}
        return len(seen) == 2 and victim not in seen

    _wait_for(two_live, 60, "the dead server's container replaced")


def test_startup_timeout_has_modals_message_the_output_and_leaves_no_orphan(served):
    app = rayweb.App("server-late")
    marker = "server-that-never-listens-7c1"

    @app.server(port=8123, startup_timeout=2, unauthenticated=True, serialized=True)
    class Late:
        @rayweb.enter()
        def start(self):
            print("warming up the model...", flush=True)
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])

    with pytest.raises(DeploymentError) as info:
        served(app)
    text = str(info.value) + (info.value.user_traceback or "")
    assert "Waited too long for port 8123 to start accepting connections" in text
    assert "warming up the model..." in text  # the server's last output lines
    time.sleep(1)
    orphans = [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert not orphans


def test_server_from_name_finds_the_running_server(servers):
    urls, _app = servers
    found = rayweb.Server.from_name("server-sticky", "Counter")
    assert found.get_url() in (urls["Counter"], urls["Counter"] + "-dev")
    with pytest.raises(rayweb.exception.NotFoundError, match="Lookup failed for Function 'Nope'"):
        rayweb.Server.from_name("server-sticky", "Nope").get_url()


def test_a_port_taken_on_the_node_is_not_taken_for_the_server(ray_cluster):
    """A server that is not written in Python binds the declared port itself; when another
    process holds it, the sidecar must not proxy to that process: a clear error instead."""
    from rayweb.compiler import compile_endpoint
    from rayweb.replica.webserver import WebServerSidecar

    app = rayweb.App("port-taken")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        native = f"import socket; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen()"

        @app.server(port=port, startup_timeout=3, serialized=True)
        class Native:
            @rayweb.enter()
            def start(self):
                # -I: no site hooks, so no port mapping, as for a server in another language
                subprocess.Popen([sys.executable, "-I", "-c", native])

        sidecar = WebServerSidecar(compile_endpoint(Native.function).payload)
        with pytest.raises(TimeoutError, match=f"Port {port} was already taken on this node"):
            sidecar._start({})
        sidecar.stop()
