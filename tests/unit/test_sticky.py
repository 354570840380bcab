"""Sticky sessions at the gateway, on a real HAProxy (no Ray): requests with the same
``Modal-Session-Id`` (or ``Modal-Routing-Affinity-Key``) reach the same upstream while it is
registered, through scale-out (servers added with the runtime API, as the gateway does, not
by a reload) and the removal of other replicas; they move only when their own upstream goes;
requests without the header are spread."""

from __future__ import annotations

from collections import Counter

import httpx

from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import Route, Server, render_config
from rayweb.services.liveservers import LiveServers, snapshot
from tests.unit.test_gateway import _free_port, _Upstream

SESSIONS = [f"session-{i}" for i in range(40)]


def _first_hops(client: httpx.Client, url: str, header: str = "Modal-Session-Id") -> dict:
    return {s: client.get(url, headers={header: s}).text for s in SESSIONS}


def test_sessions_stay_on_their_replica_through_scale_out_and_move_only_when_it_goes(tmp_path):
    upstreams = {name: _Upstream(name) for name in ("a", "b", "c", "d")}
    port = _free_port()
    common = {
        "bind": ("127.0.0.1", port),
        "serve": ("127.0.0.1", upstreams["a"].port),
        "key": "k",
    }
    live = LiveServers()

    def routes(*names: str) -> dict[str, Route]:
        servers = {f"replica-{n}": Server("127.0.0.1", upstreams[n].port, 8) for n in names}
        return {"app": Route("/app", servers)}

    def change(*names: str) -> None:
        table = routes(*names)
        assert live.apply(proc, snapshot(table), render_config(routes=table, **common))

    proc = HAProxyProcess(tmp_path, render_config(routes=routes("a", "b"), **common))
    url = f"http://127.0.0.1:{port}/app/x"
    try:
        proc.wait_listening("127.0.0.1", port)
        live.reloaded(snapshot(routes("a", "b")), proc.master_pid)
        with httpx.Client() as client:
            first = _first_hops(client, url)
            assert set(first.values()) == {"a", "b"}  # new sessions are spread
            assert _first_hops(client, url) == first  # and stick
            # scale out from 2 to 4 replicas, registering one by one
            change("a", "b", "c")
            change("a", "b", "c", "d")
            assert "replica" not in (tmp_path / "haproxy.cfg").read_text()  # names are hashes
            assert (tmp_path / "haproxy.cfg").read_text().count(" maxconn 8 ") == 4  # file too
            for _ in range(3):
                assert _first_hops(client, url) == first  # every session stays put
            unsticky = Counter(client.get(url).text for _ in range(40))
            assert set(unsticky) == {"a", "b", "c", "d"}  # no header: every replica serves
            # replica "a" goes away: only its sessions move, and stick to their new home
            change("b", "c", "d")
            moved = _first_hops(client, url)
            for session, home in first.items():
                if home == "a":
                    assert moved[session] in {"b", "c", "d"}
                else:
                    assert moved[session] == home
            assert _first_hops(client, url) == moved
            # the newer header name wins over the older one
            key = {"Modal-Routing-Affinity-Key": "k1", "Modal-Session-Id": SESSIONS[0]}
            homes = {client.get(url, headers=key).text for _ in range(10)}
            assert len(homes) == 1
            # a new route needs a reload: HAProxy then runs the file, with every live server
            table = {**routes("b", "c", "d"), "other": Route("/other", {})}
            assert not live.apply(proc, snapshot(table), render_config(routes=table, **common))
            proc.reload(render_config(routes=table, **common))
            live.reloaded(snapshot(table), proc.master_pid)
            assert {client.get(url).text for _ in range(12)} == {"b", "c", "d"}
    finally:
        proc.stop()
        for upstream in upstreams.values():
            upstream.close()
