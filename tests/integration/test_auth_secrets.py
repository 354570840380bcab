"""Proxy-auth tokens and the cluster-side secret store, on the real cluster."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import rayweb
from rayweb.exception import NotFoundError
from rayweb.services.store import Store
from tests.integration.conftest import example_app

CANARY = "canary-5f1e9d2c7b"


@pytest.fixture(scope="module")
def secure(ray_cluster):
    from tests.integration.conftest import TEST_PORT

    handle = rayweb.serve(example_app("proxy_auth.py"), port=TEST_PORT, quiet=True)
    yield handle.urls
    handle.stop()


def _first_200(url: str, headers: dict[str, str], limit_s: float = 5) -> httpx.Response:
    """New tokens reach replicas within a refresh interval (0.2-1 s); wait that long."""
    deadline = time.monotonic() + limit_s
    while True:
        r = httpx.get(url, headers=headers)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_requests_without_valid_credentials_get_401(secure):
    r = httpx.get(secure["hello"])
    assert r.status_code == 401
    assert r.json() == {"detail": "rayweb: missing credentials for proxy authorization"}
    bad = httpx.get(secure["hello"], headers={"Modal-Key": "wk-nope", "Modal-Secret": "ws-nope"})
    assert bad.status_code == 401 and "invalid credentials" in bad.text


def test_key_secret_headers_and_bearer_both_work_and_revocation_is_fast(secure):
    store = Store()  # the same store the cluster's actor uses (this machine's head node)
    key, secret = store.create_token("integration")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    assert _first_200(secure["hello"], headers).json() == {"message": "only for token holders"}
    bearer = {"Authorization": f"Bearer {key}.{secret}"}
    assert _first_200(secure["api"], bearer).json() == {"api": "ok"}
    wrong_secret = {"Modal-Key": key, "Modal-Secret": secret[:-1] + "x"}
    assert httpx.get(secure["hello"], headers=wrong_secret).status_code == 401

    store.revoke_token(key)
    start = time.monotonic()
    for url, creds in ((secure["hello"], headers), (secure["api"], bearer)):
        while httpx.get(url, headers=creds).status_code == 200:  # each replica, on its own
            assert time.monotonic() - start < 10, f"revocation did not reach {url}"
            time.sleep(0.1)
    assert time.monotonic() - start < 5  # seconds, not minutes
    assert httpx.get(secure["hello"], headers=headers).status_code == 401


def test_websocket_upgrades_are_authenticated(secure):
    key, secret = Store().create_token()
    ws_url = secure["api"].replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus), connect(ws_url):
        pass
    assert _first_200(secure["api"], {"Modal-Key": key, "Modal-Secret": secret}).status_code == 200
    with connect(ws_url, additional_headers={"Modal-Key": key, "Modal-Secret": secret}) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"


def test_cli_token_works_against_served_endpoints(secure):
    out = subprocess.run(
        [sys.executable, "-m", "rayweb.cli", "token", "create", "--name", "cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = out.split("Token key:")[1].split()[0]
    secret = out.split("Token secret:")[1].split()[0]
    r = _first_200(secure["hello"], {"Authorization": f"Bearer {key}.{secret}"})
    assert r.status_code == 200
    listing = subprocess.run(
        [sys.executable, "-m", "rayweb.cli", "token", "list"], capture_output=True, text=True
    ).stdout
    assert key in listing and secret not in listing


def test_custom_bearer_example_with_a_named_secret(served):
    Store().put_secret("my-web-auth-token", {"AUTH_TOKEN": "letmein"}, force=True)
    url = served(example_app("secret_bearer.py")).urls["f"]
    assert httpx.get(url).status_code in (401, 403)  # HTTPBearer: no header
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(url, headers={"Authorization": "Bearer letmein"}).json()
    assert ok == {"message": "success!", "client": "127.0.0.1"}


def test_missing_secret_or_key_fails_the_deploy_naming_the_fix(served):
    app = rayweb.App("needs-secret")

    @app.function(serialized=True, secrets=[rayweb.Secret.from_name("absent-secret")])
    @rayweb.fastapi_endpoint()
    def f() -> str:
        return "x"

    with pytest.raises(
        NotFoundError, match="Secret 'absent-secret' not found.*rayweb secret create absent-secret"
    ):
        served(app)

    Store().put_secret("partial", {"HAVE": CANARY}, force=True)
    app2 = rayweb.App("needs-key")

    @app2.function(
        serialized=True,
        secrets=[rayweb.Secret.from_name("partial", required_keys=["HAVE", "WANT"])],
    )
    @rayweb.fastapi_endpoint()
    def g() -> str:
        return "x"

    with pytest.raises(NotFoundError) as info:
        served(app2)
    assert "missing required key(s) WANT" in str(info.value)
    assert "rayweb secret create partial WANT=..." in str(info.value)
    assert CANARY not in str(info.value)


def test_secret_values_reach_replicas_and_sidecars_but_nowhere_else(served, tmp_path):
    Store().put_secret("canary", {"CANARY_NAMED": CANARY}, force=True)
    site = tmp_path / "site"
    site.mkdir()
    app = rayweb.App("canary")

    @app.function(
        serialized=True,
        secrets=[
            rayweb.Secret.from_name("canary"),
            rayweb.Secret.from_dict({"CANARY_INLINE": CANARY + "-inline"}),
        ],
    )
    @rayweb.fastapi_endpoint()
    def check() -> dict:
        import hashlib

        # Digests, so the canary itself is not part of this (pickled) function.
        return {
            k: hashlib.sha256(os.environ.get(k, "").encode()).hexdigest()
            for k in ("CANARY_NAMED", "CANARY_INLINE")
        }

    @app.function(serialized=True, secrets=[rayweb.Secret.from_name("canary")])
    @rayweb.web_server(8000, startup_timeout=20)
    def side():
        import hashlib
        import subprocess
        import sys

        seen = hashlib.sha256(os.environ.get("CANARY_NAMED", "").encode()).hexdigest()
        (site / "seen.txt").write_text(seen)
        subprocess.Popen([sys.executable, "-m", "http.server", "8000", "--directory", str(site)])

    handle = served(app)
    digest = hashlib.sha256(CANARY.encode()).hexdigest()
    inline_digest = hashlib.sha256((CANARY + "-inline").encode()).hexdigest()
    assert httpx.get(handle.urls["check"]).json() == {
        "CANARY_NAMED": digest,
        "CANARY_INLINE": inline_digest,
    }
    assert httpx.get(handle.urls["side"] + "/seen.txt").text == digest

    # Not in the deployment arguments Serve pickles and stores ...
    from ray import cloudpickle, serve

    from rayweb.compiler import build_application, compile_app

    for endpoint in compile_app(app):
        assert CANARY.encode() not in cloudpickle.dumps(build_application(endpoint))
        assert CANARY.encode() not in pickle.dumps(endpoint.payload)
    # ... nor in what Serve reports ...
    assert CANARY not in repr(serve.status())
    # ... nor in any Ray or rayweb log of this cluster.
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert CANARY.encode() not in path.read_bytes(), path


def test_store_file_is_private(store_dir):
    Store().put_secret("perm-check", {"K": "v"}, force=True)
    assert (store_dir / "store.json").stat().st_mode & 0o077 == 0
    assert store_dir.stat().st_mode & 0o077 == 0
