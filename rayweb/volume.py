"""``rayweb.Volume`` (Modal's ``modal.Volume``): a directory on a filesystem that the driver
and every replica see, ``RAYWEB_VOLUME_ROOT/<name>`` (default ``~/.rayweb/volumes``).

On a single machine (``rayweb serve``, a local cluster) every process sees the same
directory; on a multi-node cluster the root must be a shared POSIX filesystem (NFS, a
``ReadWriteMany`` volume) mounted at the same path on every node. ``volumes={"/data": vol}``
makes ``/data`` a symlink to the volume's directory in each replica (``replica/mounts.py``).

Differences from Modal, because the storage is a shared filesystem, not snapshots:
writes are visible to every process at once, so ``commit()`` only flushes them to disk
(``os.sync``) and ``reload()`` has nothing to do; concurrent writers to one file follow
POSIX rules (``batch_upload`` writes each file atomically: readers see the old file or the
new one, never half of it). This module imports no Ray.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .exception import AlreadyExistsError, DeprecationError, InvalidError, NotFoundError
from .volfiles import (
    Blocking,
    FileEntry,
    FileEntryType,
    inside,
    iter_method,
    method,
    read_chunks,
    relative,
    walk,
)
from .volstore import (
    EPHEMERAL_DIR,
    META_DIR,
    ROOT_ENV,
    check_version,
    check_volume_name,
    create,
    meta,
    missing,
    no_environment,
    prune_ephemeral,
    volume_root,
)
from .volupload import BatchUpload


@dataclass(frozen=True)
class VolumeInfo:
    """``Volume.info()`` (Modal's ``VolumeInfo``)."""

    name: str | None
    created_at: datetime
    created_by: str | None = None


class Volume:
    """A named directory shared by the driver and every replica.

    Example::

        vol = rayweb.Volume.from_name("my-data", create_if_missing=True)

        @app.function(volumes={"/data": vol})
        def write(text: str) -> None:
            Path("/data/note.txt").write_text(text)
            vol.commit()
    """

    _name: str | None
    _dir_name: str
    _create: bool
    _version: int | None
    _ready: bool

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise InvalidError(
            "Class Volume has no constructor. Use class constructor methods instead. "
            "Suggestion: rayweb.Volume.from_name('my-volume', create_if_missing=True), or "
            "`with rayweb.Volume.ephemeral() as vol:`."
        )

    @classmethod
    def _new(cls, name: str | None, dir_name: str, create: bool, version: int | None) -> Volume:
        vol = object.__new__(cls)
        vol._name, vol._dir_name = name, dir_name
        vol._create, vol._version, vol._ready = create, version, False
        return vol

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        namespace: Any = None,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        version: int | None = None,
        client: Any = None,
    ) -> Volume:
        """A reference to the named volume; it is looked up (or created) on first use."""
        check_volume_name(name)
        no_environment(environment_name)
        check_version(version)
        return cls._new(name, name, create_if_missing, version)

    @classmethod
    def ephemeral(
        cls,
        client: Any = None,
        environment_name: str | None = None,
        version: int | None = None,
        _heartbeat_sleep: float = 300,
    ) -> _Ephemeral:
        """A volume that exists for a ``with`` (or ``async with``) block only."""
        no_environment(environment_name)
        check_version(version)
        return _Ephemeral(version)

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def object_id(self) -> str:
        return f"vo-{self._dir_name}"

    @property
    def dir_name(self) -> str:
        """The volume's directory under the root (its name, for named volumes)."""
        return self._dir_name

    def __repr__(self) -> str:
        if self._name is None:
            return "Volume.ephemeral()"
        return f"Volume.from_name({self._name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and other._dir_name == self._dir_name

    def __hash__(self) -> int:
        return hash(("volume", self._dir_name))

    def __reduce__(self) -> Any:  # pickles as its reference: user code may capture it
        return (Volume._new, (self._name, self._dir_name, self._create, self._version))

    def describe(self) -> str:
        return f"Volume '{self._name}'" if self._name else "an ephemeral Volume"

    # -- lookup ----------------------------------------------------------------------------
    def path(self) -> Path:
        """The volume's directory on this machine (created now if ``create_if_missing``)."""
        full = volume_root() / self._dir_name
        if not self._ready:
            if not full.is_dir():
                if not self._create or self._name is None:
                    raise NotFoundError(missing(self._name or self._dir_name))
                create(self._name, self._version, allow_existing=True)
            self._ready = True
        return full

    def hydrate(self, client: Any = None) -> Volume:
        """Look the volume up now (Modal's ``hydrate``): NotFoundError if it is missing."""
        self._ready = False
        self.path()
        return self

    @method
    def info(self) -> VolumeInfo:
        record = meta(self._dir_name)
        created = record.get("created_at") or self.path().stat().st_mtime
        return VolumeInfo(
            self._name, datetime.fromtimestamp(created, timezone.utc), record.get("created_by")
        )

    # -- Modal's operations ----------------------------------------------------------------
    @method
    def commit(self) -> None:
        """Flush the volume's writes to disk. Writes on a shared POSIX filesystem are visible
        to other replicas at once, so nothing else is needed to share them."""
        self.path()
        os.sync()

    @method
    def reload(self) -> None:
        """Nothing to do: every process sees the shared directory's current state."""
        self.path()

    @iter_method
    def iterdir(self, path: str, *, recursive: bool = True) -> Iterator[FileEntry]:
        """The entries under ``path`` (recursive by default, as on Modal)."""
        root = self.path()
        full = self._existing(path)
        return walk(root, full, recursive)

    @method
    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        """The entries of directory ``path`` (a file path: that file's entry only)."""
        if path.endswith("*"):
            raise DeprecationError(
                "Glob patterns in `volume get` and `Volume.listdir()` are deprecated. "
                "Please pass recursive=True instead. For the CLI, just remove the glob suffix."
            )
        return list(walk(self.path(), self._existing(path), recursive))

    @iter_method
    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes, in chunks of up to 1 MiB; FileNotFoundError when missing."""
        full = inside(self.path(), path)
        if not full.is_file():
            raise FileNotFoundError(f"No such file in {self.describe()}: {path}")
        return read_chunks(full.open("rb"))

    @method
    def read_file_into_fileobj(self, path: str, fileobj: IO[bytes], progress_cb: Any = None) -> int:
        """Write the file's bytes into ``fileobj``; returns how many were written."""
        written = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            written += len(chunk)
            if progress_cb is not None:
                progress_cb(advance=len(chunk))
        return written

    @method
    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Delete a file, or a directory with ``recursive=True``."""
        from .volfiles import remove

        if not relative(path):
            raise InvalidError("Cannot remove the volume's root directory.")
        remove(inside(self.path(), path, follow=False), recursive, path)

    @method
    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copy files inside the volume, as UNIX ``cp`` does."""
        from .volfiles import copy_into

        root = self.path()
        dest = inside(root, dst_path)
        if len(src_paths) > 1 and not dest.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        for src in src_paths:
            source = inside(root, src)
            if not source.exists():
                raise FileNotFoundError(f"No such file or directory in {self.describe()}: {src}")
            copy_into(source, dest, recursive, src)

    def batch_upload(self, force: bool = False) -> BatchUpload:
        """Files to upload when the ``with`` block ends without an error::

        with vol.batch_upload() as batch:
            batch.put_file("local.txt", "/remote.txt")
            batch.put_directory("assets/", "/assets")
        """
        return BatchUpload(self.path(), force)

    def _existing(self, path: str) -> Path:
        full = inside(self.path(), path, follow=False)
        if not full.exists() and not full.is_symlink():
            raise NotFoundError(f"No such file or directory in {self.describe()}: {path}")
        return full

    # -- by name ---------------------------------------------------------------------------
    @staticmethod
    def _rename(
        old_name: str, new_name: str, *, client: Any = None, environment_name: Any = None
    ) -> None:
        check_volume_name(old_name)
        check_volume_name(new_name)
        root = volume_root()
        if not (root / old_name).is_dir():
            raise NotFoundError(missing(old_name))
        if (root / new_name).exists():
            raise AlreadyExistsError(f"Volume '{new_name}' already exists.")
        os.rename(root / old_name, root / new_name)
        meta = root / META_DIR / f"{old_name}.json"
        if meta.exists():
            os.replace(meta, root / META_DIR / f"{new_name}.json")

    rename = Blocking(_rename)

    @staticmethod
    def _delete(name: str, client: Any = None, environment_name: str | None = None) -> None:
        import warnings

        warnings.warn(
            "`rayweb.Volume.delete` is deprecated; we recommend using "
            "`rayweb.Volume.objects.delete` instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        _VolumeManager().delete(name)

    delete = Blocking(_delete)

    class _Objects:
        def __get__(self, obj: Any, owner: Any = None) -> _VolumeManager:
            return _VolumeManager()

    objects = _Objects()


class _VolumeManager:
    """``Volume.objects``: create, list and delete named volumes."""

    @method
    def create(
        self,
        name: str,
        *,
        version: int | None = None,
        allow_existing: bool = False,
        environment_name: str | None = None,
        client: Any = None,
    ) -> None:
        check_volume_name(name)
        no_environment(environment_name)
        check_version(version)
        create(name, version, allow_existing=allow_existing)

    @method
    def list(
        self,
        *,
        max_objects: int | None = None,
        created_before: datetime | str | None = None,
        environment_name: str = "",
        client: Any = None,
    ) -> list[Volume]:
        """The named volumes, newest first."""
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects cannot be negative")
        root = volume_root()
        names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        rows = [(n, meta(n).get("created_at") or (root / n).stat().st_mtime) for n in names]
        if isinstance(created_before, str):
            created_before = datetime.now(timezone.utc) if created_before == "now" else None
        if created_before is not None:
            rows = [r for r in rows if r[1] < created_before.timestamp()]
        rows = sorted((r for r in rows if not r[0].startswith(".")), key=lambda r: -r[1])
        return [Volume._new(n, n, False, None) for n, _ in rows[:max_objects]]

    @method
    def delete(
        self,
        name: str,
        *,
        allow_missing: bool = False,
        environment_name: str | None = None,
        client: Any = None,
    ) -> None:
        check_volume_name(name)
        root = volume_root()
        if not (root / name).is_dir():
            if allow_missing:
                return
            raise NotFoundError(missing(name))
        shutil.rmtree(root / name)
        (root / META_DIR / f"{name}.json").unlink(missing_ok=True)


class _Ephemeral:
    """``with Volume.ephemeral() as vol:`` (or ``async with``): deleted when the block ends."""

    def __init__(self, version: int | None) -> None:
        self._version = version
        self._volume: Volume | None = None

    def __enter__(self) -> Volume:
        prune_ephemeral()
        ident = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        dir_name = f"{EPHEMERAL_DIR}/{ident}"
        (volume_root() / dir_name).mkdir(parents=True)
        self._volume = Volume._new(None, dir_name, False, self._version)
        return self._volume

    def __exit__(self, *exc: object) -> None:
        if self._volume is not None:
            shutil.rmtree(volume_root() / self._volume.dir_name, ignore_errors=True)

    async def __aenter__(self) -> Volume:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


__all__ = ["ROOT_ENV", "FileEntry", "FileEntryType", "Volume", "VolumeInfo", "volume_root"]
