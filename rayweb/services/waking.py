"""What the gateway's holder (``holder.py``) does on the cluster: admit a request for an
endpoint with no replica, and wake the endpoint.

``admit`` runs the endpoint's rate limit (the bucket its replicas share, one token) and proxy
auth (the store's tokens, cached as in the replicas) and answers 429 or 401 itself, so a
refused request never starts a replica. ``wake`` calls the endpoint's Serve deployment
through its handle (``RaywebReplica.rayweb_wake``): Serve counts the waiting call as a
queued request and scales the endpoint up from zero, exactly as for a request through its
own proxy, and the call returns the woken replica's own address.

Runs on the holder's thread in the gateway actor's process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from ..common import CLIENT_HEADER
from ..tokens import TokenCheck, parse_credentials
from .haproxy_config import Route
from .holder import Address, Head, response
from .ratelimit import Acquire, shared_limiter
from .store_actor import token_fetch

logger = logging.getLogger("rayweb.gateway")

WAKE_METHOD = "rayweb_wake"
_CLIENT = CLIENT_HEADER.encode()


def _json(detail: str) -> bytes:
    return json.dumps({"detail": detail}).encode()


class Waking:
    """Admission and wake-up for the routes ``route(app)`` returns."""

    def __init__(self, route: Callable[[str], Route | None]) -> None:
        self.route = route
        self.handles: dict[str, Any] = {}
        self.limiters: dict[tuple[str, float, float], Acquire] = {}
        self.tokens: TokenCheck | None = None

    async def wake(self, app: str) -> Address | None:
        route = self.route(app)
        # A class's web method is woken through its class's pool (replica/pool.py).
        serve_app = (route.serve_app if route is not None else None) or app
        handle: Any = self.handles.get(serve_app)
        if handle is None:
            from ray import serve

            loop = asyncio.get_running_loop()
            handle = await loop.run_in_executor(None, serve.get_app_handle, serve_app)
            self.handles[serve_app] = handle
        try:
            address = await handle.options(method_name=WAKE_METHOD).remote()
        except Exception:
            self.handles.pop(serve_app, None)  # the app may have been deleted or replaced
            raise
        if address is None:
            return None
        host, port = address
        return str(host), int(port)

    async def admit(self, app: str, head: Head) -> bytes | None:
        route = self.route(app)
        admission = route.admission if route is not None else None
        if admission is None:
            return None  # not declared by a deploy: the replica checks everything
        client = (head.header(_CLIENT) or b"unknown").decode("latin-1")
        if admission.rate_limit is not None:
            key = (app, admission.rate_limit, admission.rate_limit_burst_s)
            acquire = self.limiters.get(key)
            if acquire is None:
                loop = asyncio.get_running_loop()
                acquire = await loop.run_in_executor(None, shared_limiter, *key)
                self.limiters[key] = acquire
            taken, wait = await acquire(client, 1)
            if taken == 0:
                return response(
                    429,
                    "Too Many Requests",
                    _json("Too many requests from this client. Retry later."),
                    f"retry-after: {max(1, math.ceil(wait))}\r\n",
                )
        if admission.auth_headers is not None:
            credentials = parse_credentials(head.headers, *admission.auth_headers)
            problem = "missing credentials" if credentials is None else None
            if credentials is not None:
                if self.tokens is None:
                    self.tokens = TokenCheck(token_fetch())
                if not await self.tokens.valid(*credentials):
                    problem = "invalid credentials"
            if problem is not None:
                return response(
                    401,
                    "Unauthorized",
                    _json(f"rayweb: {problem} for proxy authorization"),
                    'www-authenticate: Bearer realm="rayweb"\r\n',
                )
        return None
