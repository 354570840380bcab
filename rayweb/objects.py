"""What ``Dict`` and ``Queue`` share: Modal's name rules, pickling, and methods written once
for both their blocking and ``.aio`` forms.

A method is a generator that yields its requests to the store (``(op, *args)``) and gets each
answer back; :class:`live` drives it with the installed :class:`StateBackend` (``rayweb.calls``
installs the one that reaches the cluster's ``rayweb-state`` actor), blocking for ``d.get(k)``
and awaiting for ``await d.get.aio(k)``. This module imports no Ray.
"""

from __future__ import annotations

import functools
import pickle
import re
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, Protocol

from .exception import ExecutionError, InvalidError

_NAME = re.compile(r"^[a-zA-Z0-9-_.]+$")
SLEEP = "sleep"  # a request that only waits (the client's backoff)


class StateBackend(Protocol):
    def call(self, op: str, *args: Any) -> Any: ...

    async def call_aio(self, op: str, *args: Any) -> Any: ...

    def dumps(self, value: Any) -> bytes:
        """A value that the standard pickle refuses (a lambda, a local class)."""


_BACKEND: list[StateBackend] = []


def set_state_backend(backend: StateBackend) -> None:
    _BACKEND[:] = [backend]


def backend() -> StateBackend:
    if not _BACKEND:
        raise ExecutionError("rayweb: Dict and Queue need `import rayweb` (its call machinery).")
    return _BACKEND[0]


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 64:
        raise InvalidError(
            f"Invalid {kind} name: '{name}'.\n\nNames may contain only alphanumeric characters,"
            " dashes, periods, and underscores, and must be shorter than 64 characters."
        )
    return name


def dump_key(key: Any) -> bytes:
    """Keys compare by their pickled bytes (as on Modal): the standard pickle, protocol 5, so
    the same key gives the same bytes in every process (the CLI's string keys included)."""
    try:
        return pickle.dumps(key, protocol=5)
    except Exception as exc:
        raise InvalidError(f"Dict key {key!r} cannot be pickled: {exc}") from None


def dump_value(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        return backend().dumps(value)  # cloudpickle: lambdas, classes defined in a script


def load(blob: bytes) -> Any:
    return pickle.loads(blob)


Program = Generator[tuple[Any, ...], Any, Any]


def _run_sync(program: Program) -> Any:
    import time

    answer: Any = None
    try:
        while True:
            request = program.send(answer)
            if request[0] == SLEEP:
                time.sleep(request[1])
                answer = None
            else:
                answer = backend().call(*request)
    except StopIteration as stop:
        return stop.value


async def _run_async(program: Program) -> Any:
    import asyncio

    answer: Any = None
    try:
        while True:
            request = program.send(answer)
            if request[0] == SLEEP:
                await asyncio.sleep(request[1])
                answer = None
            else:
                answer = await backend().call_aio(*request)
    except StopIteration as stop:
        return stop.value


class _Bound:
    """``obj.method``: call it to block, ``.aio`` to await."""

    def __init__(self, fn: Callable[..., Program], obj: Any, iterates: bool) -> None:
        self._fn, self._obj, self._iterates = fn, obj, iterates
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = _run_sync(self._fn(self._obj, *args, **kwargs))
        return iter(result) if self._iterates else result

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        program = self._fn(self._obj, *args, **kwargs)
        if self._iterates:
            return _aiter(program)
        return _run_async(program)


async def _aiter(program: Program) -> AsyncIterator[Any]:
    for item in await _run_async(program):
        yield item


class live:  # noqa: N801 (used as a decorator)
    """A method with a blocking form and an ``.aio`` form; ``iterates=True`` for those that
    return an iterator (``keys()``; ``.aio`` is then an async iterator)."""

    def __init__(self, fn: Callable[..., Program] | None = None, *, iterates: bool = False):
        self.fn = fn
        self.iterates = iterates

    def __call__(self, fn: Callable[..., Program]) -> live:
        return live(fn, iterates=self.iterates)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        assert self.fn is not None
        return _Bound(self.fn, obj, self.iterates)


class Ephemeral:
    """``X.ephemeral()``: an object that lives for a ``with`` or ``async with`` block."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._obj: Any = None

    def __enter__(self) -> Any:
        self._obj = self._make()
        self._obj._create_ephemeral()
        return self._obj

    def __exit__(self, *exc: object) -> None:
        self._obj._delete_ephemeral()

    async def __aenter__(self) -> Any:
        self._obj = self._make()
        await self._obj._create_ephemeral.aio()
        return self._obj

    async def __aexit__(self, *exc: object) -> None:
        await self._obj._delete_ephemeral.aio()


__all__ = ["Ephemeral", "check_name", "dump_key", "dump_value", "live", "load"]
