"""The Serve deployment class behind every non-web function and every ``@app.cls`` that is
called with ``.remote()`` (``calls/`` is the caller's side).

One replica is one Modal container: the constructor sets the environment, fetches secrets
and loads the user's code; for a class it makes the instance of its pool's parameter set
(each parameter set is a pool of its own, a class variant; the class's own pool has the
default parameters) and runs its ``@enter`` at once (so a broken ``@enter`` fails the deploy).
``call`` runs a function or method: ``async def`` on the
replica's event loop, plain ``def`` on a pool of ``max_inputs`` threads (so
``@concurrent(max_inputs)`` inputs run at once either way), within the function's
``timeout=`` (Modal's ``FunctionTimeoutError`` after it); a ``@batched`` one through Serve's
batching (``batching.py``). ``call_gen`` streams what a
generator yields as it is produced (Serve's streaming handles). User exceptions come back as
``common.RemoteFailure`` values, never as Ray's wrapped errors, so the caller raises the
user's own exception with its remote traceback. ``@exit`` runs at shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..common import (
    DIRECT_ONGOING,
    RemoteFailure,
    UserCodeError,
    user_failure,
)
from ..exception import FunctionTimeoutError
from ..spec import FunctionPayload
from .batching import Batches
from .deployment import set_environment
from .loader import load_target

logger = logging.getLogger("rayweb.replica")

Params = tuple[tuple[str, Any], ...]  # a class's parameter values, as a hashable key
_END = object()


class RaywebFunctionReplica:
    """Runs one function, or one class's methods: ``payload`` says which code."""

    async def __init__(self, payload: FunctionPayload) -> None:  # type: ignore[misc]
        self._payload = payload
        self._instances: dict[Params, Any] = {}
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, payload.max_inputs), thread_name_prefix="rayweb-input"
        )
        self._batches = (
            Batches(payload.batching, payload.max_inputs, self._run) if payload.batching else None
        )
        await set_environment(payload)
        try:
            self._target = load_target(payload.code)
        except BaseException as exc:
            raise user_failure(f"importing the code of {payload.code.tag!r}", exc) from None
        if payload.is_cls and (payload.params or not _required_parameters(self._target)):
            # The pool's instance (its parameter set's, else the default one) is made now, so
            # its @enter runs at container start and a broken one fails the deploy.
            await self._instance(payload.params)

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``fn(*args, **kwargs)``: awaited on this loop, or on one of the input threads."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        result = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _instance(self, params: Params) -> Any:
        """The class instance for these parameter values (``@enter`` run once)."""
        instance = self._instances.get(params)
        if instance is not None:
            return instance
        async with self._lock:
            if params not in self._instances:
                try:
                    instance = self._target._instantiate(**dict(params))
                    for name in self._payload.enter_methods:
                        await self._run(getattr(instance, name), (), {})
                except BaseException as exc:
                    raise user_failure("@enter", exc) from None
                self._instances[params] = instance
        return self._instances[params]

    async def _callable(self, method: str | None, params: Params) -> Callable[..., Any]:
        if not self._payload.is_cls:
            return self._target.raw_f
        instance = await self._instance(params)
        return getattr(instance, method or "")

    async def call(
        self, method: str | None, params: Params, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, Any]:
        """One input: ("ok", result) or ("err", RemoteFailure)."""
        timeout = self._payload.timeout
        started = time.monotonic()
        try:
            if self._payload.is_cls:
                fn = await self._callable(method, params)
            else:
                fn = self._target.raw_f
            async with asyncio.timeout(timeout):
                if self._batches is not None:  # @batched: Serve's batching calls fn
                    return "ok", await self._batches.submit(params, fn, args, kwargs)
                if inspect.iscoroutinefunction(fn):  # the common fast path: one frame less
                    return "ok", await fn(*args, **kwargs)
                return "ok", await self._run(fn, args, kwargs)
        except TimeoutError:
            if time.monotonic() - started >= timeout:
                name = method or self._payload.code.tag
                exc = FunctionTimeoutError(f"Function '{name}' timed out after {timeout:g} seconds")
            return "err", capture_failure(exc)
        except UserCodeError as exc:  # @enter failed for these parameters
            return "err", capture_failure(exc)
        except Exception as exc:
            return "err", capture_failure(exc)

    async def call_gen(
        self, method: str | None, params: Params, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[tuple[str, Any]]:
        """A generator's items as they are produced: ("ok", item)..., or ("err", failure)."""
        try:
            fn = await self._callable(method, params)
            produced = fn(*args, **kwargs)
            if inspect.isasyncgen(produced):
                async for item in produced:
                    yield "ok", item
                return
            loop = asyncio.get_running_loop()
            while True:
                item = await loop.run_in_executor(self._pool, next, produced, _END)
                if item is _END:
                    return
                yield "ok", item
        except Exception as exc:
            yield "err", capture_failure(exc)

    def rayweb_describe(self) -> dict[str, Any]:
        """What a caller that looked this function or class up by name (``from_name``)
        needs: which methods are generators, and the ``retries=`` it applies."""
        target = self._target
        if self._payload.is_cls:
            functions = {name: f for name, f in target.functions.items() if not f.is_web}
        else:
            functions = {"": target}
        generators = {name: bool(f.is_generator) for name, f in functions.items()}
        return {"generators": generators, "retries": self._payload.retries}

    async def rayweb_variant(self, overrides: dict[str, Any], name: str) -> RemoteFailure | None:
        """Start a variant of this class (``Cls.with_options`` & co.) for a caller that
        looked it up by name and so has no code to compile it with."""
        from ..callforms import invoker  # rayweb.calls, which the user's code imported

        try:
            variant = self._target.apply(overrides)
            start = functools.partial(invoker().start_variant, variant, name, dev=self._payload.dev)
            await asyncio.to_thread(start)
        except Exception as exc:
            return capture_failure(exc)
        return None

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Calls come through Serve's handles, which Serve counts itself; this replica has no
        direct-path requests (rayweb's policy waits for this sample before scaling down)."""
        return {DIRECT_ONGOING: 0.0}

    async def _exit(self, instance: Any) -> None:
        """An instance's ``@exit`` methods (a failing one is logged)."""
        for name in self._payload.exit_methods:
            try:
                await self._run(getattr(instance, name), (), {})
            except Exception:
                logger.exception("@exit method %s of %s failed", name, self._payload.label)

    async def __del__(self) -> None:
        for instance in getattr(self, "_instances", {}).values():
            await self._exit(instance)
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


def _required_parameters(cls: Any) -> bool:
    """Whether the class has a ``rayweb.parameter()`` without a default."""
    from ..decorators import _NO_DEFAULT

    return any(p.default is _NO_DEFAULT for p in cls.parameters.values())


def capture_failure(exc: BaseException) -> RemoteFailure:
    """``exc`` (just caught in user code) as a :class:`RemoteFailure`."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    pickled = None
    try:
        from ray import cloudpickle

        pickled = cloudpickle.dumps(exc)
        cloudpickle.loads(pickled)  # must come back, or the caller gets the text only
    except Exception:
        pickled = None
    return RemoteFailure(type(exc).__qualname__, str(exc), text, pickled)
