"""HAProxy map files, as the gateway keeps them: written whole (what a reloaded or restarted
HAProxy reads) and changed in a running worker through the runtime API (no reload). Used by
the token map (``tokenmap.py``), the sessions (``sessions.py``) and node gateways
(``followers.py``). No Ray here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path


def write_map(path: Path, entries: dict[str, str]) -> bool:
    """Write ``key value`` lines (0600, atomic replace); whether the file changed."""
    text = "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return True


def send_commands(runtime: Callable[[str], str], commands: Iterable[str]) -> None:
    """``add/set/del map`` commands to a running worker; raises on a refusal (deleting a key
    the worker no longer has is none)."""
    for command in commands:
        reply = runtime(command).strip()
        if reply and not (command.startswith("del") and reply == "Key not found."):
            raise RuntimeError(f"HAProxy refused {command.split()[:2]}: {reply}")
