"""The hot-swap mailbox of `rayweb serve`: a generation per endpoint, and each replica's answer.

The driver bumps an endpoint's generation when only its source changed; each dev replica
keeps one long poll open (``next_generation``), swaps the new code in, and answers with
``None`` or the user's traceback. Plain asyncio, no Ray: the gateway actor holds one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .haproxy_config import Route


class ReloadMailbox:
    """Generations and answers; the waiting side is an ``asyncio.Condition``."""

    def __init__(self) -> None:
        self.generations: dict[str, int] = {}
        self.answers: dict[tuple[str, int], dict[str, str | None]] = {}
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on the actor's event loop, at first use
            self._changed = asyncio.Condition()
        return self._changed

    def generation(self, app: str) -> int:
        return self.generations.get(app, 0)

    async def next_generation(self, app: str, known: int) -> int:
        """Wait until ``app`` has a generation other than ``known`` (a replica's long poll)."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.generations.get(app, 0) != known)
        return self.generations[app]

    async def bump(self, app: str) -> int:
        """A new generation for ``app``: every waiting replica wakes up."""
        changed = self._condition()
        async with changed:
            generation = self.generations.get(app, 0) + 1
            self.generations[app] = generation
            self.answers[(app, generation)] = {}
            changed.notify_all()
        return generation

    def answer(self, app: str, generation: int, replica: str, error: str | None) -> None:
        self.answers.setdefault((app, generation), {})[replica] = error

    def answers_for(self, app: str, generation: int) -> dict[str, str | None]:
        return dict(self.answers.get((app, generation), {}))


class HotSwapMethods:
    """The gateway actor's hot-swap methods (the actor holds ``reloads``, its route table
    and ``_save_state``): the driver bumps, the replicas poll and answer."""

    reloads: ReloadMailbox
    routes: dict[str, Route]

    def _save_state(self) -> None:
        raise NotImplementedError

    def generation(self, app: str) -> int:
        return self.reloads.generation(app)

    async def next_generation(self, app: str, known: int) -> int:
        return await self.reloads.next_generation(app, known)

    async def bump_generation(self, app: str) -> tuple[int, list[str]]:
        """Ask ``app``'s replicas (a class pool's: those of its labels) to reload their
        code; (generation, replicas asked)."""
        generation = await self.reloads.bump(app)
        self._save_state()
        routes = [r for name, r in self.routes.items() if app in (name, r.serve_app)]
        return generation, sorted({replica for r in routes for replica in r.servers})

    def answer(self, app: str, generation: int, replica: str, error: str | None) -> None:
        self.reloads.answer(app, generation, replica, error)

    def generation_answers(self, app: str, generation: int) -> dict[str, str | None]:
        return self.reloads.answers_for(app, generation)
