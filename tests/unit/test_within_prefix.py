"""Answers stay within their endpoint, on a real HAProxy (no Ray): under the path form a
root-relative redirect and a cookie's ``Path`` are put under the route's prefix, on a
replica's route and on the direct hop alike; at the endpoint's own origin
(``<label>.localhost``) they stay as the app sent them; an unknown host of the domain gets a
404 naming the endpoints."""

from __future__ import annotations

import time

import httpx
import pytest

from rayweb.services.haproxy import HAProxyProcess
from rayweb.services.haproxy_config import Direct, Route, Server, render_config, served
from tests.unit.test_direct_hop import _Server
from tests.unit.test_gateway import _free_port, _Upstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """HAProxy with ``/site`` (a replica's own port: the app sees the full path) and
    ``/srv`` (the direct hop: the prefix stripped); yields the gateway's URL."""
    app, serve = _Server(), _Upstream("serve")
    port = _free_port()
    routes = {
        "site": Route("/site", {"r1": Server("127.0.0.1", app.port, 8)}),
        "srv": Route(
            "/srv",
            {"r2": Server("127.0.0.1", 1, 8, ("127.0.0.1", app.port, 8))},
            direct=Direct(),
        ),
    }
    config = render_config(
        bind=("127.0.0.1", port),
        serve=("127.0.0.1", serve.port),
        key="k",
        routes=served(routes, True),
        domain="localhost",
    )
    folder = tmp_path_factory.mktemp("haproxy")
    proc = HAProxyProcess(folder, config)
    try:
        proc.wait_listening("127.0.0.1", port)
        time.sleep(0.3)  # the first health check
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()
        app.close()
        serve.close()


def _cookies(client: httpx.Client, path: str, *cookies: str) -> list[str]:
    r = client.get(path, params=[("c", c) for c in cookies])
    assert r.status_code == 200
    return r.headers.get_list("set-cookie")


@pytest.mark.parametrize("label", ["site", "srv"])
def test_redirects_and_cookie_paths_stay_under_the_prefix(gateway, label):
    prefix = f"/{label}"
    with httpx.Client(base_url=gateway) as client:
        for target, sent in (
            ("/result", f"{prefix}/result"),
            ("/", f"{prefix}/"),
            (f"{prefix}/done", f"{prefix}/done"),  # built from root_path: already inside
            ("//cdn.example/x", "//cdn.example/x"),
            ("https://example.com/x", "https://example.com/x"),
            ("result", "result"),  # relative: the browser resolves it inside
        ):
            r = client.get(f"{prefix}/go", params={"to": target})
            assert (r.status_code, r.headers["location"]) == (302, sent), target
        sent = _cookies(
            client,
            f"{prefix}/cookie",
            "a=1; Path=/",
            "b=2; HttpOnly; path=/app; SameSite=Lax",
            f"c=3; Path={prefix}/x",
            "d=4; Max-Age=60",  # no Path: the browser's default path is inside already
            "e=5; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
            f"f=6; Path={prefix}",
        )
        assert sent == [
            f"a=1; Path={prefix}",
            f"b=2; HttpOnly; path={prefix}/app; SameSite=Lax",
            f"c=3; Path={prefix}/x",
            "d=4; Max-Age=60",
            f"e=5; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path={prefix}",
            f"f=6; Path={prefix}",
        ]


@pytest.mark.parametrize("label", ["site", "srv"])
def test_at_its_own_origin_answers_stay_as_the_app_sent_them(gateway, label):
    with httpx.Client(base_url=gateway, headers={"Host": f"{label}.localhost"}) as client:
        seen = client.get("/page?q=1").json()
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert "x-forwarded-prefix" not in headers
        # the replica's own port gets the path under the prefix and the origin header, and
        # its trust check serves it at `/` (replica/trust.py); the direct hop sends `/page`
        if label == "site":
            assert (seen["path"], headers["x-rayweb-origin"]) == ("/site/page?q=1", "1")
        else:
            assert seen["path"] == "/page?q=1" and "x-rayweb-origin" not in headers
        r = client.get("/go", params={"to": "/result"})
        assert r.headers["location"] == "/result"
        assert _cookies(client, "/cookie", "a=1; Path=/") == ["a=1; Path=/"]


def test_a_client_cannot_claim_the_origin_form_on_the_path_form(gateway):
    sent = httpx.get(gateway + "/site/page", headers={"x-rayweb-origin": "1"}).json()
    assert "x-rayweb-origin" not in {k.lower() for k in sent["headers"]}


def test_an_unknown_host_of_the_domain_gets_a_404_naming_the_endpoints(gateway):
    r = httpx.get(gateway + "/", headers={"Host": "nope.localhost:80"})
    assert r.status_code == 404
    assert r.json()["detail"] == "No endpoint is served at this host. Endpoints here: site, srv."
    # any other host is the path form
    assert httpx.get(gateway + "/site/page", headers={"Host": "example.test"}).status_code == 200
