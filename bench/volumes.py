"""Benchmark: a Volume through its mount path against the same directory used directly.

    python bench/volumes.py [--gib 1] [--files 1000]

1. Inside a function's replica: write ``--gib`` GiB (8 MiB chunks, fsynced) then read it back,
   once through the mount path (``/bench-vol`` -> the volume's directory) and once through
   the volume's directory itself, alternating which goes first, 6 rounds; medians and the ratio (the goal is
   ~1.0x: the mount is a link, no copy on the way).
2. From the driver: ``batch_upload`` of ``--files`` files of 1 KiB against ``shutil.copy`` of
   the same files into a plain directory.

Appends a section to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import append_results  # noqa: E402

import rayweb  # noqa: E402

MOUNT = os.environ.setdefault("BENCH_VOLUME_MOUNT", tempfile.mkdtemp() + "/bench-vol")
app = rayweb.App("bench-volumes")
vol = rayweb.Volume.from_name("bench-volumes", create_if_missing=True)
CHUNK = 8 * 2**20
ROUNDS = 6


@app.function(volumes={MOUNT: vol}, timeout=1800)
def through(gib: float) -> dict:
    def write_read(folder: str) -> tuple[float, float]:
        path = os.path.join(folder, "big.bin")
        block = os.urandom(CHUNK)
        started = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(int(gib * 2**30 // CHUNK)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(CHUNK):
                pass
        read = time.perf_counter() - started
        os.remove(path)
        return wrote, read

    runs: dict[str, list[tuple[float, float]]] = {"mount": [], "direct": []}
    order = [("mount", MOUNT), ("direct", str(vol.path()))]
    for i in range(ROUNDS):
        for name, folder in order if i % 2 == 0 else order[::-1]:  # neither always goes first
            runs[name].append(write_read(folder))
    return {
        name: {
            "write": statistics.median(w for w, _ in r),
            "read": statistics.median(rd for _, rd in r),
        }
        for name, r in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=1000)
    options = parser.parse_args()

    from rayweb.driver import cluster

    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    held = cluster.hold()
    try:
        with app.run():
            got = through.remote(options.gib)
    finally:
        if held:
            cluster.release()

    source = Path(tempfile.mkdtemp(prefix="bench-files-"))
    for i in range(options.files):
        (source / f"f{i:05d}.txt").write_bytes(os.urandom(1024))
    started = time.perf_counter()
    with vol.batch_upload(force=True) as batch:
        batch.put_directory(source, "/small")
    upload_s = time.perf_counter() - started
    plain = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    started = time.perf_counter()
    for path in sorted(source.iterdir()):
        shutil.copy(path, plain / path.name)
    copy_s = time.perf_counter() - started
    assert len(vol.listdir("/small")) == options.files
    vol.remove_file("/small", recursive=True)
    shutil.rmtree(source)
    shutil.rmtree(plain)

    mib = options.gib * 1024
    m, d = got["mount"], got["direct"]
    lines = [
        f"## {datetime.date.today()}: Volume through its mount (bench/volumes.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {options.gib:g} GiB in 8 MiB chunks inside a function's "
        "replica, write fsynced, read right after (page cache warm in both), median of 6 rounds that "
        "alternate which goes first.",
        "",
        "| path | write MiB/s | read MiB/s |",
        "|---|---|---|",
        f"| mount path (link) | {mib / m['write']:,.0f} | {mib / m['read']:,.0f} |",
        f"| the directory itself | {mib / d['write']:,.0f} | {mib / d['read']:,.0f} |",
        "",
        f"Ratio mount / direct (time): write {m['write'] / d['write']:.2f}x, read "
        f"{m['read'] / d['read']:.2f}x.",
        "",
        f"`batch_upload` of {options.files:,} files of 1 KiB from the driver: {upload_s:.2f} s "
        f"({options.files / upload_s:,.0f} files/s); `shutil.copy` of the same files into a "
        f"plain directory: {copy_s:.2f} s.",
        "",
    ]
    append_results(HERE / "RESULTS.md", lines)


if __name__ == "__main__":
    main()
