"""The hot-swap mailbox of `rayweb serve`: a generation per endpoint, and each replica's answer.

The driver bumps an endpoint's generation when only its source changed; each dev replica
keeps one long poll open (``next_generation``), swaps the new code in, and answers with
``None`` or the user's traceback. Plain asyncio, no Ray: the gateway actor holds one.
"""

from __future__ import annotations

import asyncio


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
