"""``@rayweb.sessioned()`` on the real cluster (examples/server_sessions.py): a session's
requests reach one container with its id, sessions spread over the containers, a request
without a live session gets 401, the browser flow (a web function starts a session and
redirects with ``?modal_session_token=``, the gateway turns it into a cookie) works, and a
session ends when terminated, when idle, and when its container dies."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

import rayweb
from tests.integration.conftest import TEST_PORT, example_app


@pytest.fixture(scope="module")
def rooms(ray_cluster):
    app = example_app("server_sessions.py")
    handle = rayweb.serve(app, port=TEST_PORT, quiet=True)
    yield handle.urls, app.registered_servers["Room"]
    handle.stop()


def _get(client: httpx.Client, url: str, token: str) -> httpx.Response:
    return client.get(url, headers={"Modal-Authorization": f"Bearer {token}"})


def _live_sessions() -> dict:
    import ray

    from rayweb.services.gateway import find_gateway

    return ray.get(find_gateway().session_stats.remote())


def _until(check, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {limit_s} s: {what}")


def test_each_sessions_requests_reach_its_own_container(rooms):
    urls, room = rooms
    url = urls["Room"]
    assert httpx.get(url).status_code == 401
    sessions = [room.sessions.start(idle_timeout=300) for _ in range(6)]
    homes = {}
    with httpx.Client() as client:
        for round_ in range(1, 4):
            for session in sessions:
                seen = _get(client, url + "/hello", session.token).json()
                assert seen["session"] == session.session_id
                assert seen["count"] == round_  # every request of it reached the same place
                assert seen["path"] == "/hello"
                homes.setdefault(session.session_id, seen["container"])
                assert seen["container"] == homes[session.session_id]
    assert len(set(homes.values())) == 2  # new sessions go to the container with fewest
    for session in sessions:
        room.sessions.terminate(session.token)
        assert _get(httpx.Client(), url, session.token).status_code == 401
    room.sessions.terminate(sessions[0].token)  # ending an ended session is no error


def test_a_browser_gets_a_session_from_the_lobby_and_keeps_it_in_a_cookie(rooms):
    urls, _room = rooms
    with httpx.Client(follow_redirects=True) as browser:
        first = browser.get(urls["lobby"])
        assert first.status_code == 200
        assert "modal_session_token" not in str(first.url)  # the token left the address bar
        again = browser.get(str(first.url)).json()
        assert again["session"] == first.json()["session"]
        assert again["count"] == first.json()["count"] + 1


def test_sessions_end_when_idle_and_when_their_container_dies(rooms):
    urls, room = rooms
    url = urls["Room"]
    idle = room.sessions.start(idle_timeout=2)
    assert _get(httpx.Client(), url, idle.token).status_code == 200
    _until(lambda: idle.session_id not in str(_live_sessions()), 15, "idle end")  # no requests
    assert _get(httpx.Client(), url, idle.token).status_code == 401
    found = rayweb.Server.from_name("server-sessions", "Room")  # as another process would
    doomed = found.sessions.start(idle_timeout=300)
    container = _get(httpx.Client(), url, doomed.token).json()["container"]
    os.kill(container, signal.SIGKILL)
    _until(lambda: _get(httpx.Client(), url, doomed.token).status_code == 401, 60, "ended")
    # the pool serves new sessions again once the container is replaced
    fresh = room.sessions.start(idle_timeout=300)
    _until(lambda: _get(httpx.Client(), url, fresh.token).status_code == 200, 60, "new session")


def test_sessions_work_on_the_replicas_path_too(served, monkeypatch):
    """Without the direct hop a session's requests go to its replica's own port, where the
    session stands in for proxy auth (on by default for Servers)."""
    from examples.server_sessions import ROOM

    monkeypatch.setenv("RAYWEB_DIRECT_HOP", "0")
    app = rayweb.App("sessions-replica-path")

    @app.server(port=8230, serialized=True)
    @rayweb.sessioned()
    class Replicated:
        @rayweb.enter()
        def start(self):
            import subprocess
            import sys

            subprocess.Popen([sys.executable, "-c", ROOM, "8230"])

    url = served(app).urls["Replicated"]
    session = Replicated.sessions.start()
    with httpx.Client() as client:
        for count in (1, 2):
            seen = _get(client, url + "/x", session.token).json()
            assert (seen["session"], seen["count"], seen["path"]) == (
                session.session_id,
                count,
                "/x",
            )
        assert client.get(url + "/x").status_code == 401


def test_sessions_survive_a_restart_of_the_gateway_actor(rooms):
    import ray

    from rayweb.services.gateway import find_gateway

    urls, room = rooms
    session = room.sessions.start(idle_timeout=300)
    with httpx.Client() as client:
        home = _get(client, urls["Room"], session.token).json()["container"]
        gateway = find_gateway()
        pid = ray.get(gateway.pid.remote())
        os.kill(pid, signal.SIGKILL)  # Ray restarts it; it adopts HAProxy and its state
        _until(lambda: ray.get(gateway.pid.remote()) != pid, 60, "the gateway restarted")
        after = _get(client, urls["Room"], session.token).json()
        assert (after["session"], after["container"]) == (session.session_id, home)
        assert session.session_id in str(_live_sessions())
