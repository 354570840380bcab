"""The ``rayweb-state`` actor: every ``Dict`` and ``Queue`` of the cluster, on the head node.

One detached async actor (not one per object: each actor is a process), restarted by Ray if
it dies (``max_restarts=-1``); it reloads the store from disk (``statelog.py``) on start.
A write is applied in memory at once, in arrival order, then acknowledged only after its log
frame is fsynced: the writes that arrive while one fsync runs share the next one (group
commit), so a steady stream of writes costs one fsync per batch, not per write.
A blocking ``Queue.get`` waits here (up to ``MAX_WAIT_S`` per call; the client asks again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .actors import cluster_actor
from .state import QueueFull, State
from .statelog import StateFiles

STATE_NAME = "rayweb-state"
MAX_WAIT_S = 30.0


class StateActor:
    def __init__(self) -> None:
        import ray

        self.files = StateFiles()
        address = ray.get_runtime_context().gcs_address
        # a restarted actor waits for its old process's lock to go (the OS drops it at exit)
        self.files.acquire(address, wait_s=3.0)
        self.state: State = self.files.load()
        self.files.snapshot(self.state)  # start from one file: the load cost stays bounded
        self.pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self.flushing = False
        self.waiters: dict[tuple[str, bytes], asyncio.Event] = {}

    async def write(self, kind: str, op_id: str | None, args: tuple[Any, ...]) -> Any:
        state = self.state
        if op_id is not None and op_id in state.done:
            return state.done[op_id]  # a retry of a write already applied and logged
        now = time.time()
        if not state.changes(kind, args, now):
            return [] if kind == "queue_get" else None
        try:
            result = state.apply(kind, op_id, args, now)
        except QueueFull as exc:
            return ("full", str(exc))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((self.files.frame(state.seq, op_id, kind, args, now), future))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future
        if kind == "queue_put":
            self._wake(args[0], args[1])
        return result

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await asyncio.to_thread(self.files.append, [frame for frame, _ in batch])
                except BaseException as exc:  # the disk refused: none of them is acknowledged
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                for _, future in batch:
                    future.set_result(None)
                if self.files.wants_snapshot():
                    self.files.snapshot(self.state)
        finally:
            self.flushing = False

    async def read(self, kind: str, args: tuple[Any, ...]) -> Any:
        return self.state.read(kind, args, time.time())

    async def get(
        self, op_id: str, name: str, partition: bytes, n: int, wait_s: float | None
    ) -> list[bytes]:
        """``Queue.get``/``get_many``: up to ``n`` items, waiting up to ``wait_s`` for one."""
        deadline = time.monotonic() + min(wait_s or 0.0, MAX_WAIT_S)
        while True:
            items: list[bytes] = await self.write("queue_get", op_id, (name, partition, n))
            left = deadline - time.monotonic()
            if items or left <= 0:
                return items
            event = self.waiters.setdefault((name, partition), asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=left)

    def _wake(self, name: str, partition: bytes) -> None:
        event = self.waiters.pop((name, partition), None)
        if event is not None:
            event.set()

    async def ping(self) -> dict[str, Any]:
        import os

        return {"pid": os.getpid(), "seq": self.state.seq, "total": self.state.total}


def state_actor() -> Any:
    """The cluster's state actor (created on the head node on first use)."""
    return cluster_actor(StateActor, STATE_NAME, max_restarts=-1, max_concurrency=4096)
