"""Volume mounts and ``Image.add_local_*`` files in a replica: each path becomes a symlink.

``volumes={"/data": vol}`` makes ``/data`` a symlink to the volume's directory
(``<volume root>/<name>``), and an image's local file or directory a symlink to the local
path (or its staged copy). The links are made at replica start, before the user's code is
imported, and stay after it (a later replica reuses them). A path that is the volume's
directory already (a KubeRay pod mounts each volume's claim at the script's path too) is
left as it is.

Every process of a node shares one filesystem, so two replicas wanting *different* targets
at one path would break each other: a small owner record per node
(``<volume root>/.rayweb-mounts/<host>.json``, changed under an ``fcntl`` lock) maps each
path to its target and the PIDs using it; a second live target at the same path is refused,
naming both. Owners whose process died are ignored. No driver code here.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..exception import InvalidError, NotFoundError
from ..spec import SHIPPED, FunctionPayload, ReplicaPayload
from ..volstore import ROOT_ENV, pid_alive, volume_root

OWNERS_DIR = ".rayweb-mounts"
VOLUME_ROOT_ENV = ROOT_ENV


def setup_files(payload: ReplicaPayload | FunctionPayload) -> None:
    """Make the payload's mounts and local-file links; raise a clear error naming the path,
    the reason and the fix when one cannot be made."""
    root = Path(payload.volume_root) if payload.volume_root else volume_root()
    wanted: list[tuple[str, str, str]] = []
    for path, dir_name in payload.mounts:
        target = str(root / dir_name)
        if not os.path.isdir(target):
            raise NotFoundError(
                f"Volume '{dir_name}' (mounted at {path}) is missing: {target} does not exist "
                f"on this node. Suggestion: `rayweb volume create {dir_name}`, and on a "
                "multi-node cluster keep RAYWEB_VOLUME_ROOT on a filesystem every node mounts."
            )
        wanted.append((path, target, f"Volume '{dir_name}'"))
    for remote, local in payload.links:
        target = local
        if local.startswith(SHIPPED):  # under the code `rayweb deploy` shipped (cwd)
            target = os.path.join(os.getcwd(), local[len(SHIPPED) :])
        if not os.path.exists(target):
            raise NotFoundError(
                f"The image's local file {local} (for {remote}) is missing on this node at "
                f"{target}. Suggestion: local files are linked, not copied: serve the app on "
                "the machine that has them, or keep them under the app's source directory "
                "so `rayweb deploy` ships them with the code."
            )
        wanted.append((remote, target, f"the image's local file {local}"))
    with owners(root) as record:
        for path, target, what in wanted:
            known = claim(record, path, target, what, os.getpid())
            link(path, target, what, replace_stale=known)


@contextlib.contextmanager
def owners(root: Path) -> Iterator[dict[str, Any]]:
    """This node's owner record, locked while the block runs and saved after it."""
    folder = root / OWNERS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(f"the mount record {folder}", exc, root) from None
    host = socket.gethostname()
    record_file = folder / f"{host}.json"
    with open(folder / f"{host}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = json.loads(record_file.read_text()) if record_file.exists() else {}
        except ValueError:
            record = {}  # a torn write of an older version: start again
        yield record
        tmp = record_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, record_file)


def claim(record: dict[str, Any], path: str, target: str, what: str, pid: int) -> bool:
    """Record ``pid`` as using ``target`` at ``path``; refuse a different target that a live
    process uses there. True when the path was rayweb's before (its link may be replaced)."""
    entry = record.get(path)
    live = [p for p in (entry or {}).get("pids", []) if p != pid and pid_alive(p)]
    if entry and live and entry.get("target") != target:
        raise InvalidError(
            f"Cannot mount {what} at {path}: on this node {path} is already the mount of "
            f"{entry.get('what')} ({entry.get('target')}), used by live process(es) "
            f"{', '.join(map(str, live))}. The processes of a node share its filesystem, so "
            "one path holds one volume. Suggestion: mount them at different paths, such as "
            f"{path}-{Path(target).name}."
        )
    pids = live + [pid] if entry and entry.get("target") == target else [pid]
    record[path] = {"target": target, "what": what, "pids": pids}
    return entry is not None


def link(path: str, target: str, what: str, *, replace_stale: bool = False) -> None:
    """Make ``path`` a symlink to ``target`` (parents created). A link there already to
    ``target`` is fine, and so is ``path`` being ``target``'s directory already (a pod that
    mounts the volume's claim at ``path`` too, as the KubeRay manifest does); an empty
    directory is replaced; a stale rayweb link (its owner is gone) is replaced; anything
    else is an error naming it and the fix."""
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and os.path.samefile(dest, target):
            return  # checked first: removing an "empty" mount would remove the volume's dir
        if dest.is_symlink():
            if os.readlink(dest) == target:
                return
            if not replace_stale:
                raise InvalidError(
                    f"Cannot mount {what} at {path}: {path} is a symlink to "
                    f"{os.readlink(dest)} that rayweb did not make. Suggestion: mount it at "
                    f"another path, or remove the link (`rm {path}`)."
                )
            tmp = dest.with_name(f".{dest.name}.rayweb-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, dest)
            return
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        elif dest.exists():
            kind = "a directory with files in it" if dest.is_dir() else "a file"
            raise InvalidError(
                f"Cannot mount {what} at {path}: {path} exists already and is {kind}, which "
                "rayweb will not hide. Suggestion: mount it at a path that does not exist yet "
                f"(such as {path}-mount), or move {path} away."
            )
        os.symlink(target, dest)
    except OSError as exc:
        raise _os_error(f"{what} at {path}", exc, Path(path).parent) from None


def _os_error(what: str, exc: OSError, parent: Path) -> InvalidError:
    try:
        user = getpass.getuser()
    except Exception:
        user = f"uid {os.getuid()}"
    return InvalidError(
        f"Cannot mount {what}: {exc.strerror or exc} ({exc.filename or parent}). The replica "
        f"runs as {user}, who must be able to create it. Suggestion: mount it under a "
        f"directory {user} can write, such as {Path.home()}/data, or create {parent} with "
        f"write access for {user}."
    )
