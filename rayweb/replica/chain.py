"""The one middleware chain of a replica, in one order for both data paths.

Outermost first: gateway trust → limits → proxy auth → concurrency slot → request timeout →
lifespan → root slash → the endpoint's app. So a request without the gateway key is refused (403)
before anything else, a flood gets its 429 before any credential is checked (a wrong-secret
flood costs a token bucket, not a scrypt per request), a request without valid credentials
gets its 401 without waiting for a slot, and only requests that passed all three take one of
the ``max_ongoing_requests`` slots, which both paths share.

Serve's path and the replica's own port (``direct.py``) differ only at the edge: on Serve's
path the gateway key is optional (requests may come from Serve's proxy directly); on the
replica's own port it is required and the route prefix is set as Serve would set it. The
middleware instances behind the edge are the same, so the auth cache, the rate-limit leases
and the slots are shared. No Ray here: unit-tested with plain ASGI calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..services.ratelimit import Acquire
from ..spec import Limits
from ..tokens import FetchHashes
from .adapters import LifespanGuard, RootSlash
from .auth import ProxyAuthMiddleware
from .direct import Counted
from .limits import LimitsMiddleware, RequestTimeout
from .trust import GatewayTrust, RoutePrefix
from .types import ASGIApp


class Chain:
    """rayweb's middleware around ``app`` (see the module docstring for the order).

    Args:
        app: the endpoint's ASGI app (the end of the chain).
        max_inputs: concurrency slots, shared by both paths; a semaphore: slots shared with
            others too (the web methods and calls of a class's pool).
        limits: ``rayweb.Limits``; ``acquire`` takes shared rate-limit tokens.
        auth: (fetch token hashes, (key header, secret header)) for ``requires_proxy_auth``.
        gateway_key: the cluster's gateway key, or None when there is no gateway.
        on_startup: awaited once the app's lifespan startup completed (starts the direct port).
        full_status: refuse a request with this status (429) when every slot is taken,
            instead of letting it wait for one (``@app.server(max_concurrency=)``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_inputs: int | asyncio.Semaphore = 1,
        limits: Limits | None = None,
        acquire: Acquire | None = None,
        auth: tuple[FetchHashes, tuple[str, str]] | None = None,
        gateway_key: str | None = None,
        on_startup: Callable[[], Any] | None = None,
        full_status: int | None = None,
    ) -> None:
        self.gateway_key = gateway_key
        # Lifespan passes through the layers outside it untouched (they only act on
        # http/websocket scopes), so it can sit right around the app.
        inner: ASGIApp = LifespanGuard(RootSlash(app), on_startup)
        if limits is not None and limits.request_timeout is not None:
            inner = RequestTimeout(inner, limits.request_timeout)  # counts from the slot on
        self.slots = Counted(inner, max_inputs, full_status=full_status)
        inner = self.slots
        if auth is not None:
            fetch, (key_header, secret_header) = auth
            inner = ProxyAuthMiddleware(inner, fetch, key_header, secret_header)
        if limits is not None:
            inner = LimitsMiddleware(inner, limits, acquire)
        self.shared = inner

    @property
    def serve_path(self) -> ASGIApp:
        """What Serve's replica runs: the gateway key is optional here."""
        return GatewayTrust(self.shared, self.gateway_key, require=False)

    def direct_path(self, prefix: str) -> ASGIApp:
        """What the replica's own port runs: only the gateway (with its key) may call it."""
        return RoutePrefix(GatewayTrust(self.shared, self.gateway_key, require=True), prefix)
