"""HAProxy's own queue, seen by the autoscaling policy: the gateway reads it from a real
HAProxy's stats and publishes it; the policy adds it to what it sizes for."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx

from rayweb.services import autoscaling
from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import (
    Route,
    Server,
    backend_names,
    queued_per_backend,
    render_config,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_requests_beyond_a_server_s_maxconn_show_as_queued_for_their_route(tmp_path):
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            release.wait(30)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = _free_port()
    routes = {
        "busy": Route("/busy", {"r": Server("127.0.0.1", upstream.server_address[1], 1)}),
        "idle": Route("/idle-and-longer", {}),
    }
    proc = HAProxyProcess(
        tmp_path,
        render_config(bind=("127.0.0.1", port), serve=("127.0.0.1", 9), key="k", routes=routes),
    )
    try:
        proc.wait_listening("127.0.0.1", port)
        with ThreadPoolExecutor(4) as pool:
            calls = [
                pool.submit(httpx.get, f"http://127.0.0.1:{port}/busy/x", timeout=30)
                for _ in range(4)
            ]
            deadline = time.monotonic() + 10
            queued: dict[str, int] = {}
            while time.monotonic() < deadline:
                counts = queued_per_backend(proc.stats())
                queued = {backend_names(routes)[b]: n for b, n in counts.items() if n}
                if queued.get("busy") == 3:
                    break
                time.sleep(0.05)
            assert queued == {"busy": 3}  # one at the server (maxconn 1), three waiting
            release.set()
            assert [c.result().status_code for c in calls] == [200] * 4
        assert not any(queued_per_backend(proc.stats()).values())
    finally:
        proc.stop()
        upstream.shutdown()


def test_the_policy_sizes_for_what_waits_in_the_gateway_s_queue(tmp_path):
    path = tmp_path / autoscaling.QUEUED_FILE
    ctx = SimpleNamespace(
        app_name="busy",
        total_num_requests=0,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: 2),
        capacity_adjusted_min_replicas=0,
        aggregated_metrics={"rayweb_direct_ongoing": {"replica-a": 4.0}},
        running_replicas=["replica-a"],
        current_num_replicas=1,
    )
    policy = autoscaling.BufferedPolicy(queued_path=str(path))
    assert policy(ctx)[0] == 2  # no file yet: ceil(4 / 2)
    autoscaling.write_queued(tmp_path, {"busy": 6, "other": 50})
    written = json.loads(path.read_text())["time"]
    assert policy.queued.get("busy", now=written) == 6.0
    assert policy.queued.get("nobody", now=written) == 0.0
    assert policy(ctx)[0] == 5, (policy.queued.get("busy"), written, time.time())  # (4 + 6) / 2
    # figures a gateway stopped refreshing are not believed
    assert policy.queued.get("busy", now=written + autoscaling.QUEUED_STALE_S + 1) == 0.0
    path.write_text(json.dumps({"time": time.time() - 60, "queued": {"busy": 6}}))
    assert policy(ctx)[0] == 2


def test_containers_holding_sticky_sessions_are_not_scaled_away(tmp_path):
    ctx = SimpleNamespace(
        app_name="rooms",
        total_num_requests=0,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: 2),
        capacity_adjusted_min_replicas=0,
        aggregated_metrics={"rayweb_direct_ongoing": {"a": 0.0, "b": 0.0, "c": 0.0}},
        running_replicas=["a", "b", "c"],
        current_num_replicas=3,
    )
    policy = autoscaling.BufferedPolicy(queued_path=str(tmp_path / autoscaling.QUEUED_FILE))
    assert policy(ctx)[0] == 0  # idle: scale to zero
    autoscaling.write_queued(tmp_path, {}, {"rooms": 2})  # two of them hold sessions
    assert policy(ctx)[0] == 2
    autoscaling.write_queued(tmp_path, {"rooms": 9}, {"rooms": 2})
    assert policy(ctx)[0] == 5  # load above the sessions' floor sizes as before
