"""The cluster's spawned calls: ``f.spawn()`` runs here, its result waits here for
``FunctionCall.get`` from any process (``rayweb-results``, one async actor on the head node).

The actor makes the call through the function's Serve handle (with its ``retries=``) and
keeps each outcome pickled, so the store's size is known: at most ``RAYWEB_RESULTS_MAX_CALLS``
finished calls (default 100,000) and ``RAYWEB_RESULTS_MAX_BYTES`` of results (default
1 GiB), each for ``RAYWEB_RESULTS_RETENTION_S`` (default 24 h); beyond either bound the
oldest finished results go first, and a result that is gone reads as expired (Modal's
``OutputExpiredError``). Calls still running are never evicted. The store lives in the
actor's memory: restarting the cluster (or the actor) forgets it. At most
``RAYWEB_SPAWN_CONCURRENCY`` (default 1,000) spawned calls are sent at once; the others wait
here, in order, so a burst of spawns queues at the actor rather than in Serve's routers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ..spec import Retries
from .actors import cluster_actor

RESULTS_NAME = "rayweb-results"
logger = logging.getLogger("rayweb.results")


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class _Call:
    created: float
    finished: float | None = None  # results are kept for the retention from here
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: bytes | None = None  # cloudpickled ("ok", value) / ("err", failure) / ("sys", text)
    cancelled: bool = False
    task: asyncio.Task[None] | None = None
    keep: bool = True  # False for spawn_map's calls: nobody can ask for their results


class ResultsActor:
    """Spawned calls and their results, bounded (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: OrderedDict[str, _Call] = OrderedDict()
        self.bytes = 0
        self.max_calls = int(_env_number("RAYWEB_RESULTS_MAX_CALLS", 100_000))
        self.max_bytes = int(_env_number("RAYWEB_RESULTS_MAX_BYTES", 1024**3))
        self.retention_s = _env_number("RAYWEB_RESULTS_RETENTION_S", 86_400)
        self.handles: dict[str, Any] = {}
        self.concurrency = max(1, int(_env_number("RAYWEB_SPAWN_CONCURRENCY", 1000)))
        self.waiting: deque[tuple[_Call, str, tuple[Any, ...], Retries | None]] = deque()
        self.senders: set[asyncio.Future[None]] = set()

    async def spawn(
        self,
        app: str,
        method: str | None,
        params: tuple[Any, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retries: Retries | None,
    ) -> str:
        call_id = "fc-" + secrets.token_urlsafe(18)
        call = self.calls[call_id] = _Call(time.time())
        self.waiting.append((call, app, (method, params, args, kwargs), retries))
        if len(self.senders) < self.concurrency:
            sender = asyncio.ensure_future(self._send())
            self.senders.add(sender)  # a task nothing refers to may be garbage-collected
            sender.add_done_callback(self.senders.discard)
        return call_id

    async def spawn_map(
        self,
        app: str,
        method: str | None,
        params: tuple[Any, ...],
        inputs: list[tuple[Any, ...]],
        kwargs: dict[str, Any],
        retries: Retries | None,
    ) -> int:
        """Queue one call per input, like ``spawn``, keeping no results (``spawn_map``)."""
        for args in inputs:
            self.waiting.append(
                (_Call(time.time(), keep=False), app, (method, params, args, kwargs), retries)
            )
        while self.waiting and len(self.senders) < self.concurrency:
            sender = asyncio.ensure_future(self._send())
            self.senders.add(sender)
            sender.add_done_callback(self.senders.discard)
        return len(inputs)

    async def _send(self) -> None:
        """One of at most ``concurrency`` senders: runs waiting calls one after another
        (each its own task, so ``cancel`` stops that call only)."""
        while self.waiting:
            call, app, request, retries = self.waiting.popleft()
            if call.cancelled:
                continue
            call.task = asyncio.ensure_future(self._run(call, app, request, retries))
            await asyncio.wait([call.task])
            call.task = None  # a finished task is ~1 KB: 100,000 of them add up

    async def _handle(self, app: str) -> Any:
        handle: Any = self.handles.get(app)
        if handle is None:
            from ray import serve

            loop = asyncio.get_running_loop()
            handle = await loop.run_in_executor(None, serve.get_app_handle, app)
            self.handles[app] = handle.options(method_name="call")
        return self.handles[app]

    async def _run(
        self, call: _Call, app: str, request: tuple[Any, ...], retries: Retries | None
    ) -> None:
        from ray import cloudpickle

        attempt = 0
        while True:
            try:
                outcome: tuple[str, Any] = await (await self._handle(app)).remote(*request)
            except asyncio.CancelledError:
                if call.cancelled:
                    raise  # FunctionCall.cancel(): cancel() has settled the call
                outcome = ("sys", "the call was cancelled by Serve")  # not by us: settle it
                break
            except Exception as exc:
                self.handles.pop(app, None)
                outcome = ("sys", f"{type(exc).__name__}: {exc}")
            if outcome[0] == "ok" or retries is None or attempt >= retries.max_retries:
                break
            await asyncio.sleep(retries.delay(attempt))
            attempt += 1
        if not call.keep:
            if outcome[0] != "ok":
                logger.warning("a spawn_map input to %s failed: %s", app, _summary(outcome))
            return
        try:
            call.outcome = cloudpickle.dumps(outcome)
        except Exception as exc:
            call.outcome = cloudpickle.dumps(("sys", f"the result does not serialize: {exc}"))
        self.bytes += len(call.outcome)
        call.finished = time.time()
        call.done.set()
        self._evict()

    def _evict(self) -> None:
        """Drop expired results, then the oldest finished ones beyond the bounds (from the
        oldest; stops at the first one that may stay)."""
        now = time.time()
        over = len(self.calls) - self.max_calls
        excess = self.bytes - self.max_bytes
        victims = []
        for cid, call in self.calls.items():
            if not call.done.is_set():
                continue
            age = now - (call.finished or call.created)
            if age <= self.retention_s and over <= 0 and excess <= 0:
                break
            victims.append(cid)
            over -= 1
            excess -= len(call.outcome or b"")
        for cid in victims:
            self.bytes -= len(self.calls.pop(cid).outcome or b"")

    async def get(self, call_id: str, timeout: float | None) -> tuple[str, bytes | None]:
        """("done", outcome), ("pending", None), ("cancelled", None) or ("expired", None)."""
        call = self.calls.get(call_id)
        if call is None or (
            call.finished is not None and time.time() - call.finished > self.retention_s
        ):
            return "expired", None
        if call.cancelled:
            return "cancelled", None
        if not call.done.is_set():  # (wait_for with timeout 0 never looks at a set event)
            try:
                await asyncio.wait_for(call.done.wait(), timeout)
            except asyncio.TimeoutError:
                return "pending", None
        if call.cancelled:
            return "cancelled", None
        return "done", call.outcome

    async def cancel(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.done.is_set():
            return
        call.cancelled = True  # a waiting call is skipped when its turn comes
        if call.task is not None:
            call.task.cancel()  # cancels the handle call, and so the input in its replica
        call.outcome = b""
        call.finished = time.time()
        call.done.set()

    def stats(self) -> dict[str, int]:
        running = sum(1 for c in self.calls.values() if not c.done.is_set())
        return {
            "calls": len(self.calls),
            "running": running,
            "waiting": len(self.waiting),
            "bytes": self.bytes,
        }


def _summary(outcome: tuple[str, Any]) -> str:
    kind, value = outcome
    if kind == "err":
        return f"{value.type_name}: {value.message}"
    return str(value)


def results_actor() -> Any:
    """The cluster's results actor (created on the head node on first use)."""
    return cluster_actor(ResultsActor, RESULTS_NAME, max_concurrency=100_000)
