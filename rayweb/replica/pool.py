"""One container pool per ``@app.cls``: the replicas that run a class's ``@method``s (called
with ``.remote()``) also serve its fastapi/asgi/wsgi web methods, as on Modal.

The class's instance is made, and its ``@enter`` run, once per replica (by
``RaywebFunctionReplica``); each web method's ASGI app is built from that one instance, its
lifespan started, and wrapped in its own ``Chain`` (its proxy auth, limits and rate limit).
All of them are served on one port of the replica's own (``direct.py``), dispatched on the
path prefix (each web method's label), and registered with the gateway under every label.
``@concurrent(max_inputs)`` bounds everything together: the web methods' chains and the
handle calls take slots from one semaphore.

Pools are served through rayweb's gateway only (the driver compiles one application per web
method without it). A request for a label with no replica wakes the class's application
(``rayweb_wake``, through the gateway's holder).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..common import DIRECT_ONGOING, UserCodeError, user_failure
from ..services.gateway import find_gateway
from ..services.ratelimit import shared_limiter
from ..services.store_actor import token_fetch
from ..spec import FunctionPayload, ReplicaPayload
from .adapters import web_app
from .chain import Chain
from .direct import DirectServer, PrefixDispatch
from .function import Params, RaywebFunctionReplica
from .hotswap import Stop, Swappable, forget_code, reload_loop, start_lifespan
from .loader import load_target
from .types import ASGIApp

logger = logging.getLogger("rayweb.replica")


class RaywebPoolReplica(RaywebFunctionReplica):
    """A class's replica that also serves its web methods (``payload.routes``)."""

    async def __init__(self, payload: FunctionPayload) -> None:  # type: ignore[misc]
        self._direct: DirectServer | None = None
        self._stops: list[Stop] = []  # the lifespan shutdown of each web method's app
        self._swappables: list[Swappable] = []
        self._reload_task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max(1, payload.max_inputs))
        await super().__init__(payload)
        gateway = find_gateway()
        if gateway is None:
            raise user_failure(
                "serving the web methods",
                RuntimeError(
                    "the web methods of a class share its containers through rayweb's "
                    "gateway, which this cluster does not run. Suggestion: deploy with "
                    "RAYWEB_DATA_PATH=gateway (the default)."
                ),
            )
        self._gateway: Any = gateway
        try:
            await self._serve_routes(await self._instance(()))
        except BaseException:
            await self._stop_web()
            raise

    async def _serve_routes(self, instance: Any) -> None:
        import ray

        key = await self._gateway.gateway_key.remote()
        started = await self._start_apps(instance)
        self._stops = [stop for _, _, stop in started]
        apps = {}
        for route, (app, state, _) in zip(self._payload.routes, started, strict=True):
            swappable = Swappable(app)
            swappable.swap(app, state)  # requests get the lifespan's state, as under uvicorn
            self._swappables.append(swappable)
            apps[f"/{route.label}"] = self._chain(route, swappable, key)
        host = ray.util.get_node_ip_address()
        sizes = [r.limits.max_websocket_message for r in self._payload.routes]
        self._direct = DirectServer(
            PrefixDispatch(apps),
            host=host,  # uvicorn's cap is the largest; each chain enforces its own
            ws_max_size=None if None in sizes else max(s for s in sizes if s is not None),
        )
        await self._direct.start()
        self._replica_name = str(ray.get_runtime_context().get_actor_name())
        for route in self._payload.routes:
            await self._gateway.register.remote(
                route.label,
                f"/{route.label}",
                self._replica_name,
                host,
                self._direct.port,
                route.gateway_maxconn,
                route.limits.max_request_body,
                route.limits.body_timeout,
            )
        if self._payload.hot_swap:
            self._reload_task = asyncio.get_running_loop().create_task(
                reload_loop(self._gateway, self._payload.label, self._replica_name, self._swap)
            )

    async def _start_apps(self, instance: Any) -> list[tuple[ASGIApp, dict[str, Any], Stop]]:
        """Each web method's app from ``instance``, its lifespan started: (app, lifespan
        state, stop); if one fails, the ones started are stopped and the failure raised."""
        started: list[tuple[ASGIApp, dict[str, Any], Stop]] = []
        try:
            for route in self._payload.routes:
                app = web_app(
                    getattr(instance, route.code.attr or ""), route.web, route.wsgi_threads
                )
                try:
                    state, stop = await start_lifespan(app)
                except BaseException as exc:
                    raise user_failure(f"the lifespan startup of {route.label!r}", exc) from None
                started.append((app, state, stop))
        except BaseException:
            await _stop_all([stop for _, _, stop in started])
            raise
        return started

    def _chain(self, route: ReplicaPayload, app: ASGIApp, key: str) -> ASGIApp:
        """rayweb's middleware around one web method: its own limits and proxy auth, the
        pool's slots."""
        limits = route.limits
        acquire = None
        if limits.rate_limit is not None:
            acquire = shared_limiter(route.label, limits.rate_limit, limits.rate_limit_burst_s)
        auth = (token_fetch(), route.auth_headers) if route.auth_headers is not None else None
        chain = Chain(
            app,
            max_inputs=self._slots,
            limits=limits,
            acquire=acquire,
            auth=auth,
            gateway_key=key,
        )
        return chain.direct_path(f"/{route.label}")

    async def _swap(self) -> str | None:
        """`rayweb serve`: re-import the class, make a new instance (its ``@enter``), start
        every web method's new app, then point all of them, and ``.remote()`` calls, at the
        new code; the old instance's ``@exit`` runs after. The error text, or None (the old
        code keeps serving on any error)."""
        instance = None
        phase = f"importing the code of {self._payload.code.tag!r}"
        try:
            forget_code(self._payload.code)
            target = load_target(self._payload.code)
            phase = "@enter"
            instance = target._instantiate()
            for name in self._payload.enter_methods:
                await self._run(getattr(instance, name), (), {})
            started = await self._start_apps(instance)  # its failures are formatted
        except UserCodeError as exc:
            failure: BaseException | None = exc
        except BaseException as exc:
            failure = user_failure(phase, exc)
        else:
            failure = None
        if failure is not None:
            if instance is not None:
                await self._exit(instance)
            return str(failure)
        old_instances, old_stops = list(self._instances.values()), self._stops
        self._target, self._instances = target, {(): instance}
        for swappable, (app, state, _) in zip(self._swappables, started, strict=True):
            swappable.swap(app, state)
        self._stops = [stop for _, _, stop in started]
        await _stop_all(old_stops)
        for old in old_instances:
            await self._exit(old)
        logger.info("rayweb: %s now runs the new code", self._payload.label)
        return None

    async def call(
        self, method: str | None, params: Params, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, Any]:
        """One ``.remote()`` input, in one of the slots the web methods take too."""
        if self._batches is not None:  # @batched: an input slot takes a whole batch
            return await super().call(method, params, args, kwargs)
        async with self._slots:
            return await super().call(method, params, args, kwargs)

    async def call_gen(
        self, method: str | None, params: Params, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[tuple[str, Any]]:
        async with self._slots:
            async for item in super().call_gen(method, params, args, kwargs):
                yield item

    async def rayweb_wake(self) -> tuple[str, int] | None:
        """The gateway's holder wakes a label with no replica through this class's handle;
        the request goes to this replica's own port."""
        if self._direct is None:
            return None
        return self._direct.host, self._direct.port

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Web requests on this replica's own port (Serve counts the handle calls)."""
        return {DIRECT_ONGOING: float(self._direct.sample() if self._direct else 0)}

    async def _stop_web(self) -> None:
        """Deregister, let requests in flight finish, then stop the apps' lifespans."""
        if self._reload_task is not None:
            self._reload_task.cancel()
        direct, self._direct = self._direct, None
        if direct is not None:
            try:
                await asyncio.wait_for(self._gateway.deregister.remote(self._replica_name), 10)
            except Exception:
                logger.warning("rayweb: deregistering from the gateway failed", exc_info=True)
            await direct.stop(grace_s=max(r.drain_s for r in self._payload.routes))
        stops, self._stops = self._stops, []
        await _stop_all(stops)

    async def __del__(self) -> None:
        if getattr(self, "_direct", None) is not None or getattr(self, "_stops", None):
            await self._stop_web()
        await super().__del__()


async def _stop_all(stops: list[Stop]) -> None:
    """Run the lifespan shutdown of each app (a failing one is logged)."""
    for stop in stops:
        try:
            await stop()
        except Exception:
            logger.warning("rayweb: a web method's lifespan shutdown failed", exc_info=True)
