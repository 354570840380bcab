"""Proxy-auth tokens: generation, salted hashing, constant-time checks, header parsing, and
``TokenCheck``, the credential cache that the replica's auth middleware and the gateway's
holder both use.

A token is a key (``wk-...``, public, identifies the token) and a secret (``ws-...``, shown
once). Only a salted scrypt hash of the secret is stored. Clients send
``Modal-Key: wk-...`` + ``Modal-Secret: ws-...`` (Modal's headers; the names are
configurable) or ``Authorization: Bearer wk-....ws-...`` (for generic clients such as
OpenAI SDKs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

KEY_PREFIX = "wk-"
SECRET_PREFIX = "ws-"
DEFAULT_KEY_HEADER = "Modal-Key"
DEFAULT_SECRET_HEADER = "Modal-Secret"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

REFRESH_S = 1.0
UNKNOWN_KEY_REFRESH_S = 0.2  # unknown keys may re-check this often (bounds a flood's cost)
REJECTED_PER_KEY = 64
REJECTED_KEYS = 10_000
# (version known) -> (current version, {key: (salt, hash)} or None when unchanged)
FetchHashes = Callable[[int], Awaitable[tuple[int, dict[str, tuple[str, str]] | None]]]


def new_token() -> tuple[str, str]:
    """A fresh (key, secret) pair."""
    return KEY_PREFIX + secrets.token_urlsafe(12), SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, salt: bytes | None = None) -> tuple[str, str]:
    """(salt, hash) as hex; scrypt makes a stolen store expensive to brute-force."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return salt.hex(), digest.hex()


def direct_digest(key: str, secret: str) -> str:
    """SHA-256 of ``key.secret`` (a Bearer token's text), hex: what the gateway's HAProxy
    checks credentials against on the direct hop (``services/tokenmap.py``). A fast hash is
    enough there: the secret has 256 random bits, nothing to guess from a digest."""
    return hashlib.sha256(f"{key}.{secret}".encode()).hexdigest()


def verify_secret(secret: str, salt_hex: str, hash_hex: str) -> bool:
    """Constant-time comparison of ``secret`` against a stored salted hash."""
    _, digest = hash_secret(secret, bytes.fromhex(salt_hex))
    return hmac.compare_digest(digest, hash_hex)


def parse_credentials(
    headers: Iterable[tuple[bytes, bytes]],
    key_header: str = DEFAULT_KEY_HEADER,
    secret_header: str = DEFAULT_SECRET_HEADER,
) -> tuple[str, str] | None:
    """The (key, secret) a request carries, from the key/secret headers or a Bearer token."""
    wanted_key, wanted_secret = key_header.lower().encode(), secret_header.lower().encode()
    key = secret = bearer = None
    for name, value in headers:
        lname = name.lower()
        if lname == wanted_key:
            key = value.decode("latin-1").strip()
        elif lname == wanted_secret:
            secret = value.decode("latin-1").strip()
        elif lname == b"authorization":
            scheme, _, rest = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = rest.strip()
    if key and secret:
        return key, secret
    if bearer and "." in bearer:
        key, _, secret = bearer.partition(".")
        if key.startswith(KEY_PREFIX) and secret.startswith(SECRET_PREFIX):
            return key, secret
    return None


class TokenCheck:
    """Whether a (key, secret) is a valid, unrevoked token, with the store's hashes cached.

    Hashes are refreshed at most every ``REFRESH_S`` seconds (an unknown key may trigger a
    refresh every ``UNKNOWN_KEY_REFRESH_S``), so a revocation reaches every checker within
    seconds. A secret verified once (scrypt, ~20 ms) is remembered as a SHA-256 digest for
    that key, so later requests cost a dict lookup and a constant-time compare; so is a secret
    found wrong (up to ``REJECTED_PER_KEY`` per key, forgotten when the tokens change), so
    repeating a wrong secret costs no scrypt either."""

    def __init__(self, fetch: FetchHashes) -> None:
        self.fetch = fetch
        self.version = -1
        self.hashes: dict[str, tuple[str, str]] = {}
        self.verified: dict[str, bytes] = {}  # key -> sha256(secret) known to be valid
        self.rejected: dict[str, set[bytes]] = {}  # key -> sha256(secret)s known to be wrong
        self.fetched_at = 0.0
        self.lock = asyncio.Lock()

    async def valid(self, key: str, secret: str) -> bool:
        await self._refresh(REFRESH_S)
        if key not in self.hashes:
            await self._refresh(UNKNOWN_KEY_REFRESH_S)  # a token created a moment ago
        stored = self.hashes.get(key)
        if stored is None:
            return False
        digest = hashlib.sha256(secret.encode()).digest()
        known = self.verified.get(key)
        if known is not None:
            return hmac.compare_digest(known, digest)
        if digest in self.rejected.get(key, ()):
            return False
        # scrypt is deliberately slow: keep it off the event loop
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_secret, secret, *stored)
        if ok:
            self.verified[key] = digest
        else:
            self._reject(key, digest)
        return ok

    def _reject(self, key: str, digest: bytes) -> None:
        if key not in self.rejected and len(self.rejected) >= REJECTED_KEYS:
            self.rejected.pop(next(iter(self.rejected)))  # the oldest key
        wrong = self.rejected.setdefault(key, set())
        if len(wrong) >= REJECTED_PER_KEY:
            wrong.pop()
        wrong.add(digest)

    async def _refresh(self, max_age: float) -> None:
        if time.monotonic() - self.fetched_at < max_age:
            return
        async with self.lock:
            if time.monotonic() - self.fetched_at < max_age:
                return
            version, hashes = await self.fetch(self.version)
            if hashes is not None:
                self.hashes = hashes
                self.verified = {k: v for k, v in self.verified.items() if k in hashes}
                self.rejected = {}  # a key may have a new secret now
            self.version = version
            self.fetched_at = time.monotonic()
