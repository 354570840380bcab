"""Where volumes live and the named ones' records: the root directory, name rules, creation
metadata (``.rayweb-meta/<name>.json``) and ephemeral volumes left by dead processes. No Ray.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from .exception import AlreadyExistsError, InvalidError
from .objects import check_name

ROOT_ENV = "RAYWEB_VOLUME_ROOT"
DEFAULT_ROOT = "~/.rayweb/volumes"
META_DIR = ".rayweb-meta"  # <name>.json: created_at, created_by, version
EPHEMERAL_DIR = ".ephemeral"  # <host>-<pid>-<id>: deleted when its `with` block ends


def volume_root() -> Path:
    """Where volumes live on this machine: ``RAYWEB_VOLUME_ROOT``, else ``~/.rayweb/volumes``
    (replicas get the driver's value, so both use one directory)."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser().resolve()


def check_volume_name(name: str) -> str:
    check_name("Volume", name)
    if name.startswith("."):
        raise InvalidError(
            f"Invalid Volume name: '{name}'.\n\nrayweb keeps its own data under names that "
            "start with '.'; choose a name that starts with a letter, digit, '-' or '_'."
        )
    return name


def no_environment(environment_name: str | None) -> None:
    if environment_name:
        raise InvalidError(
            "rayweb has no environments: a cluster keeps one set of volumes (`rayweb volume "
            "list`). Suggestion: leave out environment_name=."
        )


def check_version(version: int | None) -> None:
    if version is not None and version not in (1, 2):
        raise InvalidError(f"Unsupported Volume version: {version}. Use 1, 2 or None.")


def prune_ephemeral() -> None:
    """Delete the ephemeral volumes of this machine's processes that died without ending
    their ``with`` block."""
    folder = volume_root() / EPHEMERAL_DIR
    host = socket.gethostname()
    for path in folder.glob(f"{host}-*") if folder.is_dir() else []:
        pid = path.name[len(host) + 1 :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def missing(name: str) -> str:
    return (
        f"Volume '{name}' not found (looked in {volume_root()}). Suggestion: create it with "
        f"`rayweb volume create {name}`, or use Volume.from_name({name!r}, "
        "create_if_missing=True)."
    )


def meta(name: str) -> dict[str, Any]:
    try:
        data = json.loads((volume_root() / META_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def create(name: str, version: int | None, *, allow_existing: bool) -> None:
    root = volume_root()
    try:
        (root / name).mkdir(parents=True)
    except FileExistsError:
        if allow_existing:
            return
        raise AlreadyExistsError(f"Volume '{name}' already exists.") from None
    meta = {"created_at": time.time(), "created_by": _user(), "version": version}
    (root / META_DIR).mkdir(exist_ok=True)
    (root / META_DIR / f"{name}.json").write_text(json.dumps(meta))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
