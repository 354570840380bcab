"""Embedded-Ray bookkeeping that needs no cluster: hold/release and the port check."""

from __future__ import annotations

import socket

import pytest

from rayweb.driver import cluster
from rayweb.exception import InvalidError


def test_last_holder_stops_the_embedded_ray(monkeypatch):
    stops: list[int] = []
    monkeypatch.setattr(cluster, "_state", cluster.ClusterState(started_ray=True))
    monkeypatch.setattr(cluster, "stop_embedded", lambda: stops.append(1))
    assert cluster.hold() and cluster.hold()
    cluster.release()
    assert stops == []  # a notebook's second serve() keeps running
    cluster.release()
    assert stops == [1]


def test_not_ours_is_never_held(monkeypatch):
    monkeypatch.setattr(cluster, "_state", cluster.ClusterState(started_ray=False))
    assert cluster.hold() is False


def test_taken_port_is_reported_with_a_suggestion():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            InvalidError, match=f"Port {port} on 127.0.0.1 is not available.*--port {port + 1}"
        ):
            cluster._check_port_free("127.0.0.1", port)


def test_a_cluster_finds_its_processes_by_whole_path_components():
    from rayweb.driver.local_cluster import in_dir, names_dir

    mine = "/tmp/rayweb-relprobe-0"
    assert in_dir("/tmp/rayweb-relprobe-0", mine)
    assert in_dir("/tmp/rayweb-relprobe-0/session_latest/logs/raylet.out", mine)
    assert not in_dir("/tmp/rayweb-relprobe-0-0/logs/raylet.out", mine)
    assert not in_dir("/tmp/rayweb-relprobe", mine)
    assert names_dir("--temp-dir=/tmp/rayweb-relprobe-0", mine)
    assert names_dir("--log-dir=/tmp/rayweb-relprobe-0/session/logs,--x", mine)
    assert not names_dir("--temp-dir=/tmp/rayweb-relprobe-0-0", mine)
    # cluster `relprobe` must not claim the processes of cluster `relprobe-0`
    assert not names_dir("--temp-dir=/tmp/rayweb-relprobe-0", "/tmp/rayweb-relprobe")
    assert not in_dir("/tmp/rayweb-relprobe-0/logs/gcs.out", "/tmp/rayweb-relprobe")


def test_serve_controller_and_proxy_output_stays_out_of_the_terminal(monkeypatch):
    """What Ray forwards to the driver passes through its dispatcher's ``ray_print_logs``
    handler (ray.init adds it); rayweb's filter in front of it drops Serve's actors only."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed: list[str] = []
    monkeypatch.setattr(
        dispatcher, "handlers", [("ray_print_logs", lambda b: printed.append(b["actor_name"]))]
    )
    cluster.quiet_serve_actors()
    cluster.quiet_serve_actors()  # once is enough: not wrapped twice
    for name in ("ServeController", "ProxyActor", "ServeReplica:app:ep", "GatewayActor", None):
        dispatcher.emit({"actor_name": name, "lines": ["x"], "is_err": True, "pid": 1})
    assert printed == ["ServeReplica:app:ep", "GatewayActor", None]
    assert cluster.from_serve_actor({"actor_name": "ServeController"})
    assert not cluster.from_serve_actor({"task_name": "f"})
    # the raylet's note when Serve stops, and only that kind of raylet batch
    note = "Task ServeController.graceful_shutdown failed. There are infinite retries remaining"
    assert cluster.from_serve_actor({"pid": "raylet", "lines": [note]})
    assert not cluster.from_serve_actor({"pid": "raylet", "lines": [note, "Task f failed."]})
    assert not cluster.from_serve_actor({"pid": "raylet", "lines": []})
