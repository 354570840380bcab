"""Proxy-auth tokens: generation, salted hashing, constant-time checks, header parsing.

A token is a key (``wk-...``, public, identifies the token) and a secret (``ws-...``, shown
once). Only a salted scrypt hash of the secret is stored. Clients send
``Modal-Key: wk-...`` + ``Modal-Secret: ws-...`` (Modal's headers; the names are
configurable) or ``Authorization: Bearer wk-....ws-...`` (for generic clients such as
OpenAI SDKs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

KEY_PREFIX = "wk-"
SECRET_PREFIX = "ws-"
DEFAULT_KEY_HEADER = "Modal-Key"
DEFAULT_SECRET_HEADER = "Modal-Secret"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def new_token() -> tuple[str, str]:
    """A fresh (key, secret) pair."""
    return KEY_PREFIX + secrets.token_urlsafe(12), SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, salt: bytes | None = None) -> tuple[str, str]:
    """(salt, hash) as hex; scrypt makes a stolen store expensive to brute-force."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return salt.hex(), digest.hex()


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
