"""Benchmark: streamed responses (server-sent events, as an LLM streams tokens) through
rayweb's gateway and from plain uvicorn, side by side: time to the first byte and each
event's delay from the moment the app yielded it to the moment the client read it.

    python bench/streams.py [--runs 20] [--out bench/RESULTS.md]

The app (the same FastAPI app in both) yields ``data: <time.time()>`` every ``gap`` ms;
server and client share the clock, so an event's delay is the client's read time minus the
stamp. Cases: 20 events 10 ms apart, 10 events 100 ms apart, and a burst of 1,000 events.
The client is a raw socket (no client library's buffering); each run is a new keep-alive
connection, as a browser's ``EventSource`` or an SDK's first request opens.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results, free_port, plain_uvicorn, wait_200  # noqa: E402

APP_SOURCE = textwrap.dedent(
    """
    import asyncio, time

    import rayweb
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    api = FastAPI()


    @api.get("/sse")
    async def sse(n: int = 10, gap_ms: float = 10.0):
        async def events():
            for _ in range(n):
                if gap_ms:
                    await asyncio.sleep(gap_ms / 1000)
                yield f"data: {time.time():.6f}\\n\\n"

        return StreamingResponse(events(), media_type="text/event-stream")


    @api.get("/")
    def ready():
        return "ok"


    app = rayweb.App("streams")


    @app.function(min_containers=1, name="sse")
    @rayweb.concurrent(max_inputs=32)
    @rayweb.asgi_app()
    def sse_app():
        return api
    """
)

CASES = ((20, 10.0), (10, 100.0), (1000, 0.0))  # (events, gap ms)


def stream(host: str, port: int, path: str) -> tuple[float, list[float], float]:
    """One request: (first byte after the request was sent, each event's delay, total), in ms."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"  # keep-alive, as browsers
    raw, body, delays, first, head, done = b"", b"", [], None, None, False
    sent = time.monotonic()
    sock.sendall(request.encode())
    while True:
        data = sock.recv(65536)
        now, wall = time.monotonic(), time.time()
        if not data:
            break
        if first is None:
            first = now - sent
        raw += data
        if head is None:
            if b"\r\n\r\n" not in raw:
                continue
            head, raw = raw.split(b"\r\n\r\n", 1)
            assert b"chunked" in head.lower(), head  # a stream: chunked, as from uvicorn
        while b"\r\n" in raw:  # whole chunks (a proxy may cut events across chunks)
            size_line, rest = raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                break
            body, raw = body + rest[:size], rest[size + 2 :]
            done = size == 0  # the last chunk: the response is complete
        while b"\n\n" in body:
            event, body = body.split(b"\n\n", 1)
            delays.append((wall - float(event.removeprefix(b"data: "))) * 1000)
        if done:
            break
    sock.close()
    return (first or 0.0) * 1000, delays, (time.monotonic() - sent) * 1000


def measure(host: str, port: int, prefix: str, runs: int) -> dict[tuple[int, float], dict]:
    out = {}
    for events, gap in CASES:
        path = f"{prefix}/sse?n={events}&gap_ms={gap}"
        stream(host, port, path)  # warm-up
        firsts, delays, totals = [], [], []
        for _ in range(runs if events < 1000 else max(3, runs // 4)):
            first, seen, total = stream(host, port, path)
            assert len(seen) == events, (len(seen), events)
            firsts.append(first)
            delays += seen
            totals.append(total)
        delays.sort()
        out[(events, gap)] = {
            "first": statistics.median(firsts),
            "p50": statistics.median(delays),
            "p99": delays[int(len(delays) * 0.99) - 1],
            "max": delays[-1],
            "total": statistics.median(totals),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    work = HERE / "out"
    work.mkdir(exist_ok=True)
    (work / "bench_streams.py").write_text(APP_SOURCE)
    sys.path.insert(0, str(work))
    results = {}

    port = free_port()
    with plain_uvicorn("bench_streams:api", work, port):
        results["plain uvicorn"] = measure("127.0.0.1", port, "", args.runs)

    import bench_streams

    import rayweb
    from rayweb.driver import cluster

    port = free_port()
    handle = rayweb.serve(bench_streams.app, port=port, quiet=True)
    try:
        label = handle.labels["sse"]
        wait_200(f"http://127.0.0.1:{port}/{label}/")
        results["rayweb"] = measure("127.0.0.1", port, f"/{label}", args.runs)
    finally:
        handle.stop()
        cluster.stop_embedded()

    lines = [
        f"## {datetime.date.today().isoformat()}: streamed events (bench/streams.py)",
        "",
        "Server-sent events from one FastAPI app, plain uvicorn and through rayweb's gateway "
        f"(one replica); raw-socket client, {args.runs} runs per case (a quarter for the "
        "burst), each on a new connection, 2 cores. Delay: the client's read time minus the "
        "time the app yielded the event. Command: `python bench/streams.py`.",
        "",
        "| server | events x gap | first byte ms | delay p50 ms | p99 ms | max ms | whole stream ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for (events, gap), _ in results["plain uvicorn"].items():
        for name in ("plain uvicorn", "rayweb"):
            r = results[name][(events, gap)]
            lines.append(
                f"| {name} | {events} x {gap:g} ms | {r['first']:.2f} | {r['p50']:.2f} "
                f"| {r['p99']:.2f} | {r['max']:.2f} | {r['total']:.1f} |"
            )
    lines.append("")
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
