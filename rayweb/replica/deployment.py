"""The Serve deployment class behind every rayweb endpoint.

One class serves all web kinds. Its constructor sets the environment, loads the user's code
and runs ``@enter``; Serve then calls ``__serve_build_asgi_app__`` (the one Serve seam rayweb
uses, public since Ray 2.60's ``serve.ingress()`` without an app) to get the ASGI app, and
``__del__`` at shutdown, where ``@exit`` runs.

Both data paths run the same middleware chain (``chain.py``). When the cluster runs rayweb's
gateway (``services/gateway.py``), the replica also serves the same app on its own port
(``direct.py``) once the app has started, registers that port with the gateway, reports the
requests it carries to Serve's autoscaler, and at shutdown deregisters and drains before
``@exit`` runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from typing import Any

from ray import serve

from ..common import DEV_ENV, DIRECT_ONGOING, REMOTE_ENV, UserCodeError, remote_error, user_failure
from ..services.gateway import find_gateway
from ..services.ratelimit import shared_limiter
from ..services.store_actor import token_fetch
from ..spec import FunctionPayload, ReplicaPayload
from . import adapters
from .chain import Chain
from .direct import DirectServer
from .hotswap import Swappable, forget_code, reload_loop, swap_in
from .loader import load_target
from .mounts import VOLUME_ROOT_ENV, setup_files
from .proxy import ReverseProxy
from .webserver import start_sidecar

logger = logging.getLogger("rayweb.replica")


async def _call(fn: Any) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


async def resolve_secrets(payload: ReplicaPayload | FunctionPayload) -> dict[str, str]:
    """The replica's secret environment, fetched from the cluster's store."""
    if not payload.secrets:
        return {}
    from ..services.store_actor import store_actor

    try:
        env: dict[str, str] = await store_actor().resolve.remote(list(payload.secrets))
    except Exception as exc:
        raise remote_error(exc) from None
    return env


async def set_environment(payload: ReplicaPayload | FunctionPayload) -> None:
    """What user code sees in a replica: its secrets, its volumes and image files (links,
    ``mounts.py``), ``RAYWEB_IS_REMOTE``, the endpoint's name, and ``RAYWEB_DEV`` in a dev
    app (so ``.remote()`` reaches its -dev functions)."""
    try:
        os.environ.update(await resolve_secrets(payload))
    except BaseException as exc:
        raise user_failure("loading secrets", exc) from None
    mount_files(payload)
    os.environ[REMOTE_ENV] = "1"
    os.environ["RAYWEB_ENDPOINT"] = payload.label
    if payload.dev:
        os.environ[DEV_ENV] = "1"


def mount_files(payload: ReplicaPayload | FunctionPayload) -> None:
    """The driver's volume root for ``Volume`` calls here, and the payload's links."""
    if payload.volume_root:
        os.environ[VOLUME_ROOT_ENV] = payload.volume_root
    if payload.mounts or payload.links:
        try:
            setup_files(payload)
        except BaseException as exc:
            raise user_failure("mounting volumes and image files", exc) from None


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
        self._direct: DirectServer | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._lifespan_stop: Any = None  # stops a hot-swapped app's lifespan
        self._target: Any = None
        self._gateway: Any = find_gateway()
        self._gateway_key: str | None = None
        if self._gateway is not None:
            try:
                self._gateway_key = await self._gateway.gateway_key.remote()
            except Exception:
                logger.warning("rayweb's gateway did not answer; serving via Serve only")
                self._gateway = None
        if payload.web.sidecar:
            # The user's code runs in the sidecar; this replica only proxies to it.
            try:
                self._sidecar, self._upstream_port = await start_sidecar(payload)
            except UserCodeError:
                raise
            except BaseException as exc:
                what = "@app.server" if payload.web.kind == "server" else "@rayweb.web_server"
                raise user_failure(what, exc) from None
            return
        await set_environment(payload)
        self._target, self._instance = await self._load_code()

    async def _load_code(self) -> tuple[Any, Any]:
        """Import the user's code; for an ``@app.cls``, make an instance and run ``@enter``.
        Returns (target, instance or None); failures are the user's, formatted."""
        try:
            target = load_target(self._payload.code)
        except BaseException as exc:
            raise user_failure(f"importing the code of {self._payload.label!r}", exc) from None
        if not self._payload.is_cls:
            return target, None
        try:
            instance = target._instantiate()
            for name in self._payload.enter_methods:
                await _call(getattr(instance, name))
        except BaseException as exc:
            raise user_failure("@enter", exc) from None
        return target, instance

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
        """rayweb's middleware chain around ``app``; returns Serve's path (the replica's own
        port gets the same chain's ``direct_path`` once the app has started)."""
        limits = self._payload.limits
        acquire = None
        if limits.rate_limit is not None:
            acquire = shared_limiter(
                self._payload.label, limits.rate_limit, limits.rate_limit_burst_s
            )
        auth = None
        if self._payload.auth_headers is not None:
            auth = (token_fetch(), self._payload.auth_headers)
        self._chain = Chain(
            app,
            max_inputs=self._payload.max_inputs,
            limits=limits,
            acquire=acquire,
            auth=auth,
            gateway_key=self._gateway_key,
            on_startup=self._start_direct,
            full_status=self._payload.full_status,
        )
        return self._chain.serve_path

    async def _start_direct(self) -> None:
        """Serve the app on this replica's own port and register it with the gateway."""
        if self._gateway is None:
            return
        import ray

        try:
            context = serve.get_replica_context()
            host = ray.util.get_node_ip_address()
            self._direct = DirectServer(
                self._chain.direct_path(f"/{context.app_name}"),
                host=host,
                ws_max_size=self._payload.limits.max_websocket_message,
            )
            await self._direct.start()
            self._replica_name = str(ray.get_runtime_context().get_actor_name())
            await self._gateway.register.remote(
                context.app_name,
                f"/{context.app_name}",
                self._replica_name,
                host,
                self._direct.port,
                self._payload.gateway_maxconn,
                self._payload.limits.max_request_body,
                self._payload.limits.body_timeout,
                direct=self._direct_rules(host),
                sessioned=self._payload.web.sessioned,
            )
            if self._payload.hot_swap:
                self._reload_task = asyncio.get_running_loop().create_task(
                    reload_loop(self._gateway, context.app_name, self._replica_name, self._hot_swap)
                )
        except Exception:
            logger.warning(
                "rayweb: %s serves through Serve's proxy only (its direct port failed)",
                self._payload.label,
                exc_info=True,
            )

    def _direct_rules(self, host: str) -> dict[str, Any] | None:
        """An ``@app.server``'s port and what the gateway must do in this replica's place
        when it sends requests there (``services/haproxy_direct.py``)."""
        payload = self._payload
        if not payload.direct_hop or self._sidecar is None:
            return None
        limits = payload.limits
        return {
            "upstream": [host, self._upstream_port, payload.max_inputs],
            "auth_headers": payload.auth_headers,
            "rate_limit": limits.rate_limit,
            "rate_limit_burst_s": limits.rate_limit_burst_s,
            "request_timeout": limits.request_timeout,
            "full": payload.full_status is not None,
        }

    async def rayweb_wake(self) -> tuple[str, int] | None:
        """Called by the gateway's holder through this endpoint's handle: a request is
        waiting for a replica (the call is what scales the endpoint up from zero). Returns
        this replica's own address, where the holder relays the request; None: use Serve's
        proxy."""
        if self._direct is None:
            return None
        return self._direct.host, self._direct.port

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Requests on the direct path, which Serve's own request metrics do not see
        (``DirectServer.sample``)."""
        return {DIRECT_ONGOING: float(self._direct.sample() if self._direct else 0)}

    async def _stop_direct(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
        direct, self._direct = self._direct, None
        if direct is None:
            return
        try:
            await asyncio.wait_for(self._gateway.deregister.remote(self._replica_name), 10)
        except Exception:
            logger.warning("rayweb: deregistering from the gateway failed", exc_info=True)
        await direct.stop(grace_s=self._payload.drain_s)

    def _build_app(self) -> Any:
        if self._payload.web.sidecar:
            return self._wrap(ReverseProxy("127.0.0.1", self._upstream_port))
        self._swappable = Swappable(self._user_app())
        return self._wrap(self._swappable)

    def _user_app(self) -> Any:
        """The endpoint's ASGI app, from the current user code."""
        return adapters.web_app(
            self._user_callable(), self._payload.web, self._payload.wsgi_threads
        )

    async def _hot_swap(self) -> str | None:
        """Re-import the user's code and swap the app in place; the error text, or None."""
        old_target, old_instance = self._target, self._instance
        try:
            forget_code(self._payload.code)
            self._target, self._instance = await self._load_code()
            self._lifespan_stop = await swap_in(
                self._swappable, self._user_app(), self._lifespan_stop
            )
        except BaseException as exc:
            new_instance = self._instance if self._instance is not old_instance else None
            self._target, self._instance = old_target, old_instance
            if new_instance is not None:
                await self._run_exit(new_instance)
            return str(exc)
        if old_instance is not None:
            await self._run_exit(old_instance)
        logger.info("rayweb: %s now runs the new code", self._payload.label)
        return None

    async def _run_exit(self, instance: Any) -> None:
        for name in self._payload.exit_methods:
            try:
                await _call(getattr(instance, name))
            except Exception:
                logger.exception("@exit method %s of %s failed", name, self._payload.label)

    async def check_health(self) -> None:
        """Serve calls this periodically: a dead web server makes the replica unhealthy."""
        if self._sidecar is not None:
            await self._sidecar.health.remote()

    async def __del__(self) -> None:
        if getattr(self, "_direct", None) is not None:
            await self._stop_direct()
        if getattr(self, "_sidecar", None) is not None:
            await _stop_sidecar(self._sidecar)
        if getattr(self, "_lifespan_stop", None) is not None:
            await self._lifespan_stop()  # a hot-swapped app's lifespan
        if getattr(self, "_instance", None) is None:
            return  # not a class, or the constructor failed before @enter completed
        await self._run_exit(self._instance)
