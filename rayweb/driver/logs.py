"""``rayweb app logs``: the output of an endpoint's replicas (and web_server sidecars).

Uses Ray's state API (the dashboard that ``rayweb cluster up`` starts), so it works for
replicas on any node. With ``follow``, replicas that start later are picked up too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..common import SIDECAR_PREFIX

RESCAN_S = 2.0
Write = Callable[[str], None]


def endpoint_actors(name: str) -> list[tuple[str, str]]:
    """(actor id, short label) of the endpoint's live replicas and sidecars."""
    from ray.util.state import list_actors

    out = []
    alive: list[tuple[str, str, str | bool | int | float]] = [("state", "=", "ALIVE")]
    for actor in list_actors(address=_address(), filters=alive, limit=10_000, timeout=30):
        class_name = actor.class_name or ""
        actor_name = actor.name or ""
        if class_name.startswith(f"ServeReplica:{name}:"):
            out.append((actor.actor_id, f"replica {actor.actor_id[:8]}"))
        elif actor_name.startswith(f"{SIDECAR_PREFIX}{name}:"):
            out.append((actor.actor_id, f"server {actor.actor_id[:8]}"))
    return out


def _lines(actor_id: str, suffix: str, *, follow: bool, tail: int) -> Any:
    from ray.util.state import get_log

    return get_log(
        address=_address(),
        actor_id=actor_id,
        suffix=suffix,
        follow=follow,
        tail=tail,
        errors="replace",
        timeout=30,
    )


def _address() -> str:
    """The connected cluster's address: the state API would otherwise look for "the" local
    Ray, and fail when this host runs more than one."""
    import ray

    return str(ray.get_runtime_context().gcs_address)


def _keep(line: str) -> bool:
    # Ray marks which actor/task wrote the following lines; not the user's output.
    return not line.startswith((":actor_name:", ":task_name:", ":job_id:"))


def show_logs(
    name: str, *, follow: bool, tail: int, write: Write, stop: threading.Event | None = None
) -> int:
    """Write the endpoint's log lines, each prefixed by where it came from; return how many
    replicas were found (0: none running)."""
    stop = stop or threading.Event()
    lock = threading.Lock()
    actors = endpoint_actors(name)
    if not follow:
        for actor_id, label in actors:
            for suffix in ("out", "err"):
                for line in _lines(actor_id, suffix, follow=False, tail=tail):
                    for part in line.splitlines():
                        if _keep(part):
                            write(f"[{label}] {part}")
        return len(actors)

    started: set[str] = set()

    def pump(actor_id: str, label: str, suffix: str) -> None:
        try:
            for line in _lines(actor_id, suffix, follow=True, tail=tail):
                if stop.is_set():
                    return
                for part in line.splitlines():
                    if _keep(part):
                        with lock:
                            write(f"[{label}] {part}")
        except Exception:
            pass  # the actor went away; its log ends here

    seen = 0
    while not stop.is_set():
        for actor_id, label in actors:
            if actor_id not in started:
                started.add(actor_id)
                seen += 1
                for suffix in ("out", "err"):
                    threading.Thread(
                        target=pump, args=(actor_id, label, suffix), daemon=True
                    ).start()
        if stop.wait(RESCAN_S):
            break
        try:
            actors = endpoint_actors(name)
        except Exception:
            time.sleep(RESCAN_S)
    return seen
