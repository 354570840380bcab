"""Hot swap for `rayweb serve`: a replica re-imports the user's code and swaps its app in
place, without a new process, when only the code's source changed.

The replica's app chain ends in a :class:`Swappable`; a swap builds the new app, runs its
lifespan startup, then points new requests at it (requests in flight finish on the old one)
and retires the old generation (its lifespan shutdown, ``@exit``). If anything fails, the
old app keeps serving and the error goes back to ``rayweb serve``. The gateway actor carries
the generations and the answers (``services/reloads.py``); this module only calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..common import drop_local_modules, user_failure
from ..spec import CodeRef
from .adapters import LifespanGuard
from .types import ASGIApp, Message, Receive, Scope, Send


class Swappable:
    """Calls the current generation of the user's app; lifespan goes to the first one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] | None = None  # lifespan state of a swapped-in app

    def swap(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.state is not None and scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


async def start_lifespan(
    app: ASGIApp, timeout: float = 60
) -> tuple[dict[str, Any], Callable[[], Awaitable[None]]]:
    """Run ``app``'s lifespan startup on this loop; return (its state, a stop function).

    Apps without lifespan support are fine; a ``lifespan.startup.failed`` raises."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(LifespanGuard(app)(scope, inbox.get, outbox.put))
    answer = asyncio.ensure_future(outbox.get())
    done, _ = await asyncio.wait({task, answer}, timeout=timeout, return_when="FIRST_COMPLETED")
    if answer not in done:
        answer.cancel()
        if task in done:
            task.result()  # raises the app's exception
        task.cancel()
        raise TimeoutError(f"the app's lifespan startup took more than {timeout:.0f}s")
    message = answer.result()
    if message["type"] != "lifespan.startup.complete":
        task.cancel()
        raise RuntimeError(f"lifespan startup failed: {message.get('message', '')}")

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(task, timeout=timeout)
        except Exception:
            task.cancel()

    return state, stop


Stop = Callable[[], Awaitable[None]]


def forget_code(code: CodeRef) -> None:
    """Drop the app's own modules, so that loading the code reads the new files."""
    if code.sys_path:
        drop_local_modules(Path(code.sys_path))


async def swap_in(swappable: Swappable, app: ASGIApp, previous_stop: Stop | None) -> Stop:
    """Start ``app``'s lifespan and make it the one ``swappable`` calls; then stop the lifespan
    of the app it replaces. Returns the new app's lifespan stop. Raises (the user's failure,
    formatted) without swapping if the lifespan does not start."""
    try:
        state, stop = await start_lifespan(app)
    except BaseException as exc:
        raise user_failure("the app's lifespan startup", exc) from None
    swappable.swap(app, state)
    if previous_stop is not None:
        await previous_stop()
    return stop


async def reload_loop(
    gateway: Any, app_name: str, replica: str, swap: Callable[[], Awaitable[str | None]]
) -> None:
    """`rayweb serve`: run ``swap`` whenever the driver bumps the endpoint's generation, and
    answer with its result (None, or the error text)."""
    known = await gateway.generation.remote(app_name)
    while True:
        known = await gateway.next_generation.remote(app_name, known)
        error = await swap()
        await gateway.answer.remote(app_name, known, replica, error)
