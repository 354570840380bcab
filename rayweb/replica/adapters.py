"""ASGI adapters that run inside a replica: one per web kind, plus the lifespan and root-slash
wrappers every endpoint gets (``chain.py`` puts them together).

No Ray here, so each adapter is unit-tested with Starlette's TestClient.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..common import user_failure
from ..spec import WebSpec
from .types import ASGIApp, Message, Receive, Scope, Send


def fastapi_endpoint_app(fn: Callable[..., Any], web: WebSpec) -> ASGIApp:
    """Modal's fastapi_endpoint: one route at ``/``, CORS ``*``, docs only with ``docs=True``."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    app = FastAPI(
        openapi_url="/openapi.json" if web.docs else None,
        docs_url="/docs" if web.docs else None,
        redoc_url="/redoc" if web.docs else None,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.add_api_route("/", fn, methods=[web.method])
    return app


def web_app(fn: Callable[..., Any], web: WebSpec, wsgi_threads: int) -> ASGIApp:
    """The ASGI app of a fastapi_endpoint, asgi_app or wsgi_app function (or bound method);
    a factory's failure is the user's, formatted."""
    if web.kind == "fastapi_endpoint":
        return fastapi_endpoint_app(fn, web)
    if web.kind not in ("asgi_app", "wsgi_app"):
        raise ValueError(f"unknown web kind {web.kind!r}")
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
        app = wsgi_adapter(app, wsgi_threads)
    return app


def wsgi_adapter(wsgi_app: Any, threads: int) -> ASGIApp:
    """Run a WSGI app in a pool of ``threads`` (the compiler's ``wsgi_threads``)."""
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(wsgi_app, workers=max(threads, 1), send_queue_size=10)


class RootSlash:
    """Treat a request for exactly the route prefix (``/label``) as ``/label/``.

    Serve routes ``/label`` and ``/label/...`` to the app; without this, FastAPI and Starlette
    answer the bare prefix with a 307 redirect, which loses a POST body in many clients.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            root = scope.get("root_path", "")
            path = scope.get("path", "")
            if path in ("", root):
                scope = dict(scope)
                scope["path"] = path + "/"
                raw = scope.get("raw_path")
                if raw is not None:
                    raw_path, _, query = raw.partition(b"?")
                    scope["raw_path"] = raw_path + b"/" + (b"?" + query if query else b"")
        await self.app(scope, receive, send)


class LifespanGuard:
    """Run the app's lifespan, or answer it ourselves when the app does not support it.

    Serve runs lifespan with uvicorn's ``lifespan="on"``: a raw ASGI callable that raises on a
    ``lifespan`` scope would otherwise kill the replica. A real startup failure (the app sent
    ``lifespan.startup.failed``) is still raised.

    It also makes the long-lived lifespan task AnyIO's root task: without one, every sync
    route inside a Serve replica starts a new worker thread per request (see
    docs/architecture.md, "Data path").
    """

    def __init__(self, app: ASGIApp, on_startup: Callable[[], Any] | None = None) -> None:
        self.app = app
        self.on_startup = on_startup  # awaited after the app's startup, before Serve hears

    async def _started(self) -> None:
        if self.on_startup is not None:
            await self.on_startup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        _adopt_as_anyio_root_task()
        seen: list[str] = []
        answered = False

        async def receive_tracked() -> Message:
            message: Message = await receive()
            seen.append(message["type"])
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal answered
            if message["type"].startswith("lifespan.startup"):
                answered = True
            if message["type"] == "lifespan.startup.complete":
                await self._started()
            await send(message)

        try:
            await self.app(scope, receive_tracked, send_tracked)
        except Exception:
            if answered:
                raise
        if answered:
            return
        # The app does not speak lifespan: complete the protocol on its behalf.
        if "lifespan.startup" not in seen:
            await receive()
        await self._started()
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})


def _adopt_as_anyio_root_task() -> None:
    """Make the current (lifespan) task AnyIO's root task for this event loop.

    AnyIO keeps its worker-thread pool alive only as long as its root task. Inside a Serve
    replica it finds none and falls back to the request's own task, so each sync route call
    spawns and then retires a thread. Uses a private AnyIO name: guarded, and covered by
    ``tests/unit/test_adapters.py::test_lifespan_adopts_anyio_root_task``.
    """
    with contextlib.suppress(Exception):
        from anyio._backends._asyncio import _root_task

        task = asyncio.current_task()
        current = _root_task.get(None)
        if task is not None and (current is None or current.done()):
            _root_task.set(task)
