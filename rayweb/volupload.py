"""``Volume.batch_upload()``: files recorded in a ``with`` block, written when it ends
without an error (Modal's ``_VolumeUploadContextManager``). No Ray."""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .volfiles import inside, relative, write_atomic


@dataclass(frozen=True)
class _Upload:
    source: Path | BinaryIO
    remote_path: str
    mode: int | None


class BatchUpload:
    """``with vol.batch_upload(force=False) as batch:`` (or ``async with``)."""

    def __init__(self, root: Path, force: bool) -> None:
        self._root = root
        self._force = force
        self._uploads: list[_Upload] = []

    def put_file(
        self,
        local_file: Path | str | BinaryIO | io.BytesIO,
        remote_path: PurePosixPath | str,
        mode: int | None = None,
    ) -> None:
        """Upload a local file or a binary file object to ``remote_path`` (parent
        directories are created)."""
        remote = str(remote_path)
        if remote.endswith("/"):
            raise ValueError(f"remote_path ({remote}) must refer to a file - cannot end with /")
        relative(remote)  # refuse paths that leave the volume now, not at the end
        source: Path | BinaryIO
        if isinstance(local_file, (str, os.PathLike)):
            source = Path(local_file)
            if not source.is_file():
                raise FileNotFoundError(f"No such local file: {source}")
        else:
            source = local_file
        self._uploads.append(_Upload(source, remote, mode))

    def put_directory(
        self, local_path: Path | str, remote_path: PurePosixPath | str, recursive: bool = True
    ) -> None:
        """Upload the files of a local directory (and, ``recursive``, of its subfolders)."""
        folder = Path(local_path)
        if not folder.is_dir():
            raise NotADirectoryError(f"put_directory needs a local directory: {folder}")
        files = folder.rglob("*") if recursive else folder.glob("*")
        for path in sorted(files):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                self.put_file(path, f"{str(remote_path).rstrip('/')}/{rel}")

    def _commit(self) -> None:
        targets = [inside(self._root, u.remote_path, follow=False) for u in self._uploads]
        for upload, dest in zip(self._uploads, targets, strict=True):
            if dest.is_dir():
                raise FileExistsError(f"{upload.remote_path}: is a directory, cannot overwrite it")
            if dest.exists() and not self._force:
                raise FileExistsError(
                    f"{upload.remote_path}: already exists (disallow_overwrite_existing_files="
                    "True). Suggestion: batch_upload(force=True) to overwrite it."
                )
        for upload, dest in zip(self._uploads, targets, strict=True):
            if isinstance(upload.source, Path):
                mode = upload.mode if upload.mode is not None else upload.source.stat().st_mode
                with upload.source.open("rb") as handle:
                    write_atomic(dest, handle, mode & 0o7777)
            else:
                write_atomic(dest, upload.source, upload.mode if upload.mode is not None else 0o644)

    def __enter__(self) -> BatchUpload:
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is None:
            self._commit()

    async def __aenter__(self) -> BatchUpload:
        return self

    async def __aexit__(self, exc_type: object, *_exc: object) -> None:
        if exc_type is None:
            await asyncio.to_thread(self._commit)
