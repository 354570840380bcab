"""``rayweb.Queue`` (Modal's ``modal.Queue``): FIFO queues shared by every function and
endpoint of the cluster, kept by the ``rayweb-state`` actor and persisted on the head node.

Each queue has a default partition and up to 100,000 named ones (keys of 1-64 bytes), each
an independent FIFO of at most 5,000 items of at most 1 MiB (Modal's limits;
``RAYWEB_QUEUE_MAX_PARTITION_ITEMS``, ``RAYWEB_QUEUE_MAX_ITEM_BYTES``). A partition is
cleared ``partition_ttl`` seconds (default 24 h) after its last ``put``.
"""

from __future__ import annotations

import functools
import queue
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .dicts import _ephemeral_name, _from_name, _NamedObject, _ObjectsProperty
from .exception import InvalidError
from .objects import SLEEP, Ephemeral, Program, dump_value, live, load

WAIT_S = 25.0  # one blocking request waits at most this long; the client asks again


def _partition(partition: str | None) -> bytes:
    if partition is None:
        return b""
    key = partition.encode("utf-8")
    if not 0 < len(key) <= 64:
        raise InvalidError("Queue partition key must be between 1 and 64 characters.")
    return key


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class Queue(_NamedObject):
    """A distributed FIFO queue (``Queue.from_name("jobs", create_if_missing=True)``)."""

    _kind = "queue"
    objects = _ObjectsProperty()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("_name"):
            raise RuntimeError(
                "Queue() is not allowed. Please use `Queue.from_name(...)` or "
                "`Queue.ephemeral()` instead."
            )
        super().__init__(*args, **kwargs)

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        namespace: Any = None,
        environment_name: str | None = None,
        create_if_missing: bool = False,
    ) -> Queue:
        q: Queue = _from_name(cls, name, create_if_missing)
        return q

    @classmethod
    def ephemeral(cls, **_kwargs: Any) -> Ephemeral:
        return Ephemeral(lambda: cls(_name=_ephemeral_name("queue")))

    # -- putting -----------------------------------------------------------------------
    @live
    def put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> Program:
        """Add ``v``; a full partition waits (``block``, up to ``timeout``) or ``queue.Full``."""
        yield from self._put([v], block, timeout, partition, partition_ttl)

    @live
    def put_many(
        self,
        vs: list[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> Program:
        """Add every item of ``vs``, in order, in one write."""
        yield from self._put(list(vs), block, timeout, partition, partition_ttl)

    def _put(
        self, vs: list[Any], block: bool, timeout: float | None, partition: str | None, ttl: int
    ) -> Program:
        key = _partition(partition)
        if not block and timeout is not None:
            warnings.warn("`timeout` argument is ignored for non-blocking put.", stacklevel=4)
        yield from self._ready()
        values = [dump_value(v) for v in vs]
        deadline, delay = _deadline(timeout), 0.05
        while True:
            result = yield ("queue_put", self._name, key, values, float(ttl))
            if not (isinstance(result, tuple) and result and result[0] == "full"):
                return
            if not block or (deadline is not None and time.monotonic() + delay > deadline):
                raise queue.Full(result[1])
            yield (SLEEP, delay)
            delay = min(delay * 2, 1.0)

    # -- getting -----------------------------------------------------------------------
    @live
    def get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Program:
        """Remove and return the next item. Blocking: wait (up to ``timeout``, then
        ``queue.Empty``); not blocking: ``None`` when the partition is empty."""
        items = yield from self._get(1, block, timeout, partition)
        return items[0] if items else None

    @live
    def get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
    ) -> Program:
        """Remove and return up to ``n_values`` items (waiting for at least one if ``block``)."""
        return (yield from self._get(n_values, block, timeout, partition))

    def _get(self, n: int, block: bool, timeout: float | None, partition: str | None) -> Program:
        key = _partition(partition)
        if not block and timeout is not None:
            warnings.warn("Timeout is ignored for non-blocking get.", stacklevel=4)
        yield from self._ready()
        deadline = _deadline(timeout) if block else time.monotonic()
        while True:
            wait = WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            items = yield ("queue_get", self._name, key, n, min(wait, WAIT_S))
            if items:
                return [load(v) for v in items]
            if not block:
                return []
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty()

    # -- looking -----------------------------------------------------------------------
    @live
    def len(self, *, partition: str | None = None, total: bool = False) -> Program:
        """Items in the partition, or in every partition with ``total=True``."""
        if partition and total:
            raise InvalidError("Partition must be null when requesting total length.")
        key = _partition(partition)
        yield from self._ready()
        return (yield ("queue_len", self._name, key, total))

    def __len__(self) -> int:
        return int(self.len())

    @live
    def clear(self, *, partition: str | None = None, all: bool = False) -> Program:
        """Empty the partition, or every partition with ``all=True``."""
        if partition and all:
            raise InvalidError("Partition must be null when requesting to clear all.")
        key = _partition(partition)
        yield from self._ready()
        yield ("queue_clear", self._name, key, all)

    @live
    def _peek(self, key: bytes, after: int, n: int) -> Program:
        yield from self._ready()
        return (yield ("queue_peek", self._name, key, after, n))

    def _iterate(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> Iterator[Any]:
        """The items, in order, without removing them; with ``item_poll_timeout``, go on
        waiting that long for new items after the last one."""
        key, after = _partition(partition), -1
        deadline = time.monotonic() + item_poll_timeout
        while True:
            page = self._peek(key, after, 100)
            for after, blob in page:  # noqa: B007 (the last id is the next page's start)
                yield load(blob)
            if page:
                deadline = time.monotonic() + item_poll_timeout
            elif time.monotonic() >= deadline:
                return
            else:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    async def _iterate_aio(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> AsyncIterator[Any]:
        import asyncio

        key, after = _partition(partition), -1
        deadline = time.monotonic() + item_poll_timeout
        while True:
            page = await self._peek.aio(key, after, 100)
            for after, blob in page:  # noqa: B007
                yield load(blob)
            if page:
                deadline = time.monotonic() + item_poll_timeout
            elif time.monotonic() >= deadline:
                return
            else:
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    class _IterateForm:
        """``q.iterate(...)`` and ``q.iterate.aio(...)`` (an async iterator)."""

        def __get__(self, obj: Any, owner: type) -> Any:
            if obj is None:
                return self
            form: Any = functools.partial(obj._iterate)
            form.aio = functools.partial(obj._iterate_aio)
            return form

    iterate = _IterateForm()
