"""Tokens and the secret store without a cluster."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import rayweb
from rayweb.exception import InvalidError, NotFoundError
from rayweb.services.store import Store
from rayweb.tokens import hash_secret, new_token, parse_credentials, verify_secret


def test_tokens_hash_and_verify():
    key, secret = new_token()
    assert key.startswith("wk-") and secret.startswith("ws-")
    salt, digest = hash_secret(secret)
    assert verify_secret(secret, salt, digest)
    assert not verify_secret(secret + "x", salt, digest)
    assert hash_secret(secret)[1] != digest  # salted


def test_parse_credentials():
    both = [(b"modal-key", b"wk-a"), (b"Modal-Secret", b"ws-b")]
    assert parse_credentials(both) == ("wk-a", "ws-b")
    assert parse_credentials([(b"authorization", b"Bearer wk-a.ws-b")]) == ("wk-a", "ws-b")
    assert parse_credentials([(b"authorization", b"Bearer nope")]) is None
    assert parse_credentials(
        [(b"x-api-key", b"wk-a"), (b"x-api-secret", b"ws-b")], "X-Api-Key", "X-Api-Secret"
    ) == ("wk-a", "ws-b")
    assert parse_credentials([(b"modal-key", b"wk-a")]) is None


def test_store_secrets_and_tokens(tmp_path):
    store = Store(tmp_path)
    store.put_secret("db", {"USER": "u", "PASSWORD": "p"})
    with pytest.raises(InvalidError, match="already exists.*--force"):
        store.put_secret("db", {"USER": "v"})
    other = Store(tmp_path)  # another process's view: sees changes through the file
    assert other.get_secret("db") == {"USER": "u", "PASSWORD": "p"}
    assert other.list_secrets() == [
        {"name": "db", "keys": ["PASSWORD", "USER"], "created": other.list_secrets()[0]["created"]}
    ]
    with pytest.raises(
        NotFoundError, match="missing required key\\(s\\) HOST.*rayweb secret create db HOST=..."
    ):
        other.get_secret("db", ("USER", "HOST"))
    with pytest.raises(InvalidError, match="Invalid environment variable name"):
        store.put_secret("bad", {"1X": "v"})

    key, secret = store.create_token("ci")
    salt, digest = other.token_hashes()[key]
    assert verify_secret(secret, salt, digest)
    assert secret not in (tmp_path / "store.json").read_text()
    store.revoke_token("ci")
    assert key not in other.token_hashes()
    assert other.list_tokens()[0]["revoked"] is not None
    assert (tmp_path / "store.json").stat().st_mode & 0o077 == 0


def test_pickled_secrets_carry_no_values():
    secret = rayweb.Secret.from_dict({"API_KEY": "canary-value"})
    assert b"canary-value" not in pickle.dumps(secret)
    assert pickle.loads(pickle.dumps(secret)).ref().values == {"API_KEY": ""}


def test_cli_never_prints_secret_values(tmp_path):
    env = {"RAYWEB_STORE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "rayweb.cli", "secret"]
    created = subprocess.run(
        [*run, "create", "svc", "TOKEN=canary-cli-value"], capture_output=True, text=True, env=env
    )
    assert created.returncode == 0 and "TOKEN" in created.stderr
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, env=env)
    for out in (created.stdout + created.stderr, listed.stdout + listed.stderr):
        assert "canary-cli-value" not in out
    dup = subprocess.run(
        [*run, "create", "svc", "TOKEN=canary-cli-value"], capture_output=True, text=True, env=env
    )
    assert dup.returncode == 1 and "canary-cli-value" not in dup.stderr
