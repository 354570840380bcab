"""The caller's side of ``.remote()`` and friends, wherever user code runs: a script or
notebook (after ``rayweb.serve``/``app.run()``), a web endpoint or another function's replica.

Each call goes through the function's Serve deployment handle (no HTTP hop): ``call`` for
one input, ``call_gen`` (a streaming handle) for generators. Replicas answer
("ok", value) or ("err", ``RemoteFailure``); a failure is raised here as the user's own
exception with the remote traceback as a note (``ExecutionError`` with its text when it
does not unpickle). ``retries=`` are applied here, with Modal's delays, to user exceptions
and to replicas that died mid-call. Sync forms called from inside a running event loop run
on a helper thread (they block that loop, as on Modal: use ``.aio``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
import queue
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from ..callforms import CallTarget
from ..common import RemoteFailure
from ..compiler.variants import start_variant
from ..exception import ExecutionError, InvalidError, NotFoundError
from ..spec import Retries
from . import lookup, variants
from .handles import method_handle

MAP_WINDOW = 1000  # inputs of one .map() in flight at once
_helper = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="rayweb-call")
_warned_sync_in_loop = False


def raise_failure(failure: RemoteFailure) -> Any:
    """The user's exception from a replica, raised here with its remote traceback."""
    exc: BaseException | None = None
    if failure.pickled is not None:
        try:
            exc = pickle.loads(failure.pickled)
        except Exception:
            exc = None
    if exc is None:
        raise ExecutionError(f"{failure.type_name}: {failure.message}\n\n{failure.traceback}")
    exc.add_note(f"\nRemote traceback (rayweb replica):\n{failure.traceback.rstrip()}")
    raise exc


def _outcome(target: CallTarget, outcome: tuple[str, Any]) -> Any:
    status, value = outcome
    if status == "ok":
        return value
    return raise_failure(value)


def _translate(target: CallTarget, exc: Exception, values: Iterable[Any]) -> Exception:
    """What the caller sees for ``exc`` from Ray or Serve (not from user code): an argument
    that does not serialize (a TypeError naming it), a replica that died (ExecutionError);
    anything else as it is."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TypeError) and ("pickl" in text.lower() or "serializ" in text.lower()):
        first_line = text.splitlines()[0]
        return TypeError(
            _unpicklable(target, values) or f"rayweb: cannot send the call: {first_line}"
        )
    if _is_system(exc):
        return ExecutionError(
            f"rayweb: the call to {target.function.tag} failed outside its code "
            f"(its replica may have died): {text}"
        )
    return exc


def _unpicklable(target: CallTarget, values: Iterable[Any]) -> str | None:
    from ray import cloudpickle

    for index, value in enumerate(values):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return (
                f"Argument {index} of {target.function.tag}.remote() ({type(value).__name__}) "
                f"cannot be serialized to send it to the cluster: {exc}"
            )
    return None


def _retries(target: CallTarget) -> Retries | None:
    return target.owner.options.retries


def _is_system(exc: BaseException) -> bool:
    import ray.exceptions

    return isinstance(exc, (ray.exceptions.RayError,)) and not isinstance(exc, TimeoutError)


def _submit(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    method = method_handle(target, "call")
    try:
        return method.remote(target.method, target.params, args, kwargs)
    except TypeError as exc:
        translated = _translate(target, exc, (*args, *kwargs.values()))
        if translated is exc:
            raise
        raise translated from None


def call_sync(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``f.remote(...)``."""
    retries = _retries(target)
    attempt = 0
    while True:
        try:
            try:
                outcome = _submit(target, args, kwargs).result()
            except Exception as exc:
                translated = _translate(target, exc, (*args, *kwargs.values()))
                if translated is exc:
                    raise
                raise translated from None
            return _outcome(target, outcome)
        except (InvalidError, NotFoundError, TypeError):
            raise
        except Exception:
            if retries is None or attempt >= retries.max_retries:
                raise
            time.sleep(retries.delay(attempt))
            attempt += 1


async def call_async(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``await f.remote.aio(...)``: never blocks the caller's event loop."""
    retries = _retries(target)
    attempt = 0
    while True:
        try:
            try:
                outcome = await _submit(target, args, kwargs)
            except Exception as exc:
                translated = _translate(target, exc, (*args, *kwargs.values()))
                if translated is exc:
                    raise
                raise translated from None
            return _outcome(target, outcome)
        except (InvalidError, NotFoundError, TypeError):
            raise
        except Exception:
            if retries is None or attempt >= retries.max_retries:
                raise
            await asyncio.sleep(retries.delay(attempt))
            attempt += 1


def _stream(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    method = method_handle(target, "call_gen")
    return method.remote(target.method, target.params, args, kwargs)


def gen_sync(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    """``for x in f.remote_gen(...)``: items as the replica yields them."""
    for outcome in _stream(target, args, kwargs):
        yield _outcome(target, outcome)


async def gen_async(
    target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    async for outcome in _stream(target, args, kwargs):
        yield _outcome(target, outcome)


def _inputs(form: str, args: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    if form == "starmap":
        (iterable,) = args
        return (tuple(item) for item in iterable)
    if not args:
        raise InvalidError(f".{form}() needs at least one input iterator.")
    return zip(*args, strict=False)


def map_sync(
    target: CallTarget,
    inputs: Iterator[tuple[Any, ...]],
    kwargs: dict[str, Any],
    return_exceptions: bool,
) -> Iterator[Any]:
    """``f.map(...)``: up to ``MAP_WINDOW`` inputs in flight, results in input order."""
    pending: deque[tuple[tuple[Any, ...], Any]] = deque()

    def settle() -> Any:
        args, response = pending.popleft()
        try:
            try:
                return _outcome(target, response.result())
            except Exception as exc:
                if not _is_system(exc) and _retries(target) is None:
                    raise
                return call_sync(target, args, kwargs)  # retried (or re-raised) one by one
        except Exception as exc:
            if return_exceptions:
                return exc
            raise

    for args in inputs:
        pending.append((args, _submit(target, args, kwargs)))
        if len(pending) >= MAP_WINDOW:
            yield settle()
    while pending:
        yield settle()


async def map_async(
    target: CallTarget,
    inputs: Iterator[tuple[Any, ...]],
    kwargs: dict[str, Any],
    return_exceptions: bool,
) -> AsyncIterator[Any]:
    pending: deque[asyncio.Task[Any]] = deque()

    async def one(args: tuple[Any, ...]) -> Any:
        try:
            return await call_async(target, args, kwargs)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise

    try:
        for args in inputs:
            pending.append(asyncio.ensure_future(one(args)))
            if len(pending) >= MAP_WINDOW:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _off_loop(fn: Any, *args: Any) -> Any:
    """Run a blocking call form; from inside an event loop, on a helper thread (Serve's
    handles refuse to block a running loop), warning once that it blocks the loop."""
    global _warned_sync_in_loop
    if not _in_event_loop():
        return fn(*args)
    if not _warned_sync_in_loop:
        _warned_sync_in_loop = True
        warnings.warn(
            "rayweb: a blocking call (`f.remote()`, `f.map()`, `d[key]`, `q.get()`, ...) ran "
            "inside an event loop and blocked it until the result came. Suggestion: its .aio "
            "form, such as `await f.remote.aio(...)` or `await d.get.aio(key)`.",
            stacklevel=4,
        )
    return _helper.submit(fn, *args).result()


def _iterate(make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """A blocking iterator form; from inside an event loop, produced on a helper thread and
    handed over item by item (each ``next`` blocks that loop, as ``_off_loop`` says)."""
    if not _in_event_loop():
        return make()
    handover: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)

    def produce() -> None:
        try:
            for item in make():
                handover.put(("item", item))
        except BaseException as exc:
            handover.put(("error", exc))
        else:
            handover.put(("end", None))

    _off_loop(lambda: None)  # the warning, once
    _helper.submit(produce)

    def consume() -> Iterator[Any]:
        while True:
            kind, value = handover.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    return consume()


class Invoker:
    """``functions.Invoker``: dispatches each call form (installed by ``rayweb``'s facade)."""

    def call(self, target: CallTarget, form: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        if lookup.looked_up(target):  # Function.from_name / Cls.from_name
            _off_loop(lookup.ensure, target, form)
        if variants.is_variant(target):  # Cls.with_options & co.
            _off_loop(variants.ensure, target)
        if form == "remote":
            return _off_loop(call_sync, target, args, kwargs)
        if form == "spawn":
            from .spawned import spawn

            return _off_loop(spawn, target, args, kwargs)
        if form == "remote_gen":
            return _iterate(lambda: gen_sync(target, args, kwargs))
        options = _map_options(form, kwargs)
        inputs = _inputs(form, args)
        if form == "spawn_map":
            from .spawned import spawn_map

            return _off_loop(spawn_map, target, inputs, options[0])
        if form == "for_each":
            return _off_loop(lambda: _drain(map_sync(target, inputs, *options)))
        return _iterate(lambda: map_sync(target, inputs, *options))

    def call_aio(self, target: CallTarget, form: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        prepare = []
        if lookup.looked_up(target):
            prepare.append(lambda: lookup.ensure_async(target, form))
        if variants.is_variant(target):
            prepare.append(lambda: variants.ensure_async(target))
        if prepare:
            return lookup.after(prepare, form, lambda: self._aio(target, form, args, kwargs))
        return self._aio(target, form, args, kwargs)

    def start_variant(self, variant: Any, name: str, *, dev: bool) -> None:
        start_variant(variant, name, dev=dev)

    def web_url(self, app_name: str, name: str, label: str) -> str:
        return lookup.web_url(app_name, name, label)

    def server_session(self, action: str, route: str, arg: Any) -> Any:
        return lookup.server_session(action, route, arg)

    def _aio(self, target: CallTarget, form: str, args: tuple[Any, ...], kwargs: Any) -> Any:
        if form == "remote":
            return call_async(target, args, kwargs)
        if form == "spawn":
            from .spawned import spawn_async

            return spawn_async(target, args, kwargs)
        if form == "remote_gen":
            return gen_async(target, args, kwargs)
        options = _map_options(form, kwargs)
        if form == "spawn_map":
            from .spawned import spawn_map_async

            return spawn_map_async(target, _inputs(form, args), options[0])
        results = map_async(target, _inputs(form, args), *options)
        if form == "for_each":
            return _drain_async(results)
        return results


def _map_options(form: str, options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(kwargs for every input, return_exceptions) from Modal's map/starmap/for_each options."""
    allowed = {"kwargs", "order_outputs", "return_exceptions", "wrap_returned_exceptions"}
    if form == "for_each":
        allowed = {"kwargs", "ignore_exceptions"}
    if form == "spawn_map":
        allowed = {"kwargs"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f".{form}() got unexpected keyword argument(s) {sorted(unknown)}")
    kwargs = dict(options.get("kwargs") or {})
    catch = bool(options.get("return_exceptions", options.get("ignore_exceptions", False)))
    return kwargs, catch


def _drain(results: Iterator[Any]) -> None:
    for _ in results:
        pass


async def _drain_async(results: AsyncIterator[Any]) -> None:
    async for _ in results:
        pass
