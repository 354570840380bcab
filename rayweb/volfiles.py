"""What a ``Volume`` does to its directory: paths kept inside it, entries, reads, copies and
atomic writes, and the small helpers that both ``.method()`` and ``.method.aio()`` share.

Pure standard library (no Ray): the driver, the CLI and replicas all call it on the same
directory.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Concatenate, Generic, TypeVar, cast

from typing_extensions import ParamSpec

from .exception import InvalidError

CHUNK = 1 << 20  # read_file yields chunks of at most 1 MiB

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
_END = object()


class FileEntryType(enum.IntEnum):
    """The type of a :class:`FileEntry` (Modal's ``modal.volume.FileEntryType``)."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


@dataclass(frozen=True)
class FileEntry:
    """One file or directory of a volume: ``path`` relative to the volume (no leading "/"),
    ``mtime`` in epoch seconds, ``size`` in bytes."""

    path: str
    type: FileEntryType
    mtime: int
    size: int


# -- blocking calls with an `.aio` form ----------------------------------------------------
class Blocking(Generic[P, R]):
    """A blocking call; ``.aio`` runs the same body on a worker thread."""

    def __init__(self, fn: Callable[P, R]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(self._fn, *args, **kwargs)


class Streaming(Generic[P, T]):
    """A call returning an iterator; ``.aio`` is an async iterator (each step on a thread)."""

    def __init__(self, fn: Callable[P, Iterator[T]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        items = await asyncio.to_thread(self._fn, *args, **kwargs)
        while (item := await asyncio.to_thread(next, items, _END)) is not _END:
            yield cast(T, item)


class method(Generic[S, P, R]):  # noqa: N801 (used as a decorator)
    """A method with a blocking form and an ``.aio`` form."""

    def __init__(self, fn: Callable[Concatenate[S, P], R]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: S, owner: Any = None) -> Blocking[P, R]:
        return Blocking(cast(Callable[P, R], functools.partial(self._fn, obj)))


class iter_method(Generic[S, P, T]):  # noqa: N801 (used as a decorator)
    """A method returning an iterator; ``.aio`` gives an async iterator."""

    def __init__(self, fn: Callable[Concatenate[S, P], Iterator[T]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: S, owner: Any = None) -> Streaming[P, T]:
        return Streaming(cast(Callable[P, Iterator[T]], functools.partial(self._fn, obj)))


# -- paths inside a volume -----------------------------------------------------------------
def relative(path: str | os.PathLike[str]) -> str:
    """``path`` inside a volume, normalised and relative ("" is the volume itself); ``..``
    that would leave the volume is refused."""
    text = os.fspath(path)
    if not isinstance(text, str) or "\x00" in text:
        raise InvalidError(f"Invalid volume path: {text!r}")
    depth = 0
    parts: list[str] = []
    for part in text.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                raise InvalidError(
                    f"Volume path {text!r} leaves the volume ('..' above its root). "
                    "Suggestion: use a path inside the volume, such as 'data/file.txt'."
                )
            parts.pop()
            continue
        depth += 1
        parts.append(part)
    return posixpath.join(*parts) if parts else ""


def inside(root: Path, path: str | os.PathLike[str], *, follow: bool = True) -> Path:
    """The local path of ``path`` in the volume at ``root``; a symlink in the volume that
    points outside it is refused (``follow=False``: only the parent must stay inside)."""
    rel = relative(path)
    if not rel:
        return root
    full = root / rel
    real_root = os.path.realpath(root)
    check = os.path.realpath(full if follow else full.parent)
    if check != real_root and not check.startswith(real_root + os.sep):
        raise InvalidError(
            f"Volume path {os.fspath(path)!r} resolves outside the volume (through a symlink)."
        )
    return full


def entry(root: Path, full: Path) -> FileEntry:
    """The :class:`FileEntry` of ``full`` (not following symlinks)."""
    st = full.lstat()
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        kind = FileEntryType.SYMLINK
    elif stat.S_ISDIR(mode):
        kind = FileEntryType.DIRECTORY
    elif stat.S_ISREG(mode):
        kind = FileEntryType.FILE
    elif stat.S_ISFIFO(mode):
        kind = FileEntryType.FIFO
    elif stat.S_ISSOCK(mode):
        kind = FileEntryType.SOCKET
    else:
        kind = FileEntryType.UNSPECIFIED
    return FileEntry(full.relative_to(root).as_posix(), kind, int(st.st_mtime), st.st_size)


def walk(root: Path, full: Path, recursive: bool) -> Iterator[FileEntry]:
    """The entries of a directory (sorted), or of a file only; recursive goes down."""
    if not full.is_dir() or full.is_symlink():
        yield entry(root, full)
        return
    for child in sorted(full.iterdir()):
        yield entry(root, child)
        if recursive and child.is_dir() and not child.is_symlink():
            yield from walk(root, child, True)


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def write_atomic(dest: Path, source: BinaryIO, mode: int) -> int:
    """Write ``source`` to ``dest`` through a temporary file renamed into place, so readers
    (other replicas) never see half a file. Returns the bytes written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                written += len(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def copy_into(src: Path, dest: Path, recursive: bool, shown: str) -> None:
    """``cp [-r] src dest``: into ``dest`` when it is a directory, else as ``dest``."""
    if dest.is_dir():
        dest = dest / src.name
    if src.is_dir() and not src.is_symlink():
        if not recursive:
            raise IsADirectoryError(
                f"{shown} is a directory. Suggestion: copy_files(..., recursive=True)."
            )
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest, follow_symlinks=False)


def remove(full: Path, recursive: bool, shown: str) -> None:
    if not full.exists() and not full.is_symlink():
        raise FileNotFoundError(f"No such file or directory in the volume: {shown}")
    if full.is_dir() and not full.is_symlink():
        if not recursive:
            raise IsADirectoryError(
                f"{shown} is a directory. Suggestion: remove_file({shown!r}, recursive=True)."
            )
        shutil.rmtree(full)
    else:
        full.unlink()
