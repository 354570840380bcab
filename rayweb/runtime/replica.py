"""The Serve deployment class behind every rayweb endpoint.

One class serves all web kinds. Its constructor sets the environment, loads the user's code
and runs ``@enter``; Serve then calls ``__serve_build_asgi_app__`` (the one Serve seam rayweb
uses, public since Ray 2.60's ``serve.ingress()`` without an app) to get the ASGI app, and
``__del__`` at shutdown, where ``@exit`` runs.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from ray import serve

from ..spec import ReplicaPayload
from . import adapters
from .auth import store_fetch
from .limits import shared_limiter
from .loader import UserCodeError, load_target, user_failure
from .proxy import ReverseProxy
from .webserver import start_sidecar

logger = logging.getLogger("rayweb.replica")


async def _call(fn: Any) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


async def resolve_secrets(payload: ReplicaPayload) -> dict[str, str]:
    """The replica's secret environment, fetched from the cluster's store."""
    if not payload.secrets:
        return {}
    from .loader import remote_error
    from .store_actor import store_actor

    try:
        env: dict[str, str] = await store_actor().resolve.remote(list(payload.secrets))
    except Exception as exc:
        raise remote_error(exc) from None
    return env


async def _stop_sidecar(sidecar: Any) -> None:
    import asyncio

    import ray

    try:
        await asyncio.wait_for(sidecar.stop.remote(), timeout=15)
    except Exception:
        logger.warning("stopping a web_server sidecar failed; killing it", exc_info=True)
    ray.kill(sidecar)


@serve.ingress()
class RaywebReplica:
    """Runs one endpoint: ``payload`` says which code, which web kind and which options."""

    async def __init__(self, payload: ReplicaPayload) -> None:  # type: ignore[misc]
        self._payload = payload
        self._instance: Any = None
        self._sidecar: Any = None
        if payload.web.kind == "web_server":
            # The user's code runs in the sidecar; this replica only proxies to it.
            try:
                self._sidecar, self._upstream_port = await start_sidecar(payload)
            except UserCodeError:
                raise
            except BaseException as exc:
                raise user_failure("@rayweb.web_server", exc) from None
            return
        try:
            os.environ.update(await resolve_secrets(payload))
        except BaseException as exc:
            raise user_failure("loading secrets", exc) from None
        os.environ["RAYWEB_IS_REMOTE"] = "1"
        os.environ["RAYWEB_ENDPOINT"] = payload.label
        try:
            self._target = load_target(payload.code)
        except BaseException as exc:
            raise user_failure(f"importing the code of {payload.label!r}", exc) from None
        if payload.is_cls:
            try:
                self._instance = self._target._instantiate()
                for name in payload.enter_methods:
                    await _call(getattr(self._instance, name))
            except BaseException as exc:
                raise user_failure("@enter", exc) from None

    def _user_callable(self) -> Any:
        if self._payload.is_cls:
            return getattr(self._instance, self._payload.code.attr or "")
        return self._target.raw_f

    def __serve_build_asgi_app__(self) -> Any:
        try:
            return self._build_app()
        except UserCodeError:
            raise
        except BaseException as exc:
            raise user_failure("building the web app", exc) from None

    def _wrap(self, app: Any) -> Any:
        limits = self._payload.limits
        acquire = None
        if limits.rate_limit is not None:
            acquire = shared_limiter(
                self._payload.label, limits.rate_limit, limits.rate_limit_burst_s
            )
        auth = None
        if self._payload.auth_headers is not None:
            auth = (store_fetch(), self._payload.auth_headers)
        return adapters.wrap(app, limits, acquire, auth)

    def _build_app(self) -> Any:
        web = self._payload.web
        if web.kind == "web_server":
            return self._wrap(ReverseProxy("127.0.0.1", self._upstream_port))
        fn = self._user_callable()
        if web.kind == "fastapi_endpoint":
            app = adapters.fastapi_endpoint_app(fn, web)
        elif web.kind in ("asgi_app", "wsgi_app"):
            try:
                app = fn()
            except BaseException as exc:
                raise user_failure(f"@rayweb.{web.kind} factory", exc) from None
            if app is None or not callable(app):
                raise user_failure(
                    f"@rayweb.{web.kind} factory",
                    TypeError(
                        f"The @rayweb.{web.kind} function must return an app, got {app!r}. "
                        f"Suggestion: end it with `return app`."
                    ),
                )
            if web.kind == "wsgi_app":
                app = adapters.wsgi_adapter(app, self._payload.max_inputs)
        else:
            raise ValueError(f"unknown web kind {web.kind!r}")
        return self._wrap(app)

    async def check_health(self) -> None:
        """Serve calls this periodically: a dead web server makes the replica unhealthy."""
        if self._sidecar is not None:
            await self._sidecar.health.remote()

    async def __del__(self) -> None:
        if getattr(self, "_sidecar", None) is not None:
            await _stop_sidecar(self._sidecar)
        if getattr(self, "_instance", None) is None:
            return  # not a class, or the constructor failed before @enter completed
        for name in self._payload.exit_methods:
            try:
                await _call(getattr(self._instance, name))
            except Exception:
                logger.exception("@exit method %s of %s failed", name, self._payload.label)
