"""Benchmark: what the @web_server proxy route adds over calling the server directly.

    python bench/web_server.py [--duration 10] [--out bench/RESULTS.md]

Measures, in one run on loopback, with the aiohttp example server:
- GET / latency (p50/p99) and req/s at 1 client: direct to the server process, and through
  rayweb (gateway -> replica -> rayweb's reverse proxy -> server);
- the same for a trivial rayweb fastapi_endpoint, to separate the gateway hop from the reverse proxy;
- WebSocket echo round trips per second, direct and through rayweb (one client, sequential).
Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run import append_results, free_port, wait_200, wrk, ws_round_trips  # noqa: E402

AIOHTTP = str(ROOT / "examples" / "web_server_aiohttp.py")


def direct_aiohttp(duration: int) -> tuple[dict[str, float], float]:
    """wrk figures and WebSocket round trips/s of the aiohttp example server, run directly."""
    port = free_port()
    direct = subprocess.Popen([sys.executable, AIOHTTP, "--serve", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_200(base + "/")
        ws = ws_round_trips(f"ws://127.0.0.1:{port}/ws", duration / 2)
        return wrk(base + "/", 1, duration), ws
    finally:
        direct.terminate()
        direct.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()

    import rayweb
    from rayweb.driver import cluster
    from rayweb.driver.import_refs import load_app

    rows: list[tuple[str, dict[str, float], float | None]] = []
    rows.append(("aiohttp server, direct", *direct_aiohttp(args.duration)))

    web_app = load_app(str(ROOT / "examples" / "web_server_aiohttp.py"))
    web_app.limits = rayweb.Limits(rate_limit=1e6)  # wrk from one IP would hit the default
    trivial = rayweb.App("bench-trivial", limits=rayweb.Limits(rate_limit=1e6))
    hello = trivial.function(serialized=True, min_containers=1, max_containers=1, name="hello")(
        rayweb.concurrent(max_inputs=32)(rayweb.fastapi_endpoint()(lambda: "ok"))
    )
    serve_port = free_port()
    with (
        rayweb.serve(web_app, port=serve_port, quiet=True) as handle,
        rayweb.serve(trivial, port=serve_port, quiet=True) as trivial_handle,
    ):
        url = handle.urls["server"]
        ws = ws_round_trips(url.replace("http://", "ws://") + "/ws", args.duration / 2)
        rows.append(("aiohttp server via rayweb web_server", wrk(url + "/", 1, args.duration), ws))
        rows.append(
            (
                "rayweb fastapi_endpoint (gateway hop only)",
                wrk(trivial_handle.urls[hello.tag], 1, args.duration),
                None,
            )
        )
    cluster.stop_embedded()
    write(Path(args.out), rows, args.duration)


def write(out: Path, rows: list[tuple[str, dict[str, float], float | None]], duration: int) -> None:
    direct, proxied, serve_only = (r[1] for r in rows)
    lines = [
        f"## {datetime.date.today().isoformat()}: @web_server proxy route (1 client, wrk {duration}s)",
        "",
        "Command: `python bench/web_server.py`. Same machine as above.",
        "",
        "| path | req/s | p50 ms | p99 ms | WS echo round trips/s |",
        "|---|---|---|---|---|",
    ]
    for name, r, ws in rows:
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            + (f"{ws:.0f}" if ws is not None else "-")
            + " |"
        )
    added = proxied["p50"] - direct["p50"]
    hop = proxied["p50"] - serve_only["p50"]
    lines += [
        "",
        f"Added at p50 over calling the server directly: {added:.2f} ms. A trivial "
        f"fastapi_endpoint through the gateway takes {serve_only['p50']:.2f} ms end to end, so "
        f"rayweb's reverse-proxy hop plus the server's own handling (direct: "
        f"{direct['p50']:.2f} ms) is {hop:.2f} ms; the rest is the gateway-to-replica hop.",
        "",
    ]
    append_results(out, lines)


if __name__ == "__main__":
    main()
