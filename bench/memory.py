"""Benchmark: memory growth of the data path when one side is slow.

    python bench/memory.py [--size-mib 1024] [--data-path gateway|serve|serve-haproxy]

Upload: the client sends SIZE as fast as it can to an endpoint that reads 1 MiB every
``--read-pause`` seconds. Download: the endpoint streams SIZE to a client that reads 1 MiB
per pause. Peak RSS growth is sampled (every 0.1 s) for every Ray process that serves the
request (Serve's proxy, the replica, HAProxy if any). The goal (streaming issue): no process
grows by more than 256 MiB. Appends a section to bench/RESULTS.md.
"""

# No `from __future__ import annotations`: the endpoint below is shipped by value, and FastAPI
# must see its real `Request` annotation.

import argparse
import datetime
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from run import DATA_PATHS, append_results, free_port, use_data_path  # noqa: E402

MIB = 1024 * 1024


def serving_processes() -> dict[int, str]:
    """pid -> role for Serve's proxy, rayweb replicas and HAProxy on this machine."""
    out = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if "ProxyActor" in text:
            out[proc.info["pid"]] = "Serve proxy"
        elif "ServeReplica:memory-" in text:
            out[proc.info["pid"]] = "replica"
        elif "haproxy" in (proc.info["name"] or ""):
            out[proc.info["pid"]] = "haproxy"
    return out


class PeakRSS:
    def __init__(self, pids: dict[int, str]) -> None:
        self.pids = pids
        self.base = {pid: self._rss(pid) for pid in pids}
        self.peak = dict(self.base)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self.stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], self._rss(pid))
            time.sleep(0.1)

    def __enter__(self) -> "PeakRSS":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def growth(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, role in self.pids.items():
            out[role] = max(out.get(role, 0.0), (self.peak[pid] - self.base[pid]) / MIB)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--read-pause", type=float, default=0.01)
    parser.add_argument("--data-path", choices=DATA_PATHS, default="gateway")
    parser.add_argument(
        "--disconnect-disabled",
        action="store_true",
        help="send `x-request-disconnect-disabled: ?1` with the upload (a Serve request flag)",
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    use_data_path(args.data_path)

    import rayweb
    from rayweb.driver import cluster

    app = rayweb.App("memory", limits=rayweb.Limits(rate_limit=None, request_timeout=3600))
    pause, size = args.read_pause, args.size_mib * MIB

    @app.function(serialized=True, min_containers=1, max_containers=1)
    @rayweb.asgi_app()
    def web():
        import asyncio

        from fastapi import FastAPI, Request
        from fastapi.responses import StreamingResponse

        api = FastAPI()

        @api.post("/upload")
        async def upload(request: Request):
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
                await asyncio.sleep(pause * len(chunk) / MIB)
            return {"bytes": total}

        @api.get("/download")
        async def download(n: int):
            async def body():
                block = b"d" * MIB
                for _ in range(n // MIB):
                    yield block

            return StreamingResponse(body())

        return api

    handle = rayweb.serve(app, port=free_port(), quiet=True)
    url = handle.urls["web"]
    rows = []
    try:
        pids = serving_processes()

        def chunks():
            block = b"u" * MIB
            for _ in range(size // MIB):
                yield block

        with PeakRSS(pids) as peak:
            start = time.monotonic()
            headers = {"x-request-disconnect-disabled": "?1"} if args.disconnect_disabled else {}
            r = httpx.post(url + "/upload", content=chunks(), headers=headers, timeout=3600)
            took = time.monotonic() - start
        print("upload answer:", r.status_code, r.text[:300])
        rows.append(
            (
                "slow reader, upload",
                r.status_code == 200 and r.json().get("bytes") == size,
                took,
                peak.growth(),
            )
        )

        with PeakRSS(pids) as peak:
            start, got = time.monotonic(), 0
            with httpx.stream("GET", url + "/download", params={"n": size}, timeout=3600) as resp:
                for chunk in resp.iter_raw(MIB):
                    got += len(chunk)
                    time.sleep(pause)
            took = time.monotonic() - start
        rows.append(("slow client, download", got == size, took, peak.growth()))
    finally:
        handle.stop()
        cluster.stop_embedded()
    write(Path(args.out), rows, args)


def write(out: Path, rows: list, args: argparse.Namespace) -> None:
    roles = sorted({role for *_, growth in rows for role in growth})
    lines = [
        f"## {datetime.date.today().isoformat()}: memory with a slow peer, {args.size_mib} MiB "
        f"(data path: {args.data_path})",
        "",
        f"Command: `python bench/memory.py --size-mib {args.size_mib} --data-path "
        f"{args.data_path}"
        + (" --disconnect-disabled" if args.disconnect_disabled else "")
        + "`. Peak RSS growth per process role, MiB (goal: <= 256).",
        "",
        "| case | complete | seconds | " + " | ".join(roles) + " |",
        "|---|---|---|" + "---|" * len(roles),
    ]
    for case, ok, took, growth in rows:
        cells = " | ".join(f"{growth.get(role, 0):.0f}" for role in roles)
        lines.append(f"| {case} | {ok} | {took:.1f} | {cells} |")
    lines.append("")
    append_results(out, lines)


if __name__ == "__main__":
    main()
