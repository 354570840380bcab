"""The caller's side of class variants (``Cls.with_options`` & co.): before a call, make sure
the variant's Serve application runs (``compiler/variants.py`` starts it). A process that saw
it running calls straight through for ``RECHECK_S``, then looks again, so a variant deleted
with its class (a redeploy, a reload) is started again at the next call.
"""

from __future__ import annotations

import asyncio
import threading
import time

from ..callforms import CallTarget
from ..common import RemoteFailure
from ..compiler.variants import start_variant

RECHECK_S = 5.0
_seen: dict[str, float] = {}
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def is_variant(target: CallTarget) -> bool:
    return bool(getattr(target.owner, "overrides", None))


def _fresh(name: str) -> bool:
    seen = _seen.get(name)
    return seen is not None and time.monotonic() - seen < RECHECK_S


def ensure(target: CallTarget) -> None:
    """Start the variant of ``target``'s class if it does not run (blocking)."""
    from .handles import served_name
    from .invoker import raise_failure

    owner = target.owner
    name = served_name(owner)
    if _fresh(name):
        return
    with _guard:
        lock = _locks.setdefault(name, threading.Lock())
    with lock:
        if _fresh(name):
            return
        base = served_name(owner.base)
        if owner.user_cls is None:  # looked up by name: its class's replicas start it
            from ray import serve

            handle = serve.get_app_handle(base).options(method_name="rayweb_variant")
            failure = handle.remote(owner.overrides, name).result()
            if isinstance(failure, RemoteFailure):
                raise_failure(failure)
        else:
            start_variant(owner, name, dev=base.endswith("-dev"))
        _seen[name] = time.monotonic()


async def ensure_async(target: CallTarget) -> None:
    from .handles import served_name

    if not _fresh(served_name(target.owner)):
        await asyncio.to_thread(ensure, target)
