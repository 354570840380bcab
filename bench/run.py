"""Benchmark: a trivial GET and a WebSocket echo served by rayweb, by the same FastAPI app on
raw Ray Serve, and by plain uvicorn, in one run on loopback; plus seconds from
``rayweb serve`` to the first 200.

    python bench/run.py [--duration 10] [--data-path gateway|serve|serve-haproxy]

``gateway`` is rayweb's default data path (HAProxy in front of each replica's own server);
``serve`` is Serve's HTTP proxy; ``serve-haproxy`` is Serve's experimental HAProxy mode.

Needs ``wrk`` (Debian: ``apt-get install wrk``). Appends a dated section to the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAX_INPUTS = 32

APP_SOURCE = textwrap.dedent(
    """
    import rayweb
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect

    # The limiter runs (its leases are part of the cost) but at a rate wrk never reaches.
    app = rayweb.App("bench", limits=rayweb.Limits(rate_limit=1e6))


    def hello() -> dict:
        return {"ok": True}


    # rayweb: the function as a fastapi_endpoint, one replica, 32 requests at a time.
    rayweb_hello = app.function(min_containers=1, max_containers=1, name="hello")(
        rayweb.concurrent(max_inputs=%d)(rayweb.fastapi_endpoint()(hello))
    )

    # The same route as a plain FastAPI app (for raw Serve and for uvicorn), plus an echo.
    api = FastAPI()
    api.add_api_route("/", hello, methods=["GET"])


    @api.post("/upload")
    async def upload(request: Request) -> dict:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}


    @api.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            pass


    @app.function(min_containers=1, max_containers=1, name="ws")
    @rayweb.concurrent(max_inputs=%d)
    @rayweb.asgi_app()
    def ws_app():
        return api
    """
    % (MAX_INPUTS, MAX_INPUTS)
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_200(url: str, timeout: float = 180) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


@contextlib.contextmanager
def plain_uvicorn(app: str, cwd: Path, port: int | None = None, workers: int = 1) -> Iterator[str]:
    """``uvicorn app`` (``module:attribute``, in ``cwd``) without its access log, as the
    benchmarks compare with; yields its URL once ``/`` answers 200."""
    port = port or free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    args += ["--no-access-log"] + (["--workers", str(workers)] if workers > 1 else [])
    proc = subprocess.Popen(args, cwd=cwd)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_200(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def ws_round_trips(
    url: str,
    seconds: float,
    headers: dict[str, str] | None = None,
    before_main: Callable[[], object] | None = None,
) -> float:
    """WebSocket echo round trips per second, one client, 64-byte text messages.
    ``before_main``: called after the warm-up, right before the measured run."""
    from websockets.sync.client import connect

    with connect(url, max_size=None, additional_headers=headers) as ws:
        for _ in range(50):  # warm-up
            ws.send("x" * 64)
            ws.recv()
        if before_main is not None:
            before_main()
        count, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            ws.send("x" * 64)
            ws.recv()
            count += 1
    return count / (time.monotonic() - start)


UPLOAD_MIB = 100


def upload_seconds(url: str, runs: int = 5) -> float:
    """Median seconds to POST ``UPLOAD_MIB`` MiB (one client, Content-Length known) and get
    the app's answer."""
    body = b"u" * (UPLOAD_MIB * 2**20)
    times = []
    with httpx.Client(timeout=120) as client:
        client.post(url, content=body[: 2**20])  # warm-up (connection, first request)
        for _ in range(runs):
            start = time.monotonic()
            r = client.post(url, content=body)
            times.append(time.monotonic() - start)
            assert r.json()["bytes"] == len(body), r.text
    return statistics.median(times)


DATA_PATHS = ("gateway", "serve", "serve-haproxy")


def use_data_path(name: str) -> None:
    """Set the environment for one data path (before Ray starts)."""
    if name == "gateway":
        os.environ["RAYWEB_DATA_PATH"] = "gateway"
        return
    os.environ["RAYWEB_DATA_PATH"] = "serve"
    if name == "serve-haproxy":
        os.environ.update(haproxy_environment())


def haproxy_environment() -> dict[str, str]:
    """Serve's HAProxy mode + throughput-optimized (direct ingress), with a 1 s drain and
    this run's own state files and stats/metrics ports (experimental data path)."""
    state = ROOT / "bench" / "out" / "haproxy"
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


def wrk(
    url: str,
    connections: int,
    duration: int,
    host: str | None = None,
    headers: tuple[str, ...] = (),
    before_main: Callable[[], object] | None = None,
) -> dict[str, float]:
    """``host``: the request's ``Host`` header (an endpoint's own origin, at 127.0.0.1);
    ``headers``: more, as ``"name: value"``; ``before_main``: called after wrk's 2 s
    warm-up, right before the measured run."""
    threads = 1 if connections == 1 else 2
    header = ["-H", f"Host: {host}"] if host else []
    for extra in headers:
        header += ["-H", extra]
    subprocess.run(["wrk", "-t1", "-c1", "-d2s", *header, url], capture_output=True, check=True)
    if before_main is not None:
        before_main()
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", *header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure_startup(runs: int) -> list[float]:
    """Seconds from launching `rayweb serve examples/fastapi_endpoint.py` to the first 200."""
    times = []
    for _ in range(runs):
        port = free_port()
        start = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rayweb.cli",
                "serve",
                "examples/fastapi_endpoint.py",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_200(f"http://127.0.0.1:{port}/api-service-search-dev?query=x")
            times.append(time.monotonic() - start)
        finally:
            proc.send_signal(2)
            proc.wait(120)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--startup-runs", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument(
        "--data-path",
        choices=DATA_PATHS,
        default="gateway",
        help="gateway: rayweb's default; serve: Serve's HTTP proxy; serve-haproxy: Serve's "
        "HAProxy mode + throughput-optimized (direct ingress), experimental",
    )
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    use_data_path(args.data_path)

    work = ROOT / "bench" / "out"
    work.mkdir(exist_ok=True)
    (work / "bench_app.py").write_text(APP_SOURCE)
    sys.path.insert(0, str(work))

    results: dict[str, dict[int, dict[str, float]]] = {}
    ws: dict[str, float] = {}
    uploads: dict[str, float] = {}

    # (c) plain uvicorn, one process
    with plain_uvicorn("bench_app:api", work) as url:
        results["plain uvicorn"] = {c: wrk(url, c, args.duration) for c in (1, 32)}
        ws["plain uvicorn"] = ws_round_trips(f"ws{url.removeprefix('http')}ws", args.duration)
        uploads["plain uvicorn"] = upload_seconds(f"{url}upload")

    # (a) rayweb and (b) raw Serve, on one embedded Ray and one Serve proxy
    import bench_app
    from ray import serve

    import rayweb

    port = free_port()
    handle = rayweb.serve(bench_app.app, port=port, quiet=True)
    try:
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(bench_app)  # raw Serve ships the app by value
        deployment = serve.deployment(
            serve.ingress(bench_app.api)(type("RawServe", (), {})),
            name="raw",
            num_replicas=1,
            max_ongoing_requests=MAX_INPUTS,
            ray_actor_options={"num_cpus": 0.1},
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        serve.run(deployment.bind(), name="raw", route_prefix="/raw")
        raw_url = f"http://127.0.0.1:{port}/raw/"
        wait_200(raw_url)
        label = handle.labels["hello"]
        cases = [
            ("rayweb", handle.reach.path_url(label), None),
            # the same endpoint at its own origin: the gateway matches the Host header
            ("rayweb (own origin)", f"http://127.0.0.1:{port}/", f"{label}.localhost:{port}"),
            ("raw Ray Serve", raw_url, None),
        ]
        for _round in range(2):  # interleave, so drift hits all alike
            for name, url, host in cases:
                for c in (1, 32):
                    r = wrk(url, c, args.duration, host)
                    best = results.setdefault(name, {}).get(c)
                    if best is None or r["rps"] > best["rps"]:
                        results[name][c] = r
        ws["rayweb"] = ws_round_trips(
            handle.reach.path_url(handle.labels["ws"]).replace("http://", "ws://") + "/ws",
            args.duration,
        )
        ws["raw Ray Serve"] = ws_round_trips(f"ws://127.0.0.1:{port}/raw/ws", args.duration)
        uploads["rayweb"] = upload_seconds(handle.reach.path_url(handle.labels["ws"]) + "/upload")
        serve.delete("raw")
    finally:
        handle.stop()
        from rayweb.driver import cluster

        cluster.stop_embedded()

    startup = [] if args.skip_startup else measure_startup(args.startup_runs)
    write_results(Path(args.out), results, startup, args.duration, args.data_path, ws, uploads)


def write_results(
    out: Path,
    results: dict[str, dict[int, dict[str, float]]],
    startup: list[float],
    duration: int,
    data_path: str = "gateway",
    ws: dict[str, float] | None = None,
    uploads: dict[str, float] | None = None,
) -> None:
    import ray

    base = results["plain uvicorn"]
    raw = results["raw Ray Serve"]
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"## {datetime.date.today().isoformat()}: trivial sync GET, loopback, wrk {duration}s per cell"
        f" (data path: {data_path})",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}, "
        f"Python {platform.python_version()}, ray {ray.__version__}. wrk runs on the same cores.",
        "rayweb and raw Serve: one replica, max_ongoing_requests=32, access log off, best of 2",
        "interleaved rounds; rayweb's limits on (rate limit set above what wrk reaches).",
        f"Command: `python bench/run.py --data-path {data_path}`.",
        "",
        "| server | clients | req/s | p50 ms | p99 ms | non-2xx | vs uvicorn | vs raw Serve |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = ("rayweb", "rayweb (own origin)", "raw Ray Serve", "plain uvicorn")
    for name in (n for n in names if n in results):
        for c in (1, 32):
            r = results[name][c]
            lines.append(
                f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} "
                f"| {r['rps'] / base[c]['rps']:.2f}x | {r['rps'] / raw[c]['rps']:.2f}x |"
            )
    lines.append("")
    if ws:
        lines += [
            "WebSocket echo, one client, 64-byte messages (round trips/s): "
            + ", ".join(f"{name} {rate:,.0f}" for name, rate in ws.items())
            + ".",
            "",
        ]
    if uploads:
        lines += [
            f"{UPLOAD_MIB} MiB upload, one client, median of 5 (seconds): "
            + ", ".join(f"{name} {secs:.3f}" for name, secs in uploads.items())
            + ".",
            "",
        ]
    if startup:
        lines += [
            "`rayweb serve examples/fastapi_endpoint.py` to first 200 (cold Ray start, 4 endpoints): "
            + ", ".join(f"{t:.1f}s" for t in startup)
            + f" (median {statistics.median(startup):.1f}s).",
            "",
        ]
    append_results(out, lines)


def append_results(out: Path, lines: list[str]) -> None:
    """Append one dated section to the results file (and show it)."""
    text = out.read_text() if out.exists() else "# Benchmark results\n\n"
    out.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
