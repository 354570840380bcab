"""``f.spawn()`` and ``FunctionCall``: a call that runs on its own while its id travels (to a
browser, a queue, another process); ``FunctionCall.from_id(id).get()`` works from any process
connected to the cluster. The call and its result live in the ``rayweb-results`` actor
(``services/results.py``: bounded, kept 24 h by default).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from typing import Any

from ..callforms import CallTarget
from ..exception import (
    ExecutionError,
    InputCancellation,
    InvalidError,
    OutputExpiredError,
    TimeoutError,
)
from .handles import handle_for, served_name
from .invoker import _off_loop, raise_failure

WAIT_CHUNK_S = 60.0  # one actor call waits at most this long; get(timeout=None) loops


_found: dict[str, Any] = {}  # the results actor's handle, per Ray session
SPAWN_MAP_BATCH = 1000  # spawn_map inputs per message to the results actor


def _actor() -> Any:
    import ray

    from ..services.results import results_actor
    from .handles import connected

    if not connected():
        raise ExecutionError(
            "rayweb: FunctionCall needs the app's Ray cluster: call it where the app runs "
            "(after `with app.run():` or `rayweb.serve(app)`, or inside a replica)."
        )
    session = ray.get_runtime_context().get_job_id()
    if session not in _found:
        _found.clear()
        _found[session] = results_actor()
    return _found[session]


def _request(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    handle_for(target)  # the app must be running: say so here, not on .get()
    owner = target.owner
    return (
        served_name(owner),
        target.method,
        target.params,
        args,
        kwargs,
        owner.options.retries,
    )


def spawn(target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCall:
    import ray

    call_id = ray.get(_actor().spawn.remote(*_request(target, args, kwargs)))
    return FunctionCall(call_id)


def _batches(inputs: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for args in inputs:
        batch.append(args)
        if len(batch) >= SPAWN_MAP_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def spawn_map(
    target: CallTarget, inputs: Iterator[tuple[Any, ...]], kwargs: dict[str, Any]
) -> None:
    """``f.spawn_map(...)``: every input handed to the cluster's results actor, which runs
    them as it runs spawned calls; returns once all are handed over (as Modal's does, with
    no results to fetch)."""
    import ray

    app, method, params, _, _, retries = _request(target, (), {})
    for batch in _batches(inputs):
        ray.get(_actor().spawn_map.remote(app, method, params, batch, kwargs, retries))


async def spawn_map_async(
    target: CallTarget, inputs: Iterator[tuple[Any, ...]], kwargs: dict[str, Any]
) -> None:
    app, method, params, _, _, retries = _request(target, (), {})
    for batch in _batches(inputs):
        await _actor().spawn_map.remote(app, method, params, batch, kwargs, retries)


async def spawn_async(
    target: CallTarget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> FunctionCall:
    call_id = await _actor().spawn.remote(*_request(target, args, kwargs))
    return FunctionCall(call_id)


def _result(call_id: str, status: str, outcome: bytes | None) -> Any:
    if status == "expired":
        raise OutputExpiredError(
            f"The result of {call_id} is not available: it expired or was evicted (results "
            "are kept for RAYWEB_RESULTS_RETENTION_S, 24 h by default, in a bounded store), "
            "or no such call was spawned on this cluster."
        )
    if status == "cancelled":
        raise InputCancellation(f"{call_id} was cancelled.")
    if status == "pending":
        raise TimeoutError(f"{call_id} has not finished yet.")
    kind, value = pickle.loads(outcome or b"")
    if kind == "ok":
        return value
    if kind == "err":
        return raise_failure(value)
    raise ExecutionError(f"rayweb: {call_id} failed outside its code: {value}")


class _Get:
    """``fc.get(timeout=None)`` and ``await fc.get.aio(timeout=None)``."""

    def __init__(self, call: FunctionCall) -> None:
        self.call = call

    def __call__(self, timeout: float | None = None) -> Any:
        return _off_loop(self._wait, timeout)

    def _wait(self, timeout: float | None) -> Any:
        import ray

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_CHUNK_S if deadline is None else max(0.0, deadline - time.monotonic())
            wait = min(left, WAIT_CHUNK_S)
            status, outcome = ray.get(_actor().get.remote(self.call.object_id, wait))
            if status != "pending" or (deadline is not None and time.monotonic() >= deadline):
                return _result(self.call.object_id, status, outcome)

    async def aio(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_CHUNK_S if deadline is None else max(0.0, deadline - time.monotonic())
            wait = min(left, WAIT_CHUNK_S)
            status, outcome = await _actor().get.remote(self.call.object_id, wait)
            if status != "pending" or (deadline is not None and time.monotonic() >= deadline):
                return _result(self.call.object_id, status, outcome)


class FunctionCall:
    """A spawned call (Modal's ``modal.FunctionCall``): ``object_id`` is its ``fc-...`` id."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    @staticmethod
    def from_id(function_call_id: str) -> FunctionCall:
        if not isinstance(function_call_id, str) or not function_call_id.startswith("fc-"):
            raise InvalidError(
                f"Invalid function call ID {function_call_id!r}: FunctionCall IDs start with 'fc-'."
            )
        return FunctionCall(function_call_id)

    @property
    def get(self) -> _Get:
        return _Get(self)

    def cancel(self, terminate_containers: bool = False) -> None:
        """Cancel the call (its input is cancelled in its replica); ``get`` then raises
        ``InputCancellation``. ``terminate_containers`` is accepted; replicas are Serve's to
        stop."""
        import ray

        _off_loop(lambda: ray.get(_actor().cancel.remote(self.object_id)))

    @staticmethod
    def gather(*calls: FunctionCall) -> list[Any]:
        """Every call's result, in order (the first failure is raised)."""
        return [call.get() for call in calls]
