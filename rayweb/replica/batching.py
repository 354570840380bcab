"""``@rayweb.batched`` inside a function replica: Serve's batching (``serve.batch``) collects
single inputs and calls the user's function once per batch, with lists.

As on Modal, the caller passes single items (``f.remote(x)``, ``f.map(xs)``) and the function
receives one list per parameter (every input's arguments zipped) and returns one list, an
output per input. Each input is checked on its own before it joins a batch (so one malformed
call fails alone, with Modal's message); a function that raises fails every input of its
batch with that exception. Each parameter set of a class has its own batches (its own
instance).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ..exception import InvalidError

Runner = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class Batches:
    """The batch queues of one replica, one per parameter set (``params``)."""

    def __init__(self, batching: tuple[int, int], concurrent: int, run: Runner) -> None:
        self.max_batch_size, wait_ms = batching
        self.wait_s = wait_ms / 1000.0
        self.concurrent = max(1, concurrent)  # batches at once: @concurrent(max_inputs)
        self._run = run
        self._queues: dict[Any, tuple[list[str], Callable[[dict[str, Any]], Awaitable[Any]]]] = {}

    async def submit(
        self, key: Any, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """One input's output, once its batch has run."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = self._queue(fn)
        names, enqueue = queue
        return await enqueue(bind_input(names, _name(fn), args, kwargs))

    def _queue(self, fn: Callable[..., Any]) -> tuple[list[str], Any]:
        from ray import serve

        names = list(inspect.signature(fn).parameters)
        name = _name(fn)
        run = self._run

        async def rayweb_batch(inputs: list[dict[str, Any]]) -> list[Any]:
            outputs = await run(fn, (), {n: [i[n] for i in inputs] for n in names})
            if not isinstance(outputs, list):
                raise InvalidError(f"Output of batched function {name} must be a list.")
            if len(outputs) != len(inputs):
                raise InvalidError(
                    f"Output of batched function {name} must be a list of equal length as "
                    "its inputs."
                )
            return outputs

        batch = serve.batch(
            max_batch_size=self.max_batch_size,
            batch_wait_timeout_s=self.wait_s,
            max_concurrent_batches=self.concurrent,
        )
        return names, batch(rayweb_batch)


def bind_input(
    names: list[str], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """One call's arguments by parameter name, with Modal's errors for a batched function."""
    if len(args) + len(kwargs) != len(names):
        raise InvalidError(
            f"rayweb batched function {name} takes {len(names)} positional arguments, but "
            f"one invocation in the batch has {len(args) + len(kwargs)}."
        )
    bound = dict(zip(names, args, strict=False))  # len(args) <= len(names) here
    for key, value in kwargs.items():
        if key not in names:
            raise InvalidError(
                f"rayweb batched function {name} got unexpected keyword argument {key} in one "
                "invocation in the batch."
            )
        if key in bound:
            raise InvalidError(
                f"rayweb batched function {name} got multiple values for argument {key} in "
                "one invocation in the batch."
            )
        bound[key] = value
    return bound


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", "function"))
