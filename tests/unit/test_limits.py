"""LimitsMiddleware in-process: 413, 504, 429 + Retry-After, WebSocket 1009."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi import FastAPI, Request, WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from rayweb import Limits
from rayweb.exception import InvalidError
from rayweb.replica.chain import Chain
from rayweb.replica.limits import LimitsMiddleware
from rayweb.services.ratelimit import TokenBucket, local_limiter

calls: list[str] = []
api = FastAPI()


@api.post("/upload")
async def upload(request: Request) -> dict:
    calls.append("upload")
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return {"bytes": total}


@api.get("/slow")
async def slow(seconds: float) -> dict:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@api.get("/")
def root() -> dict:
    return {"ok": True}


@api.websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await socket.accept()
    try:
        while True:
            await socket.send_bytes(await socket.receive_bytes())
    except WebSocketDisconnect:
        pass


def client(limits: Limits) -> TestClient:
    acquire = (
        local_limiter(limits.rate_limit, limits.rate_limit_burst_s) if limits.rate_limit else None
    )
    return TestClient(Chain(api, max_inputs=64, limits=limits, acquire=acquire).serve_path)


def test_declared_body_over_the_limit_is_refused_before_the_app_runs():
    calls.clear()
    c = client(Limits(max_request_body=1000, rate_limit=None))
    r = c.post("/upload", content=b"x" * 1001)
    assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]
    assert calls == []
    assert c.post("/upload", content=b"x" * 1000).json() == {"bytes": 1000}


def test_streamed_body_over_the_limit_gets_413():
    c = client(Limits(max_request_body=10_000, rate_limit=None))

    def chunks(n):
        for _ in range(n):
            yield b"y" * 1000

    assert c.post("/upload", content=chunks(10)).json() == {"bytes": 10_000}
    assert c.post("/upload", content=chunks(11)).status_code == 413


def test_request_timeout_answers_504():
    c = client(Limits(request_timeout=0.3, rate_limit=None))
    assert c.get("/slow", params={"seconds": 0.01}).status_code == 200
    r = c.get("/slow", params={"seconds": 5})
    assert r.status_code == 504 and "0.3s" in r.json()["detail"]


def test_rate_limit_429_with_retry_after():
    c = client(Limits(rate_limit=20, rate_limit_burst_s=1))
    responses = [c.get("/") for _ in range(40)]
    statuses = [r.status_code for r in responses]
    assert statuses[:20] == [200] * 20  # the burst
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 10  # refills at 20/s while the loop runs
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)


def test_after_a_pause_a_request_does_not_wait_for_the_shared_limiter():
    """A lease that expired with tokens left, or ran out no faster than the rate: the next
    request goes on at once and the lease is renewed meanwhile, with one token more for that
    request; a client that used its lease up faster waits for the limiter."""
    bucket = local_limiter(200, 1)  # leases of 200 * 0.02 = 4 tokens
    asked: list[int] = []
    gate = threading.Event()  # the far-away limiter answers only while this is set

    async def far_acquire(client: str, wanted: int) -> tuple[int, float]:
        asked.append(wanted)
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return await bucket(client, wanted)

    middleware = LimitsMiddleware(api, Limits(rate_limit=200, rate_limit_burst_s=1), far_acquire)

    def renewed() -> None:
        gate.set()
        deadline = time.monotonic() + 10
        while middleware.refills and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not middleware.refills

    with TestClient(middleware) as c:
        gate.set()
        assert c.get("/").status_code == 200  # no lease yet: it asked the limiter first
        assert asked == [4] and middleware.leases["testclient"][0] == 3
        now = time.monotonic()
        for lease in ((3, now - 1, now + 60), (0, now + 60, now - 1)):  # expired; spent slowly
            middleware.leases["testclient"] = lease
            gate.clear()
            assert c.get("/").status_code == 200  # answered while the limiter cannot answer
            assert "testclient" in middleware.refills
            renewed()
            assert asked[-1] == 5  # a new lease, and the token of the request let through
            assert middleware.leases["testclient"][0] == 4
        # spent faster than the rate allows: this one waits for the limiter
        middleware.leases["testclient"] = (0, now + 60, now + 60)
        gate.clear()
        result: list[int] = []
        waiting = threading.Thread(target=lambda: result.append(c.get("/").status_code))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not result, "answered before the limiter did"
        gate.set()
        waiting.join(10)
        assert result == [200] and asked == [4, 5, 5, 4]


def test_rate_limit_can_be_turned_off():
    c = client(Limits(rate_limit=None))
    assert {c.get("/").status_code for _ in range(50)} == {200}


def test_websocket_message_of_exactly_the_limit_passes_one_more_byte_closes_1009():
    c = client(Limits(max_websocket_message=1024, rate_limit=None))
    with c.websocket_connect("/ws") as s:
        s.send_bytes(b"a" * 1024)
        assert s.receive_bytes() == b"a" * 1024
        s.send_bytes(b"a" * 1025)
        with pytest.raises(WebSocketDisconnect) as info:
            s.receive_bytes()
    assert info.value.code == 1009


def test_token_bucket_refills_at_the_rate():
    bucket = TokenBucket(rate=10, capacity=10, tokens=10, updated=0.0)
    assert bucket.take(15, 0.0)[0] == 10
    taken, wait = bucket.take(1, 0.0)
    assert taken == 0 and wait == pytest.approx(0.1)
    assert bucket.take(5, 0.5)[0] == 5


def test_limits_are_validated():
    with pytest.raises(InvalidError, match="positive number, or None"):
        Limits(rate_limit=0)
    with pytest.raises(InvalidError, match="`limits=` has to be a `rayweb.Limits` object"):
        import rayweb

        rayweb.App("x", limits={"rate_limit": 1})  # type: ignore[arg-type]


def _body_call(limits: Limits, chunks: list[tuple[float, bytes]]) -> tuple[int, list[str]]:
    """Send ``chunks`` (delay before each, data) to the upload endpoint through the chain."""
    seen: list[str] = []

    async def app(scope, receive, send):
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                return
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append(f"bytes={total}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> int:
        chain = Chain(app, limits=limits)
        pending = list(chunks)
        sent: list[dict] = []

        async def receive():
            if not pending:
                await asyncio.sleep(3600)  # the client stays connected
            delay, data = pending.pop(0)
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": data, "more_body": bool(pending)}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("1.2.3.4", 5),
        }
        await asyncio.wait_for(chain.serve_path(scope, receive, send), 10)
        return int(sent[0]["status"])

    return asyncio.run(main()), seen


def test_a_body_slower_than_16_kib_per_body_timeout_gets_408_and_frees_the_app():
    limits = Limits(rate_limit=None, body_timeout=0.3)
    # 1 byte every 0.1 s: under 16 KiB per 0.3 s
    status, seen = _body_call(limits, [(0.1, b"x")] * 20)
    assert status == 408
    assert seen == ["disconnect"]  # the app saw the client go away and returned
    # a large body that keeps coming is fine, however long it takes in all
    status, seen = _body_call(limits, [(0.2, b"y" * 16 * 1024)] * 5)
    assert (status, seen) == (200, [f"bytes={5 * 16 * 1024}"])
    # turned off: waits as long as the client takes
    status, seen = _body_call(Limits(rate_limit=None, body_timeout=None), [(0.4, b"z")] * 3)
    assert (status, seen) == (200, ["bytes=3"])
