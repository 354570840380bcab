"""Slow clients (slow request bodies) must not hold a replica's slots: with 100 of them
connected to a ``max_inputs=1`` endpoint, legit requests are still answered at once and the
endpoint does not scale out. Behaviour checks with wide margins, not speed measurements."""

# No `from __future__ import annotations`: the endpoint below is shipped by value.

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

import rayweb
from tests.integration.test_data_path import _running_replicas

pytestmark = pytest.mark.cluster

slow_app = rayweb.App("slow-peers", limits=rayweb.Limits(rate_limit=None, body_timeout=8))


@slow_app.function(serialized=True, min_containers=1, max_containers=3, scaledown_window=5)
@rayweb.fastapi_endpoint(method="POST")
def echo(body: dict) -> dict:
    return body


class SlowBodies:
    """``n`` connections, each declaring a 200-byte body and sending 1 byte every 2 s."""

    def __init__(self, url: str, n: int) -> None:
        parts = urlsplit(url)
        self.addr = (parts.hostname, parts.port)
        self.path = parts.path
        self.n = n
        self.done = threading.Event()
        self.replies: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SlowBodies":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        socks = []
        for _ in range(self.n):
            sock = socket.create_connection(self.addr, timeout=30)
            sock.sendall(
                f"POST {self.path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: 200\r\n\r\n{{".encode()
            )
            socks.append(sock)
        while not self.done.wait(2.0):
            for sock in list(socks):
                try:
                    sock.setblocking(False)
                    try:
                        reply = sock.recv(4096)
                    except BlockingIOError:
                        reply = None
                    sock.setblocking(True)
                    if reply is not None:
                        self.replies.append(reply)
                        socks.remove(sock)
                        sock.close()
                        continue
                    sock.sendall(b" ")
                except OSError:
                    socks.remove(sock)
        for sock in socks:
            sock.close()


def test_slow_bodies_do_not_hold_slots_or_scale_the_endpoint(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(slow_app, port=TEST_PORT, quiet=True)
    try:
        url = handle.urls["echo"]
        name = handle.endpoints[0].name
        assert httpx.post(url, json={"warm": 1}, timeout=60).json() == {"warm": 1}
        worst = 0.0
        with SlowBodies(url, 100) as slow:
            time.sleep(1.0)
            for i in range(20):
                started = time.monotonic()
                r = httpx.post(url, json={"i": i}, timeout=60)
                worst = max(worst, time.monotonic() - started)
                assert r.json() == {"i": i}
                time.sleep(0.25)
            replicas = _running_replicas(name)
            deadline = time.monotonic() + 30
            while len(slow.replies) < 100 and time.monotonic() < deadline:
                time.sleep(0.5)
        # Held by the gateway, not by the replica's one slot: no legit request waited for
        # a slow one (which would take the 8 s body_timeout).
        assert worst < 4.0, worst
        assert replicas == 1, "slow clients scaled the endpoint out"
        assert len(slow.replies) == 100
        assert all(reply.startswith(b"HTTP/1.1 408") for reply in slow.replies), slow.replies[:3]
    finally:
        handle.stop()
