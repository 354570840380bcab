"""``Image.add_local_file`` / ``add_local_dir``: local files that replicas see at a path.

The Image records each as a :class:`LocalFile`; when the app is compiled,
:func:`plan_links` checks the local paths and says which path each ``remote_path`` links to
(``replica/mounts.py`` makes the links at replica start, as for volume mounts): the local
file or directory itself, or, for a directory with ``ignore=``, a copy without the ignored
files staged under the volume root (``.rayweb-images/<hash>``, named after what it holds,
so a changed file gives a new copy and a redeploy). No Ray.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .exception import InvalidError

STAGING_DIR = ".rayweb-images"


@dataclass(frozen=True)
class LocalFile:
    """One ``add_local_file``/``add_local_dir`` step (``local_path`` made absolute)."""

    local_path: str
    remote_path: str
    is_dir: bool
    ignore: tuple[str, ...] | Callable[[Path], bool] = ()


def local_file(local_path: str | Path, remote_path: str) -> LocalFile:
    if not PurePosixPath(remote_path).is_absolute():
        raise InvalidError(
            "image.add_local_file() currently only supports absolute remote_path values"
        )
    if remote_path.endswith("/"):
        remote_path = remote_path + Path(local_path).name
    return LocalFile(_absolute(local_path), remote_path.rstrip("/"), False)


def local_dir(local_path: str | Path, remote_path: str, ignore: Any) -> LocalFile:
    if not PurePosixPath(remote_path).is_absolute():
        raise InvalidError(
            "image.add_local_dir() currently only supports absolute remote_path values"
        )
    if callable(ignore):
        patterns: tuple[str, ...] | Callable[[Path], bool] = ignore
    elif isinstance(ignore, Sequence) and not isinstance(ignore, str):
        patterns = tuple(str(p) for p in ignore)
    else:
        raise InvalidError(
            "`ignore=` takes a list of patterns (dockerignore syntax, e.g. ['*.venv', "
            "'**/__pycache__']) or a function of a relative Path returning True to leave it out."
        )
    return LocalFile(_absolute(local_path), remote_path.rstrip("/") or "/", True, patterns)


def _absolute(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def plan_links(files: Sequence[LocalFile], root: Path) -> tuple[tuple[str, str], ...]:
    """``(remote path, local path it links to)`` for each step, checked now: a local path
    that does not exist (or is a file where a directory is wanted) is an error naming it."""
    links: list[tuple[str, str]] = []
    for step in files:
        path = Path(step.local_path)
        step_name = "add_local_dir" if step.is_dir else "add_local_file"
        if not path.exists():
            raise InvalidError(
                f"Image.{step_name}: local path {step.local_path} does not exist. "
                "Suggestion: check the path (relative paths are read from the directory "
                "rayweb was started in)."
            )
        if step.is_dir != path.is_dir():
            want = "a directory" if step.is_dir else "a file"
            other = "add_local_file" if step.is_dir else "add_local_dir"
            raise InvalidError(
                f"Image.{step_name}: {step.local_path} is not {want}. Suggestion: use "
                f"Image.{other} for it."
            )
        target = str(path)
        if step.is_dir and step.ignore:
            target = str(stage(path, _matcher(step.ignore), root))
        links.append((step.remote_path, target))
    return tuple(links)


def _matcher(ignore: tuple[str, ...] | Callable[[Path], bool]) -> Callable[[Path], bool]:
    """``ignore=`` as a predicate on paths relative to the directory. Patterns follow
    dockerignore: anchored at the directory, ``**`` for any depth, ``!`` to keep again."""
    if callable(ignore):
        return ignore
    import pathspec

    lines = []
    for pattern in ignore:
        negate, body = pattern.startswith("!"), pattern.lstrip("!")
        if not body.startswith(("/", "**")):
            body = "/" + body
        lines.append(("!" if negate else "") + body)
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    return lambda rel: bool(spec.match_file(rel.as_posix()))


def _kept(folder: Path, ignored: Callable[[Path], bool]) -> Iterator[Path]:
    """The files of ``folder`` (relative paths) that ``ignored`` keeps; ignored folders are
    not entered."""
    for here, dirs, files in os.walk(folder):
        base = Path(here).relative_to(folder)
        dirs[:] = sorted(d for d in dirs if not ignored(base / d))
        for name in sorted(files):
            if not ignored(base / name):
                yield base / name


def stage(folder: Path, ignored: Callable[[Path], bool], root: Path) -> Path:
    """A copy of ``folder`` without what ``ignored`` leaves out, under ``root``; reused while
    the kept files (names, sizes, modification times) stay the same."""
    kept = list(_kept(folder, ignored))
    digest = hashlib.sha256(str(folder).encode())
    for rel in kept:
        st = (folder / rel).stat()
        digest.update(f"\0{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    dest = root / STAGING_DIR / digest.hexdigest()[:16]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        for rel in kept:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, tmp / rel)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # another process staging the same copy won the rename
            raise
    return dest


def check_overlaps(mounts: Sequence[tuple[str, str]], links: Sequence[tuple[str, str]]) -> None:
    """Each path is one link, so no volume mount or local file may sit inside another's
    path (the link would be made inside the volume or the local directory)."""
    named = [(p, f"Volume '{v}'") for p, v in mounts] + [(p, f"local {t}") for p, t in links]
    for i, (a, what_a) in enumerate(named):
        for b, what_b in named[i + 1 :]:
            if a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/"):
                raise InvalidError(
                    f"{what_a} at {a} and {what_b} at {b} overlap: each path becomes one link, "
                    "so one cannot sit inside the other. Suggestion: give them separate paths, "
                    "such as /data and /assets."
                )
