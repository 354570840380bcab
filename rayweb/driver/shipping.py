"""What ``rayweb deploy`` ships: the app's source root, minus what must never leave the machine.

Never shipped: ``.env`` files, keys and certificates (``*.pem``, ``*.key``, SSH keys such as
``id_rsa``), ``.git*``, virtualenvs (``.venv``, ``venv`` and any folder with a
``pyvenv.cfg``), caches, and whatever the app's ``.raywebignore`` names (gitignore syntax,
like Ray's own ``.gitignore``/``.rayignore``, which Ray applies too). The patterns go to Ray's
``runtime_env["excludes"]``; :func:`ship_plan` also lists what they leave out, so the CLI
can say so. Pure: no Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pathspec

IGNORE_FILE = ".raywebignore"
NEVER_SHIPPED = [
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    # SSH keys by their names (id_rsa, id_ed25519.pub, ...); a bare `id_*` would also drop a
    # package or module whose name starts with id_.
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".git*",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
]
SHOWN = 20  # excluded paths named in the CLI's message; the rest are counted


@dataclass(frozen=True)
class ShipPlan:
    """``excludes`` for Ray's runtime_env, and the paths (relative to the root, folders with a
    trailing ``/``) they leave out, outermost only."""

    excludes: list[str]
    excluded: list[str]


def ship_plan(root: Path) -> ShipPlan:
    """What to exclude when shipping ``root``, and what that leaves out."""
    excludes = list(NEVER_SHIPPED)
    ignore = root / IGNORE_FILE
    if ignore.is_file():
        excludes += [
            line.strip()
            for line in ignore.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    spec = pathspec.GitIgnoreSpec.from_lines(excludes)
    excluded: list[str] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        for name in sorted(dirs):
            rel = (here / name).as_posix()
            matched = spec.match_file(rel) or spec.match_file(rel + "/")  # `data/` patterns
            if matched or (Path(folder, name, "pyvenv.cfg")).is_file():
                excluded.append(rel + "/")
                if not matched:
                    excludes.append(f"/{rel}/")  # a virtualenv under another name
                dirs.remove(name)  # Ray does not look inside an excluded folder either
        excluded += [(here / f).as_posix() for f in sorted(files) if spec.match_file(here / f)]
    return ShipPlan(excludes, sorted(excluded))


def describe(excluded: list[str]) -> str:
    """One line naming what was left out."""
    shown = ", ".join(excluded[:SHOWN])
    more = f" and {len(excluded) - SHOWN} more" if len(excluded) > SHOWN else ""
    return f"Not shipped (secrets, keys, virtualenvs, caches, {IGNORE_FILE}): {shown}{more}"
