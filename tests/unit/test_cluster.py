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
