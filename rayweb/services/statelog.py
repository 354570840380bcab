"""Where the cluster's Dicts and Queues are kept on disk: ``RAYWEB_STORE_DIR/state/``, next to
the secret store (directory 0700, files 0600), on the head node.

- ``log``: every acknowledged write, appended as a frame (length, CRC32, pickled
  ``(seq, op_id, kind, args, now)``) and fsynced before the write is acknowledged. A torn
  frame at the end (a crash while writing) is cut off when the log is read.
- ``snapshot``: the whole :class:`~rayweb.services.state.State` at sequence number ``seq``,
  written to a temporary file, fsynced and renamed; then the log restarts empty. Replaying skips
  frames up to the snapshot's ``seq``, so a crash between the rename and the truncation loses
  nothing and applies nothing twice.
- ``.lock``: held (``fcntl``) by the one process serving the store, with ``owner.json``
  naming it (PID and Ray address), so a second cluster on the same directory is refused with a
  clear error and the CLI can reach the cluster that holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .state import State
from .store import default_store_dir

_HEADER = struct.Struct(">II")  # payload length, crc32 of the payload


class StoreLocked(Exception):
    """Another process serves the store; ``owner`` is what it wrote in ``owner.json``."""

    def __init__(self, directory: Path, owner: dict[str, Any]) -> None:
        self.owner = owner
        super().__init__(
            f"the Dict/Queue store in {directory} is served by another process "
            f"(pid {owner.get('pid', '?')}, Ray at {owner.get('address') or '?'}). "
            "Suggestion: stop that `rayweb serve`/cluster, reach it with --address, or give "
            "this one its own RAYWEB_STORE_DIR."
        )


def state_dir() -> Path:
    return default_store_dir() / "state"


class StateFiles:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or state_dir()
        self.log_path = self.dir / "log"
        self.snapshot_path = self.dir / "snapshot"
        self._lock: Any = None
        self._log_fd: int | None = None
        self.log_bytes = 0
        self.snapshot_bytes = 0

    # -- ownership ---------------------------------------------------------------------
    def acquire(self, address: str | None, wait_s: float = 0.0) -> None:
        """Hold the store's lock (waiting up to ``wait_s``), or raise :class:`StoreLocked`."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        lock = os.fdopen(os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.close()
                    raise StoreLocked(self.dir, self.owner()) from None
                time.sleep(0.1)
        self._lock = lock
        _write_private(
            self.dir / "owner.json", json.dumps({"pid": os.getpid(), "address": address})
        )

    def owner(self) -> dict[str, Any]:
        try:
            owner: dict[str, Any] = json.loads((self.dir / "owner.json").read_text())
            return owner
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    # -- reading -----------------------------------------------------------------------
    def load(self) -> State:
        """The state the files hold: the snapshot, then every later logged write."""
        state = State()
        if self.snapshot_path.exists():
            blob = self.snapshot_path.read_bytes()
            self.snapshot_bytes = len(blob)
            state = pickle.loads(blob)
        good = 0
        for end, (seq, op_id, kind, args, now) in self._frames():
            good = end
            if seq > state.seq:
                state.apply(kind, op_id, args, now)
        if self.log_path.exists() and self.log_path.stat().st_size != good:
            os.truncate(self.log_path, good)  # a torn write at the end: never acknowledged
        self.log_bytes = good
        return state

    def _frames(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            pos += _HEADER.size + length
            yield pos, pickle.loads(payload)

    # -- writing -----------------------------------------------------------------------
    @staticmethod
    def frame(seq: int, op_id: str | None, kind: str, args: tuple[Any, ...], now: float) -> bytes:
        payload = pickle.dumps((seq, op_id, kind, args, now), protocol=5)
        return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    def append(self, frames: list[bytes]) -> None:
        """Write ``frames`` to the log and fsync it (one group commit)."""
        if self._log_fd is None:
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        data = b"".join(frames)
        view = memoryview(data)
        while view:
            view = view[os.write(self._log_fd, view) :]
        os.fsync(self._log_fd)
        self.log_bytes += len(data)

    def wants_snapshot(self) -> bool:
        return self.log_bytes > max(64 * 2**20, 2 * self.snapshot_bytes)

    def snapshot(self, state: State) -> None:
        """Replace the snapshot with ``state`` and start an empty log."""
        blob = pickle.dumps(state, protocol=5)
        tmp = self.dir / "snapshot.tmp"
        _write_private(tmp, blob, sync=True)
        os.replace(tmp, self.snapshot_path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        with open(self.log_path, "wb"):
            pass  # frames up to state.seq are in the snapshot now
        self.snapshot_bytes = len(blob)
        self.log_bytes = 0


def _write_private(path: Path, data: str | bytes, sync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
