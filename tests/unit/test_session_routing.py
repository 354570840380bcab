"""Sticky sessions (``@rayweb.sessioned()``) on a real HAProxy (no Ray): a session's requests
reach the container it was started on, with its id in ``x-modal-server-session-id``, whether
its token comes in ``Modal-Authorization``, in the query (turned into a cookie by a redirect)
or in that cookie; requests without a live session get 401; sessions spread over containers;
termination and idleness end a session without a reload; the autoscaler's figure counts the
containers that hold sessions."""

from __future__ import annotations

import time

import httpx
import pytest

from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import Direct, Route, Server, render_config, served
from rayweb.services.maps import send_commands
from rayweb.services.sessions import SessionTable
from rayweb.services.tokenmap import TokenMap
from tests.unit.test_direct_hop import _Server
from tests.unit.test_gateway import _free_port


@pytest.fixture
def sessioned(tmp_path):
    """HAProxy serving a sessioned Server with two containers (on the direct hop)."""
    upstreams = {"replica-a": _Server(), "replica-b": _Server()}
    servers = {
        name: Server("127.0.0.1", 1, 4, ("127.0.0.1", up.port, 8)) for name, up in upstreams.items()
    }
    routes = {"srv": Route("/srv", servers, direct=Direct(rate_limit=1000.0), sessioned=True)}
    table = SessionTable(tmp_path)
    port = _free_port()
    config = render_config(
        bind=("127.0.0.1", port),
        serve=("127.0.0.1", 1),
        key="gateway-key",
        routes=served(routes, tokens_ready=False),
        tokens_map=str(TokenMap(tmp_path).path),
        sessions_map=str(table.path),
        domain="localhost",
    )
    proc = HAProxyProcess(tmp_path, config)
    try:
        proc.wait_listening("127.0.0.1", port)
        yield f"http://127.0.0.1:{port}/srv", table, proc, served(routes, False), upstreams
    finally:
        proc.stop()
        for up in upstreams.values():
            up.close()


def _sync(table: SessionTable, proc: HAProxyProcess, routes: dict[str, Route]) -> None:
    wanted = table.wanted(routes)
    table.write(wanted)
    send_commands(proc.runtime, table.commands(wanted))
    table.live = wanted


def test_a_sessions_requests_reach_its_container_however_the_token_comes(sessioned):
    url, table, proc, routes, _upstreams = sessioned
    now = time.monotonic()
    started = [table.start("srv", sorted(routes["srv"].servers), 60, now) for _ in range(4)]
    homes = {sid: s.replica for s in table.sessions.values() for sid in [s.session_id]}
    assert sorted(homes.values()) == ["replica-a", "replica-a", "replica-b", "replica-b"]
    _sync(table, proc, routes)
    with httpx.Client() as client:
        assert client.get(url + "/x").status_code == 401  # no session, no request
        wrong = client.get(url + "/x", headers={"Modal-Authorization": "Bearer st-nope"})
        assert wrong.status_code == 401 and "sticky session" in wrong.json()["detail"]
        for session_id, token in started:
            for _ in range(3):
                seen = client.get(url + "/x", headers={"Modal-Authorization": f"Bearer {token}"})
                headers = {k.lower(): v for k, v in seen.json()["headers"].items()}
                assert headers["x-modal-server-session-id"] == session_id
                assert "modal-authorization" not in headers  # the token stays at the gateway
                assert seen.json()["path"] == "/x"
                assert headers["host"]  # and the request is otherwise intact
        # The browser flow: the token in the query once, then a cookie.
        session_id, token = started[0]
        first = client.get(url + f"/page?a=1&modal_session_token={token}&b=2")
        assert first.status_code == 303
        assert first.headers["location"] == "/srv/page?a=1&b=2"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"modal_session={token}; Path=/srv; HttpOnly")
        again = client.get(url + "/page?a=1&b=2")  # httpx keeps the cookie
        assert again.json()["headers"]["x-modal-server-session-id"] == session_id
    # the same at the Server's own origin: back to the URL as the browser had it, the
    # cookie for the whole origin
    with httpx.Client(base_url=url.removesuffix("/srv"), headers={"Host": "srv.localhost"}) as at:
        first = at.get(f"/page?modal_session_token={token}")
        assert (first.status_code, first.headers["location"]) == (303, "/page")
        assert first.headers["set-cookie"].startswith(f"modal_session={token}; Path=/; HttpOnly")
        again = at.get("/page")
        assert again.json()["path"] == "/page"
        assert again.json()["headers"]["x-modal-server-session-id"] == session_id
    with httpx.Client() as client:
        # terminated: refused at once, no reload
        master = proc.master_pid
        assert table.terminate("srv", token)
        _sync(table, proc, routes)
        assert (
            client.get(url + "/x", headers={"Modal-Authorization": f"Bearer {token}"}).status_code
            == 401
        )
        assert proc.master_pid == master


def test_idle_sessions_end_and_their_containers_stay_while_they_live(sessioned):
    url, table, proc, routes, _upstreams = sessioned
    now = time.monotonic()
    busy_id, busy = table.start("srv", ["replica-a"], 2, now)
    idle_id, _idle = table.start("srv", ["replica-b"], 2, now)
    assert table.pinned() == {"srv": 2}
    _sync(table, proc, routes)
    with httpx.Client() as client:
        for _ in range(6):  # the busy one is seen every 0.5 s: 1.5 s to spare on a slow host
            client.get(url + "/x", headers={"Modal-Authorization": f"Bearer {busy}"})
            time.sleep(0.5)
            table.observe(proc.runtime("show table ss0"), time.monotonic())
    ended = table.expire(time.monotonic(), {"srv": {"replica-a", "replica-b"}})
    assert ended == [idle_id]  # 3 s without a request; the busy one was seen just now
    assert table.pinned() == {"srv": 1}
    # its container goes: the session ends with it
    assert table.expire(time.monotonic(), {"srv": {"replica-b"}}) == [busy_id]
    assert table.pinned() == {}
