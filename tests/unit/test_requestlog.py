"""The gateway's request log (no Ray): HAProxy's lines parsed, Serve's backend left to Serve,
client aborts as 499, the minute each route keeps for ``rayweb app list``, the socket."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from rayweb.services.haproxy_config import Route, render_config
from rayweb.services.requestlog import (
    LOG_FORMAT,
    WINDOW_S,
    Request,
    RequestLog,
    listen,
    parse,
    socket_path,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"shop-api GET 200 12 ---- b0", Request("shop-api", "GET", "200", 12.0)),
        (b"shop-api POST 502 3 SH-- b0", Request("shop-api", "POST", "502", 3.0)),
        (b"shop-api GET 200 8000 CD-- b0", Request("shop-api", "GET", "499", 8000.0)),
        (b"- GET 408 10000 cR-- rayweb", Request("", "GET", "408", 10000.0)),
        (b"- GET 404 2 ---- serve", None),  # Serve's proxy records its own
        (b"shop-api GET -1 5 CC-- b0", None),  # no answer was sent
        (b"garbage", None),
    ],
)
def test_lines_parse_into_requests(line, expected):
    assert parse(line) == expected


def test_each_request_is_recorded_with_its_owner_and_kept_a_minute():
    recorded = []
    owners = {"shop-api": ("rayweb-fn-shop-model", "function")}
    log = RequestLog(lambda r, o: recorded.append((r, o)), lambda route: owners.get(route, ("", "")))
    lines = b"".join(f"shop-api GET 200 {ms} ---- b1\n".encode() for ms in range(1, 101))
    log.feed(lines + b"- GET 404 1 ---- serve\n", now=1000.0)
    assert len(recorded) == 100 and log.lines == 101
    assert recorded[0] == (Request("shop-api", "GET", "200", 1.0), owners["shop-api"])
    stats = log.stats(now=1000.0)["shop-api"]
    assert stats == {"rate": 100 / WINDOW_S, "p50": 50.0, "p99": 99.0}
    assert log.stats(now=1000.0 + WINDOW_S + 1) == {}  # a quiet minute: nothing to show


def test_the_config_logs_every_route_by_name():
    routes = {"shop-api": Route("/shop-api"), "other": Route("/other")}
    text = render_config(
        bind=("127.0.0.1", 8000),
        serve=("127.0.0.1", 9000),
        key="k",
        routes=routes,
        request_log="/tmp/x/requests.sock",
    )
    assert "log unix@/tmp/x/requests.sock" in text and f'log-format "{LOG_FORMAT}"' in text
    for name in routes:
        assert f"http-request set-var(txn.rw_route) str({name})" in text
    quiet = render_config(bind=("127.0.0.1", 8000), serve=("127.0.0.1", 9000), key="k", routes={})
    assert "log " not in quiet  # no socket, no logging


def test_the_socket_reads_datagrams_and_a_long_folder_gets_a_short_path(tmp_path):
    assert socket_path(str(tmp_path)) == os.path.join(tmp_path, "requests.sock")
    long_dir = tmp_path / ("d" * 120)
    assert len(socket_path(str(long_dir)).encode()) < 100

    async def main() -> RequestLog:
        log = RequestLog(None, lambda route: ("", ""))
        path = socket_path(str(tmp_path))
        transport = await listen(path, log)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for _ in range(3):
                sender.sendto(b"a GET 200 1 ---- b0", path)
        for _ in range(100):
            if log.lines == 3:
                break
            await asyncio.sleep(0.01)
        transport.close()
        return log

    log = asyncio.run(main())
    assert log.lines == 3 and log.stats()["a"]["rate"] == 3 / WINDOW_S
