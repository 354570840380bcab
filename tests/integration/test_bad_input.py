"""Hostile and broken requests over raw sockets, through the gateway: each gets a clear 4xx
(or a close) from the gateway or the replica, nothing reaches the app that should not, and
the endpoint keeps answering. ``python bench/faults.py`` puts the rows in bench/RESULTS.md.
"""

# No `from __future__ import annotations`: the endpoint below is shipped by value.

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import rayweb
from tests.integration.test_cold_path import _gateway_side_pids
from tests.integration.test_data_path import BOUND_MIB, PeakRSS

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024

bad = rayweb.App("bad-input", limits=rayweb.Limits(rate_limit=None, body_timeout=2))


@bad.function(serialized=True, min_containers=1)
@rayweb.concurrent(max_inputs=8)
@rayweb.asgi_app()
def target():
    from fastapi import FastAPI, Request, WebSocket

    api = FastAPI()
    seen: list[str] = []

    @api.get("/seen")
    async def paths():
        return seen

    @api.get("/pid")
    async def pid():
        return os.getpid()

    @api.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        while True:
            await socket.send_bytes(await socket.receive_bytes())

    @api.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request):
        seen.append(path)
        return {"path": path, "bytes": len(await request.body())}

    return api


@pytest.fixture(scope="module")
def url(ray_cluster: None) -> Iterator[str]:
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(bad, port=TEST_PORT, quiet=True)
    try:
        yield handle.urls["target"]
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def serving(url: str) -> list[int]:
    """Every process a request passes: HAProxy, the gateway actor, Serve's proxy, the replica."""
    pids = [pid for group in _gateway_side_pids().values() for pid in group]
    return pids + [httpx.get(url + "/pid", timeout=30).json()]


@pytest.fixture(autouse=True)
def bounded(serving: list[int], request: pytest.FixtureRequest) -> Iterator[None]:
    """No serving process grows by more than 256 MiB while a bad request is handled."""
    with PeakRSS(serving) as peak:
        yield
    worst = max(peak.growth_mib().values(), default=0.0)
    _record({"growth": request.node.name, "worst_mib": round(worst, 1)})
    assert worst <= BOUND_MIB, f"a serving process grew {worst:.0f} MiB"


def _exchange(
    url: str, payload: bytes, *, trickle_s: float = 0.0, wait_s: float = 30, head: bytes = b""
) -> str:
    """Send ``head`` at once, then ``payload`` (a byte every ``trickle_s`` if set); return
    what the server answered before closing or ``wait_s`` passed ("" when it just closed)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        if head:
            sock.sendall(head)
        if trickle_s:
            sock.settimeout(trickle_s)
            for byte in payload:
                try:
                    sock.sendall(bytes([byte]))
                    if reply := sock.recv(65536):
                        return reply.decode(errors="replace")
                    return ""  # closed without a word
                except TimeoutError:
                    continue
                except OSError:
                    break
            sock.settimeout(wait_s)
        else:
            with contextlib.suppress(OSError):  # refused mid-body: the answer is there
                sock.sendall(payload)
        try:
            return sock.recv(65536).decode(errors="replace")
        except OSError:
            return ""


def _record(row: dict) -> None:
    report = os.environ.get("RAYWEB_FAULTS_REPORT")
    if report:
        with open(report.replace(".jsonl", "-bad.jsonl"), "a") as out:
            out.write(json.dumps(row) + "\n")


def _status(reply: str) -> int | None:
    return int(reply.split()[1]) if reply.startswith("HTTP/1.") else None


def _still_serving(url: str) -> None:
    r = httpx.get(url + "/ok", timeout=30)
    assert r.status_code == 200 and r.json()["path"] == "ok"


CASES = {
    # name: (request bytes, statuses accepted, trickle seconds)
    "malformed request line": (b"GARBAGE\r\n\r\n", {400}, 0.0),
    "100 KB header": (
        b"GET /PATH/h HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n",
        {400, 431},
        0.0,
    ),
    "bad chunk size": (
        b"POST /PATH/c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
        {400},
        0.0,
    ),
    "5 GB Content-Length": (
        b"POST /PATH/big HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000000\r\n\r\n" + b"x" * MIB,
        {413},
        0.0,
    ),
    "5 GB Content-Length, encoded path": (
        b"POST /ENCODED/big HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000000\r\n\r\n",
        {413},
        0.0,
    ),
    "slow body (1 byte / 0.5 s, body_timeout 2 s)": (
        b"POST /PATH/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n|" + b"x" * 100,
        {408},
        0.5,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_refused_and_the_endpoint_keeps_serving(url: str, case: str) -> None:
    payload, accepted, trickle = CASES[case]
    path = urlsplit(url).path
    encoded = path.replace("-", "%2D")
    payload = payload.replace(b"/PATH", path.encode()).replace(b"/ENCODED", encoded.encode())
    head, _, body = payload.rpartition(b"|") if trickle else (b"", b"", payload)
    started = time.monotonic()
    reply = _exchange(url, body, trickle_s=trickle, head=head)
    status = _status(reply)
    _record({"case": case, "status": status, "seconds": round(time.monotonic() - started, 3)})
    assert status in accepted, reply[:300]
    seen = httpx.get(url + "/seen", timeout=30).json()
    assert not {"h", "c", "big", "slow"} & set(seen), seen  # none reached the app
    _still_serving(url)


def test_cl_te_smuggling_cannot_sneak_a_second_request(url: str) -> None:
    path = urlsplit(url).path
    smuggled = f"GET {path}/smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    payload = (
        f"POST {path}/front HTTP/1.1\r\nhost: x\r\ncontent-length: {5 + len(smuggled)}\r\n"
        f"transfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    ).encode()
    reply = _exchange(url, payload, wait_s=5)
    time.sleep(0.5)
    seen = httpx.get(url + "/seen", timeout=30).json()
    _record({"case": "CL+TE smuggling", "status": _status(reply), "seconds": None})
    assert "smuggled" not in seen, seen
    assert _status(reply) in (200, 400), reply[:300]
    _still_serving(url)


def test_slowloris_headers_get_408_from_the_gateway(url: str) -> None:
    path = urlsplit(url).path
    started = time.monotonic()
    reply = _exchange(
        url,
        f"GET {path}/loris HTTP/1.1\r\nhost: x\r\nx-a: {'b' * 40}".encode(),
        trickle_s=0.5,
        wait_s=30,
    )
    _record(
        {
            "case": "slowloris (headers, 1 byte / 0.5 s)",
            "status": _status(reply),
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    assert _status(reply) == 408 or reply == "", reply[:300]
    assert "loris" not in httpx.get(url + "/seen", timeout=30).json()
    _still_serving(url)


def test_websocket_message_over_2_mib_closes_1009(url: str) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=30, max_size=None) as ws:
        ws.send(b"x" * (2 * MIB))
        assert len(ws.recv(timeout=30)) == 2 * MIB  # exactly the limit passes
        ws.send(b"x" * (2 * MIB + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    code = closed.value.rcvd.code if closed.value.rcvd else None
    _record({"case": "WebSocket message 2 MiB + 1", "status": code, "seconds": None})
    assert code == 1009
    _still_serving(url)
