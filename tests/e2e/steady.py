"""Steady load for update and fault tests (and bench/multinode.py): clients sending GETs to
one URL back to back while a block runs, keeping every answer and every failure."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx


class SteadyLoad:
    """``with SteadyLoad(url, clients=4) as load: ...``; then ``load.failures`` (status and
    text, or the exception) and ``load.answers`` ((monotonic time, JSON body) per 200)."""

    def __init__(self, url: str, clients: int = 1, pause_s: float = 0.01) -> None:
        self.url, self.pause_s = url, pause_s
        self.failures: list[str] = []
        self.answers: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.url)
                    if r.status_code == 200:
                        self.answers.append((time.monotonic(), r.json()))
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(self.pause_s)

    def seen(self, key: str) -> set[Any]:
        """The values of ``key`` in the answers."""
        return {answer[key] for _, answer in self.answers}

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
