"""The gateway's request log (no Ray): HAProxy's lines parsed, Serve's backend left to Serve,
client aborts as 499, the minute each route keeps for ``rayweb app list``, the socket."""

from __future__ import annotations

import socket
import time

import pytest

from rayweb.services.haproxy_config import Route, render_config
from rayweb.services.requestlog import (
    LOG_FORMAT,
    WINDOW_S,
    Reader,
    Request,
    RequestLog,
    parse,
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


class Sink:
    def __init__(self) -> None:
        self.recorded: list[tuple[Request, tuple[str, str]]] = []
        self.flushes = 0

    def record(self, request, owner) -> None:
        self.recorded.append((request, owner))

    def flush(self) -> None:
        self.flushes += 1


def test_each_request_is_recorded_with_its_owner_and_kept_a_minute():
    sink = Sink()
    recorded = sink.recorded
    owners = {"shop-api": ("rayweb-fn-shop-model", "function")}
    log = RequestLog(sink, lambda route: owners.get(route, ("", "")))
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
        request_log="127.0.0.1:5140",
    )
    assert "log 127.0.0.1:5140 " in text and f'log-format "{LOG_FORMAT}"' in text
    for name in routes:
        assert f"http-request set-var(txn.rw_route) str({name})" in text
    quiet = render_config(bind=("127.0.0.1", 8000), serve=("127.0.0.1", 9000), key="k", routes={})
    assert "log " not in quiet  # no socket, no logging


def test_the_reader_takes_datagrams_in_batches_without_losing_a_burst():
    sink = Sink()
    log = RequestLog(sink, lambda route: ("", ""))
    reader = Reader(log)
    host, port = reader.address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(3000):  # far more than a Unix datagram socket's queue holds
            sender.sendto(b"a GET 200 1 ---- b0", (host, int(port)))
    deadline = time.monotonic() + 5
    while log.lines < 3000 and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.close()
    assert log.lines == 3000 and len(sink.recorded) == 3000
    assert log.stats()["a"]["rate"] == 3000 / WINDOW_S
    assert 1 <= sink.flushes < 3000  # one flush per batch, not per request
    assert not reader.thread.is_alive()
