"""Benchmark: where the cold start goes, and how long a scaled-to-zero endpoint takes to
answer again.

    python bench/startup.py [--runs 2] [--gap 8] [--out bench/RESULTS.md]

Each run is a new Python process (cold imports, as a notebook after a kernel restart) that
serves ``examples/fastapi_endpoint.py`` on a new embedded Ray and marks the time of each
phase: importing rayweb, loading the app, starting Ray, Serve's controller and proxy with
rayweb's gateway, storing secrets, deploying (replica processes, user imports, ``@enter``),
waiting for the routes, the first 200. Then, in the same process, two endpoints with
``min_containers=0`` (one trivial, one whose ``@enter`` takes 1 s) are left to scale to zero
and asked again: seconds from the request to its answer (the gateway holds it while the
endpoint wakes). Last, a new process serves the same app onto a running local cluster
(``rayweb cluster up``, where an earlier serve left Serve and the gateway running), as
``rayweb serve`` does on a cluster kept warm: seconds to connect, to deploy, to the first 200,
each serve ``--gap`` seconds after the previous one stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import append_results, free_port  # noqa: E402

CHILD = textwrap.dedent(
    """
    import json, sys, time
    start = time.monotonic()
    marks = []

    def mark(phase):
        marks.append((phase, time.monotonic() - start))

    import rayweb
    mark("import rayweb")
    from rayweb.driver import cluster
    from rayweb.driver.import_refs import load_app
    app = load_app("examples/fastapi_endpoint.py")
    mark("load the app")
    cluster.ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    mark("start Ray")
    names = {"Storing secrets": "Serve + gateway", "Deploying": "secrets",
             "Waiting for the HTTP routes": "deploy (replicas ready)"}

    def progress(message):
        for prefix, phase in names.items():
            if message.startswith(prefix):
                mark(phase)

    import httpx
    port = int(sys.argv[1])
    handle = rayweb.serve(app, port=port, quiet=True, progress=progress)
    mark("routes")
    while httpx.get(handle.urls["search"], params={"query": "x"}).status_code != 200:
        time.sleep(0.01)
    mark("first 200")

    cold = rayweb.App("cold")

    @cold.function(serialized=True, min_containers=0, scaledown_window=2)
    @rayweb.fastapi_endpoint()
    def trivial():
        return "ok"

    @cold.cls(serialized=True, min_containers=0, scaledown_window=2)
    class Slow:
        @rayweb.enter()
        def load(self):
            time.sleep(1.0)

        @rayweb.fastapi_endpoint()
        def web(self):
            return "ok"

    from ray import serve
    woken = {}
    served = rayweb.serve(cold, port=port, quiet=True)
    for tag, label in served.labels.items():
        app_name = "rayweb-fn-cold-slow" if tag.startswith("Slow") else label
        times = []
        for _ in range(2):
            while True:  # no replica at all: the next request wakes the endpoint
                status = serve.status().applications.get(app_name)
                deployments = status.deployments.values() if status else []
                if not sum(sum(d.replica_states.values()) for d in deployments):
                    break
                time.sleep(0.2)
            began = time.monotonic()
            assert httpx.get(served.urls[tag], timeout=120).status_code == 200
            times.append(time.monotonic() - began)
        woken[tag] = times
    print("MARKS " + json.dumps({"marks": marks, "woken": woken}))
    served.stop()
    handle.stop()
    cluster.stop_embedded()
    """
)


ONTO = textwrap.dedent(
    """
    import json, sys, time
    start = time.monotonic()
    import httpx, rayweb
    from rayweb.driver.import_refs import load_app
    app = load_app("examples/fastapi_endpoint.py")
    marks = {}

    def progress(message):
        if message.startswith("Deploying"):
            marks["connected"] = time.monotonic() - start

    handle = rayweb.serve(app, address=sys.argv[1], port=int(sys.argv[2]), quiet=True,
                          progress=progress)
    marks["deployed"] = time.monotonic() - start
    while httpx.get(handle.urls["search"], params={"query": "x"}).status_code != 200:
        time.sleep(0.01)
    marks["first 200"] = time.monotonic() - start
    marks["port"] = handle.reach.port
    print("ONTO " + json.dumps(marks))
    handle.stop()
    """
)


ONE_ENDPOINT = """
import rayweb

app = rayweb.App("one")


@app.function()
@rayweb.fastapi_endpoint()
def hello(name: str = "world") -> dict:
    return {"hello": name}
"""
# `rayweb serve` of these, to the first 200 of the path: five endpoints, and one
CLI_APPS = {
    "examples/fastapi_endpoint.py": "api-service-search-dev?query=x",
    "bench/out/one_endpoint.py": "one-hello-dev",
}


def cli_first_200(name: str, env: dict[str, str], port: int, app: str, fork: bool) -> float:
    """Seconds from starting ``rayweb serve APP --address NAME`` to the first 200 of its
    ``CLI_APPS`` path; with ``fork``, the command runs in a fork of the driver kept imported
    beside the cluster (``rayweb/driver/forkserver.py``)."""
    import signal
    import urllib.request

    env = {**env, "RAYWEB_FORK_DRIVER": "1" if fork else "0"}
    start = time.monotonic()
    serving = subprocess.Popen(
        [sys.executable, "-m", "rayweb.cli", "serve", app, "--address", name, "--no-reload"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/{CLI_APPS[app]}"
    took = None
    while took is None and time.monotonic() - start < 120:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    took = time.monotonic() - start
        except OSError:
            time.sleep(0.01)
    serving.send_signal(signal.SIGINT)
    _, err = serving.communicate(timeout=120)
    if took is None:
        sys.exit(err.decode()[-3000:])
    return took


def onto_running_cluster(runs: int, gap: float) -> list[dict[str, float]]:
    """Serve in a new process onto a running local cluster, ``runs`` times (after one
    serve that starts Serve and the gateway there), ``gap`` seconds after the previous
    one stopped (a user restarting ``rayweb serve``; the warm pool refills meanwhile).
    Then ``rayweb serve`` itself of each of ``CLI_APPS``, ``runs`` times in a fork of the
    driver kept imported beside the cluster and ``runs`` times in its own process,
    alternated (``"<app> True"`` and ``"<app> False"`` in each run's marks)."""
    import os
    import tempfile
    import uuid

    name = f"bench{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "RAYWEB_CLUSTERS_DIR": tempfile.mkdtemp(prefix="rayweb-bench-")}
    rayweb = [sys.executable, "-m", "rayweb.cli", "cluster"]
    up = subprocess.run([*rayweb, "up", "--name", name, "--num-cpus", "2"], env=env,
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    if up.returncode != 0:
        sys.exit(up.stderr[-3000:])
    found = []
    try:
        for index in range(runs + 1):
            if index:
                time.sleep(gap)
            out = subprocess.run([sys.executable, "-c", ONTO, name, str(free_port())], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ONTO ")), None)
            if line is None:
                sys.exit(out.stderr[-3000:])
            found.append(json.loads(line.removeprefix("ONTO ")))
        (HERE / "out").mkdir(exist_ok=True)
        (HERE / "out" / "one_endpoint.py").write_text(ONE_ENDPOINT)
        for run in found[1:]:  # the cluster's gateway kept the first serve's port
            for app in CLI_APPS:
                for fork in (True, False):
                    time.sleep(gap)
                    run[f"{app} {fork}"] = cli_first_200(name, env, found[0]["port"], app, fork)
    finally:
        subprocess.run([*rayweb, "down", "--name", name], env=env, capture_output=True,
                       timeout=300)  # fmt: skip
    return found[1:]  # the first one started Serve and the gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between serves")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MARKS ")), None)
        if line is None:
            sys.exit(out.stderr[-3000:])
        runs.append(json.loads(line.removeprefix("MARKS ")))
    phases = [phase for phase, _ in runs[0]["marks"]]
    lines = [
        f"## {datetime.date.today().isoformat()}: where the cold start goes (bench/startup.py)",
        "",
        "A new Python process serves `examples/fastapi_endpoint.py` (5 endpoints) on a new "
        f"embedded Ray, {args.runs} runs, 2 cores; each phase's seconds (and the time since "
        "the process started). Command: `python bench/startup.py`.",
        "",
        "| phase | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for index, phase in enumerate(phases):
        cells = []
        for run in runs:
            at = run["marks"][index][1]
            took = at - (run["marks"][index - 1][1] if index else 0.0)
            cells.append(f"{took:.2f} (at {at:.2f})")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    woken = {tag: [t for run in runs for t in run["woken"][tag]] for tag in runs[0]["woken"]}
    lines += [
        "",
        "Scale from zero (request to answer, the endpoint with no replica at all): "
        + "; ".join(
            f"{tag}: " + ", ".join(f"{t:.2f}" for t in times) + f" s (median "
            f"{statistics.median(times):.2f})"
            for tag, times in woken.items()
        )
        + ". (`Slow.web`'s `@enter` sleeps 1 s.)",
        "",
    ]
    onto = onto_running_cluster(args.runs + 1, args.gap)
    lines += [
        "Onto a running local cluster (`rayweb cluster up`; Serve and the gateway left "
        f"running by an earlier serve), a new process {args.gap:g} s after the previous "
        "one stopped, seconds since it started: "
        + "; ".join(
            f"{mark} "
            + ", ".join(f"{run[mark]:.2f}" for run in onto)
            + f" (median {statistics.median(run[mark] for run in onto):.2f})"
            for mark in ("connected", "deployed", "first 200")
        )
        + ".",
        "",
        "`rayweb serve APP --address NAME` to its first 200, in a fork of the driver kept "
        "imported beside the cluster, and in a process of its own (`RAYWEB_FORK_DRIVER=0`), "
        f"alternated, {args.gap:g} s apart:",
        "",
        "| app | in a fork (s) | in its own process (s) |",
        "|---|---|---|",
    ]
    for app in CLI_APPS:
        cells = []
        for fork in (True, False):
            times = [run[f"{app} {fork}"] for run in onto]
            cells.append(
                ", ".join(f"{t:.2f}" for t in times) + f" (median {statistics.median(times):.2f})"
            )
        lines.append(f"| `{app}` | {cells[0]} | {cells[1]} |")
    lines.append("")
    append_results(Path(args.out), lines)


if __name__ == "__main__":
    main()
