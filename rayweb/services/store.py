"""The cluster-side store of named secrets and proxy-auth token hashes.

One JSON file, ``store.json``, in a directory on the Ray head node (``RAYWEB_STORE_DIR``,
default ``~/.rayweb/store``): the directory is created with mode 0700 and the file is
written with mode 0600 by atomic replace under an ``fcntl`` lock, so only the user that runs
Ray (and root) can read it. Secret values are stored as given (the file's permissions are
their protection); tokens are stored only as salted scrypt hashes, and as a SHA-256 digest
of key and secret for the gateway's HAProxy (``tokens.direct_digest``).

The CLI uses this class directly for the local machine; replicas and remote CLIs reach it
through the ``rayweb-store`` actor on the head node (``store_actor.py``). Every
read checks the file's mtime, so changes made by either path are seen at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..exception import InvalidError, NotFoundError
from ..tokens import direct_digest, hash_secret, new_token

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_store_dir() -> Path:
    return Path(os.environ.get("RAYWEB_STORE_DIR") or Path.home() / ".rayweb" / "store")


class Store:
    """Secrets and token hashes in one locked, private JSON file."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.dir = Path(directory) if directory else default_store_dir()
        self.path = self.dir / "store.json"
        self._mtime = -1.0
        self._data: dict[str, Any] = {"secrets": {}, "tokens": {}, "version": 0}

    # -- file handling ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            data["version"] = int(data.get("version", 0)) + 1
            tmp = self.dir / f".store.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
            self._data, self._mtime = data, self.path.stat().st_mtime

    def _read(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {"secrets": {}, "tokens": {}, "version": 0}
        if mtime != self._mtime:
            self._data = json.loads(self.path.read_text())
            self._mtime = mtime
        return self._data

    @property
    def version(self) -> int:
        return int(self._read().get("version", 0))

    # -- secrets -----------------------------------------------------------------------
    def put_secret(self, name: str, values: Mapping[str, str], *, force: bool = False) -> None:
        if not NAME_RE.match(name):
            raise InvalidError(
                f"Invalid secret name {name!r}: use letters, digits, '.', '_' or '-' (max 64)."
            )
        bad = [k for k in values if not KEY_RE.match(k)]
        if bad:
            raise InvalidError(f"Invalid environment variable name(s) {bad} in secret {name!r}.")
        if not values:
            raise InvalidError(f"Secret {name!r} needs at least one KEY=VALUE.")
        with self._locked() as data:
            if name in data["secrets"] and not force:
                raise InvalidError(
                    f"Secret {name!r} already exists. Suggestion: add --force to overwrite it."
                )
            data["secrets"][name] = {"values": dict(values), "created": time.time()}

    def get_secret(self, name: str, required_keys: tuple[str, ...] = ()) -> dict[str, str]:
        entry = self._read()["secrets"].get(name)
        if entry is None:
            raise NotFoundError(
                f"Secret {name!r} not found. Suggestion: rayweb secret create {name} KEY=VALUE"
            )
        values: dict[str, str] = dict(entry["values"])
        missing = [k for k in required_keys if k not in values]
        if missing:
            keys = " ".join(f"{k}=..." for k in missing)
            raise NotFoundError(
                f"Secret {name!r} is missing required key(s) {', '.join(missing)}. "
                f"Suggestion: rayweb secret create {name} {keys} --force (with the existing keys)"
            )
        return values

    def list_secrets(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "keys": sorted(entry["values"]), "created": entry["created"]}
            for name, entry in sorted(self._read()["secrets"].items())
            if not name.startswith("_inline-")
        ]

    def delete_secret(self, name: str, *, allow_missing: bool = False) -> bool:
        with self._locked() as data:
            if name not in data["secrets"]:
                if allow_missing:
                    return False
                raise NotFoundError(f"Secret {name!r} not found.")
            del data["secrets"][name]
            return True

    # -- tokens ------------------------------------------------------------------------
    def create_token(self, name: str | None = None) -> tuple[str, str]:
        """A new token; the secret is returned once and stored only as a salted hash."""
        key, secret = new_token()
        salt, digest = hash_secret(secret)
        with self._locked() as data:
            data["tokens"][key] = {
                "name": name or "",
                "salt": salt,
                "hash": digest,
                "digest": direct_digest(key, secret),
                "created": time.time(),
                "revoked": None,
            }
        return key, secret

    def list_tokens(self) -> list[dict[str, Any]]:
        return [
            {"key": key, "name": t["name"], "created": t["created"], "revoked": t["revoked"]}
            for key, t in self._read()["tokens"].items()
        ]

    def revoke_token(self, key_or_name: str) -> list[str]:
        with self._locked() as data:
            hits = [
                k
                for k, t in data["tokens"].items()
                if (k == key_or_name or (t["name"] and t["name"] == key_or_name))
                and t["revoked"] is None
            ]
            if not hits:
                raise NotFoundError(f"No active token with key or name {key_or_name!r}.")
            for k in hits:
                data["tokens"][k]["revoked"] = time.time()
            return hits

    def token_hashes(self) -> dict[str, tuple[str, str]]:
        """Active tokens: key -> (salt, hash). What replicas check credentials against."""
        return {
            key: (t["salt"], t["hash"])
            for key, t in self._read()["tokens"].items()
            if t["revoked"] is None
        }

    def token_digests(self) -> tuple[dict[str, str], bool]:
        """Active tokens as the gateway's HAProxy checks them: ({digest: key}, whether every
        active token has one: tokens made before digests were kept have none)."""
        active = [(k, t) for k, t in self._read()["tokens"].items() if t["revoked"] is None]
        digests = {t["digest"]: key for key, t in active if t.get("digest")}
        return digests, len(digests) == len(active)
