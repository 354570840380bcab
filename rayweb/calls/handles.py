"""Where a call goes: the Serve application that runs a function or class (``served_name``),
its deployment handles (cached per process), and joining the cluster from a process that is
no Ray worker (a ``web_server``'s own process).
"""

from __future__ import annotations

import os
from typing import Any

from ..callforms import CallTarget
from ..classes import Cls
from ..common import CALLER_RAY_ENV, DEV_ENV
from ..compiler.variants import variant_app_name
from ..exception import NotFoundError
from ..functions import Function
from ..spec import function_app_name

_handles: dict[str, Any] = {}


def served_name(owner: Function[Any, Any] | Cls) -> str:
    """The Serve application that runs ``owner``: what ``rayweb.serve`` recorded in this
    process, else the rule every process computes the same way (``-dev`` inside replicas of
    a dev app); a class variant's is its class's with its key."""
    key = getattr(owner, "variant_key", None)
    if key is not None:
        return variant_app_name(served_name(owner.base), key)  # type: ignore[union-attr]
    recorded = getattr(owner, "_served_as", None)
    if recorded:
        return str(recorded)
    return function_app_name(owner.app.name, owner.tag, dev=os.environ.get(DEV_ENV) == "1")


def not_running(target: CallTarget, name: str) -> NotFoundError:
    owner = target.owner
    return NotFoundError(
        f"rayweb: {owner.tag} of app {owner.app.name!r} is not running on this Ray cluster "
        f"(no Serve application {name!r}). Suggestion: run it first, with `with app.run():` "
        "in this process, `rayweb serve <file.py>` or `rayweb deploy <file.py>`."
    )


def method_handle(target: CallTarget, method: str) -> Any:
    """The app's handle for the replica's ``call``/``call_gen`` (cached: ``options`` makes a
    new handle object each time)."""
    name = served_name(target.owner)
    key = f"{name}\0{method}"
    cached = _handles.get(key)
    if cached is None:
        cached = _handles[key] = handle_for(target).options(
            method_name=method, stream=method == "call_gen"
        )
    return cached


def connected() -> bool:
    """Whether this process is on a Ray cluster; a ``web_server``'s own process (no Ray
    worker) joins its replica's cluster here, at its first call."""
    import ray

    if not ray.is_initialized() and os.environ.get(CALLER_RAY_ENV):
        ray.init(address=os.environ[CALLER_RAY_ENV], log_to_driver=False, logging_level=40)
    return bool(ray.is_initialized())


def handle_for(target: CallTarget) -> Any:
    name = served_name(target.owner)
    handle = _handles.get(name)
    if handle is not None:
        return handle
    if not connected():
        raise not_running(target, name)
    from ray import serve

    try:
        handle = serve.get_app_handle(name)
    except Exception:
        raise not_running(target, name) from None
    _handles[name] = handle
    return handle


def forget_handles() -> None:
    """After ``rayweb.serve``'s handle stops (its apps are gone)."""
    _handles.clear()
