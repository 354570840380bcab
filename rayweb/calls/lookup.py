"""Functions and classes looked up by name (``Function.from_name``, ``Cls.from_name``).

Modal's lookup is lazy, and so is this one: nothing reaches the cluster until the first call.
Then the app's Serve application is found (the deployed one, ``rayweb-fn-<label>``, else the
``rayweb serve`` one, ``...-dev``; inside a dev app's replicas the other way round) and one of
its replicas says what the caller needs to know (``RaywebFunctionReplica.rayweb_describe``):
which methods exist and are generators, and the ``retries=`` the caller applies. The answer is
kept on the looked-up object, so later calls go straight to the handle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ..callforms import CallTarget, check_generator
from ..classes import Cls
from ..common import DEV_ENV
from ..exception import ExecutionError, InvalidError, NotFoundError
from ..spec import function_app_name
from ..urls import Reach

COROUTINE_FORMS = (
    "remote",
    "spawn",
    "for_each",
    "spawn_map",
)  # the other .aio forms are async iterators


def looked_up(target: CallTarget) -> bool:
    return target.owner.described is not None


def lookup_failed(owner: Any) -> NotFoundError:
    kind = "Cls" if isinstance(owner, Cls) else "Function"
    return NotFoundError(
        f"Lookup failed for {kind} '{owner.tag}' from the '{owner.app.name}' app: it is not "
        "running on this Ray cluster. Suggestion: `rayweb deploy <file.py>` (or `rayweb serve "
        "<file.py>`) first, from a process connected to the same cluster."
    )


def _handle(owner: Any) -> Any:
    """The Serve handle of the looked-up app's function or class (found once)."""
    from .handles import connected

    if not connected():
        raise lookup_failed(owner)
    from ray import serve

    dev = os.environ.get(DEV_ENV) == "1"
    for name in (function_app_name(owner.app.name, owner.tag, dev=d) for d in (dev, not dev)):
        try:
            handle = serve.get_app_handle(name)
        except Exception:
            continue
        # where invoker.served_name sends every later call (a variant's: its class's)
        getattr(owner, "base", owner)._served_as = name
        return handle.options(method_name="rayweb_describe")
    raise lookup_failed(owner)


def _learn(owner: Any, info: dict[str, Any]) -> None:
    owner.described = info
    owner.options = dataclasses.replace(owner.options, retries=info.get("retries"))


def _settle(target: CallTarget, form: str) -> None:
    """The call's function as its replica described it; Modal's errors for a wrong form."""
    generators = target.owner.described["generators"]
    key = target.method or ""
    if key not in generators:
        raise NotFoundError(
            f"Lookup failed for method '{key}' of Cls '{target.owner.tag}' from the "
            f"'{target.owner.app.name}' app: it has no such method. "
            f"Its methods: {', '.join(sorted(generators)) or 'none'}."
        )
    target.function.described = {**target.function.described, "generator": generators[key]}
    check_generator(generators[key], form)


def ensure(target: CallTarget, form: str) -> None:
    """Before a blocking call form: ask the app once, then check the form."""
    if "generators" not in target.owner.described:
        _learn(target.owner, _handle(target.owner).remote().result())
    _settle(target, form)


async def ensure_async(target: CallTarget, form: str) -> None:
    if "generators" not in target.owner.described:
        _learn(target.owner, await _handle(target.owner).remote())
    _settle(target, form)


def after(
    prepare: Sequence[Callable[[], Awaitable[None]]], form: str, make: Callable[[], Any]
) -> Any:
    """An ``.aio`` form that needs ``prepare`` first (a lookup, a variant to start), on the
    caller's loop."""
    if form in COROUTINE_FORMS:

        async def run() -> Any:
            for step in prepare:
                await step()
            return await make()

        return run()

    async def iterate() -> AsyncIterator[Any]:
        for step in prepare:
            await step()
        async for item in make():
            yield item

    return iterate()


def web_url(app_name: str, name: str, label: str) -> str:
    """The URL of an endpoint of a running app (``Server.from_name(...).get_url()``): the
    gateway's address and the label it is served under (deployed, else ``rayweb serve``'s
    ``-dev``; inside a dev app's replicas the other way round)."""
    from .handles import connected

    failed = NotFoundError(
        f"Lookup failed for Function '{name}' from the '{app_name}' app: it is not running on "
        "this Ray cluster. Suggestion: `rayweb deploy <file.py>` (or `rayweb serve <file.py>`) "
        "first, from a process connected to the same cluster."
    )
    if not connected():
        raise failed
    import ray

    from ..services.gateway import find_gateway
    from ..services.serve_apps import app_states

    dev = os.environ.get(DEV_ENV) == "1"
    names = [f"{label}-dev", label] if dev else [label, f"{label}-dev"]
    running = set(app_states(names))
    found = next((n for n in names if n in running), None)
    if found is None:
        raise failed
    gateway = find_gateway()
    if gateway is None:
        raise ExecutionError(
            f"{name} runs at /{found} on this cluster's Serve HTTP proxy; rayweb's gateway is not "
            "running here (RAYWEB_DATA_PATH=serve), so its host and port are not known."
        )
    return Reach(*ray.get(gateway.reach.remote())).url(found)


def server_session(action: str, route: str, arg: Any) -> Any:
    """``Server.sessions.start(idle_timeout)`` / ``.terminate(token)`` of the Server served
    at ``/<route>``: the gateway keeps the sessions (``services/gateway_sessions.py``)."""
    from .handles import connected

    verb = "start" if action == "start" else "terminate"
    if not connected():
        raise ExecutionError(f"Failed to {verb} session: not connected to a Ray cluster.")
    import ray

    from ..common import remote_error
    from ..services.gateway import find_gateway

    gateway = find_gateway()
    if gateway is None:
        raise ExecutionError(
            f"Failed to {verb} session: sticky sessions need rayweb's gateway, which is not "
            "running on this cluster (RAYWEB_DATA_PATH=serve)."
        )
    try:
        return ray.get(getattr(gateway, f"{action}_session").remote(route, arg))
    except Exception as exc:
        error = remote_error(exc)
        if isinstance(error, (InvalidError, NotFoundError)):
            raise error from None
        raise ExecutionError(f"Failed to {verb} session: {error}") from None
