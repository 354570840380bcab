"""The gateway's holder without Ray: a real HAProxy whose cold backend's only server is the
holder, which holds a request until ``wake`` answers, relays it (chunked bodies too) to the
woken replica's port, answers refusals from ``admit`` itself, and falls back to Serve's proxy
when an endpoint cannot be woken."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request  # module level: FastAPI resolves annotations here

from rayweb.common import ADMITTED_HEADER, KEY_HEADER
from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import Route, render_config
from rayweb.services.holder import Head, Holder, match, response

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Replica:
    """A replica's own port: uvicorn in a thread, answering its name, the headers it got and
    the digest of the body it read (slowly, so the relay must apply backpressure)."""

    def __init__(self, name: str) -> None:
        api = FastAPI()
        self.seen: list[dict[str, str]] = []

        @api.api_route("/{path:path}", methods=["GET", "POST"])
        async def anything(request: Request) -> dict[str, object]:
            self.seen.append(dict(request.headers))
            digest, total = hashlib.sha256(), 0
            async for chunk in request.stream():
                digest.update(chunk)
                total += len(chunk)
                await asyncio.sleep(len(chunk) / (256 * MIB))
            return {"name": name, "bytes": total, "sha": digest.hexdigest()}

        self.port = _free_port()
        config = uvicorn.Config(api, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _Cluster:
    """HAProxy with a cold route ``/cold`` (no server but the holder) and a fallback replica
    standing in for Serve's proxy; ``release`` lets the held wake-up answer."""

    def __init__(self, tmp_path: Path, admit=None, wake_fails: bool = False) -> None:
        self.replica, self.serve = _Replica("replica"), _Replica("serve")
        self.released = threading.Event()
        self.woken: list[str] = []

        async def wake(app: str) -> tuple[str, int] | None:
            self.woken.append(app)
            await asyncio.to_thread(self.released.wait, 30)
            if wake_fails:
                raise RuntimeError("no such app")
            return "127.0.0.1", self.replica.port

        routes = {"cold": Route("/cold", {}), "other": Route("/cold-other", {})}
        serve = ("127.0.0.1", self.serve.port)
        self.holder = Holder(
            lambda: {name: r.prefix for name, r in routes.items()}, wake, serve, admit
        )
        self.holder.start_in_thread()
        self.port = _free_port()
        config = render_config(
            bind=("127.0.0.1", self.port),
            serve=serve,
            key="k3y",
            routes=routes,
            holder=self.holder.address,
        )
        self.proc = HAProxyProcess(tmp_path, config)
        self.proc.wait_listening("127.0.0.1", self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.stop()
        self.replica.close()
        self.serve.close()


@pytest.fixture
def cluster(tmp_path):
    made: list[_Cluster] = []

    def make(**kwargs) -> _Cluster:
        folder = tmp_path / str(len(made))
        folder.mkdir()
        made.append(_Cluster(folder, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_match_uses_the_decoded_path_and_the_longest_prefix():
    prefixes = {"a": "/a", "ab": "/a-b", "root": "/"}
    assert match(prefixes, "/a/x") == "a"
    assert match(prefixes, "/a-b") == "ab"
    assert match(prefixes, "/a-b/y") == "ab"
    assert match(prefixes, "/a-bc") == "root"
    assert match({"a": "/a"}, "/ab") is None
    assert Head(b"GET /%61-b/x?q=1 HTTP/1.1\r\nHost: h\r\n\r\n").path == "/a-b/x"


def test_a_cold_request_is_held_until_woken_then_relayed_with_its_chunked_body(cluster):
    c = cluster()
    block = b"u" * MIB
    digest = hashlib.sha256(block * 64).hexdigest()

    def chunks():
        for _ in range(64):
            yield block

    with httpx.Client(timeout=60) as client, pytest.raises(httpx.ReadTimeout):
        client.get(c.url + "/cold/x", timeout=1.0)  # held: no answer while nothing woke
    assert c.woken == ["cold"] and c.holder.held == 1
    c.released.set()
    deadline = time.monotonic() + 10
    while c.holder.held and time.monotonic() < deadline:
        time.sleep(0.05)
    r = httpx.post(c.url + "/cold%2Dother/up", content=chunks(), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "replica", "bytes": 64 * MIB, "sha": digest}
    assert c.woken[-1] == "other"  # matched on the decoded path, longest prefix
    got = c.replica.seen[-1]
    assert got[KEY_HEADER] == "k3y" and got["transfer-encoding"] == "chunked"
    assert ADMITTED_HEADER not in got  # nothing admitted it (no admission here)
    assert c.serve.seen == []  # Serve's proxy saw nothing


def test_admission_refuses_without_waking_and_marks_what_it_let_through(cluster):
    async def admit(app: str, head: Head) -> bytes | None:
        if head.header(b"modal-key") != b"wk-good":
            return response(401, "Unauthorized", b'{"detail": "missing credentials"}')
        return None

    c = cluster(admit=admit)
    c.released.set()
    refused = httpx.post(c.url + "/cold/x", content=b"x" * MIB)
    assert refused.status_code == 401 and refused.json() == {"detail": "missing credentials"}
    assert c.woken == [] and c.replica.seen == []
    ok = httpx.get(c.url + "/cold/x", headers={"modal-key": "wk-good"})
    assert ok.json()["name"] == "replica"
    assert c.replica.seen[-1][ADMITTED_HEADER] == "1"
    # a client cannot claim admission itself: HAProxy strips the header
    c2 = httpx.get(c.url + "/cold/x", headers={"modal-key": "wk-good", ADMITTED_HEADER: "yes"})
    assert c2.status_code == 200 and c.replica.seen[-1][ADMITTED_HEADER] == "1"


def test_an_endpoint_that_cannot_be_woken_goes_to_serve_s_proxy(cluster):
    c = cluster(wake_fails=True)
    c.released.set()
    r = httpx.post(c.url + "/cold/x", content=b"abc")
    assert r.json()["name"] == "serve" and r.json()["bytes"] == 3
    assert ADMITTED_HEADER not in c.serve.seen[-1]
