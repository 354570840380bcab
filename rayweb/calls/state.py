"""How ``Dict`` and ``Queue`` reach their data: the cluster's ``rayweb-state`` actor when this
process is connected to Ray (a replica, a notebook after ``rayweb.serve``, ``rayweb run``);
otherwise this machine's store on disk directly, or, when a running local cluster holds that
store, that cluster's actor (found by the address it wrote next to the store).

Each write carries an operation id, kept when it is sent again, so a write retried because the
actor died (and came back, reloading from disk) is applied once.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from ..common import remote_error, use_ray_token
from ..exception import ExecutionError
from ..services.state import WRITES, QueueFull
from .invoker import _off_loop

RETRY_S = 60.0  # how long a call waits for the actor to come back


def _ray_up() -> bool:
    """Connected to Ray (without importing it: the CLI on this machine's store needs none)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _is_restart(exc: BaseException) -> bool:
    import ray.exceptions as rex

    if isinstance(exc, rex.ActorUnavailableError):
        return True
    # an actor that died and is being restarted (not one whose constructor failed)
    return isinstance(exc, rex.RayActorError) and not isinstance(
        getattr(exc, "cause", None), BaseException
    )


class ClusterState:
    """The installed :class:`~rayweb.objects.StateBackend`."""

    def __init__(self) -> None:
        self._actor: Any = None

    # -- choosing where the data is -----------------------------------------------------
    def _connected(self) -> bool:
        if _ray_up():
            return True
        from ..services.statelog import StateFiles, StoreLocked

        files = StateFiles()
        try:
            files.acquire(None)
        except StoreLocked as exc:
            address = exc.owner.get("address")
            if not address:
                raise ExecutionError(str(exc)) from None
            use_ray_token()
            import ray

            ray.init(address=address, namespace="rayweb", log_to_driver=False)
            return True
        files.release()
        return False

    def _request(self, op: str, args: tuple[Any, ...], op_id: str | None) -> Any:
        """The actor call for ``op`` (an ObjectRef)."""
        from ..services.state_actor import state_actor

        if self._actor is None:
            self._actor = state_actor()
        if op == "queue_get":
            return self._actor.get.remote(op_id, *args)
        if op in WRITES:
            return self._actor.write.remote(op, op_id, args)
        return self._actor.read.remote(op, args)

    # -- the backend -----------------------------------------------------------------------
    def call(self, op: str, *args: Any) -> Any:
        return _off_loop(self._call, op, args)

    def _call(self, op: str, args: tuple[Any, ...]) -> Any:
        if not self._connected():
            return _local(op, args)
        import ray

        op_id = uuid.uuid4().hex if op in WRITES else None
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return ray.get(self._request(op, args, op_id))
            except Exception as exc:
                if not _is_restart(exc) or time.monotonic() > deadline:
                    raise remote_error(exc) from None
                self._actor = None
                time.sleep(0.2)

    async def call_aio(self, op: str, *args: Any) -> Any:
        if not _ray_up():
            return await asyncio.to_thread(self._call, op, args)
        op_id = uuid.uuid4().hex if op in WRITES else None
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return await self._request(op, args, op_id)
            except Exception as exc:
                if not _is_restart(exc) or time.monotonic() > deadline:
                    raise remote_error(exc) from None
                self._actor = None
                await asyncio.sleep(0.2)

    def dumps(self, value: Any) -> bytes:
        from ray import cloudpickle

        blob: bytes = cloudpickle.dumps(value, protocol=5)
        return blob


def _local(op: str, args: tuple[Any, ...]) -> Any:
    """``op`` on this machine's store file, with its lock held (no cluster serves it)."""
    from ..services.statelog import StateFiles

    files = StateFiles()
    files.acquire(None, wait_s=10.0)
    try:
        state = files.load()
        now = time.time()
        if op == "queue_get":
            name, partition, n, _wait = args
            args = (name, partition, n)
        if op not in WRITES:
            return state.read(op, args, now)
        if not state.changes(op, args, now):
            return []
        try:
            result = state.apply(op, None, args, now)
        except QueueFull as exc:
            return ("full", str(exc))
        files.append([files.frame(state.seq, None, op, args, now)])
        return result
    finally:
        files.release()
