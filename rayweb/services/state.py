"""The cluster's ``Dict``s and ``Queue``s as plain data, and every operation on them.

Pure logic, no Ray and no files: ``state_actor.py`` serves it from the head node and
``statelog.py`` makes it durable. Keys and values arrive pickled and stay bytes (the store
never unpickles user types), so keys compare by their pickled bytes, as on Modal.

Every write is ``apply(kind, op_id, args, now)``: it checks everything first and only then
changes the data, so a refused write changes nothing; what it returns is remembered by
``op_id`` for a while (``DONE_*``), so a write retried after the actor restarted (same
``op_id``, replayed from the log) returns the first result and is applied once. ``now`` is
logged with the write, so replaying the log gives the same data (partition TTLs included).
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ..exception import AlreadyExistsError, InvalidError, NotFoundError, RequestSizeError


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class QueueFull(Exception):
    """A partition holds ``QUEUE_MAX_ITEMS`` items (the client raises ``queue.Full``)."""


DICT_MAX_VALUE = _env_int("RAYWEB_DICT_MAX_VALUE_BYTES", 100 * 2**20)  # Modal: 100 MiB
QUEUE_MAX_ITEM = _env_int("RAYWEB_QUEUE_MAX_ITEM_BYTES", 2**20)  # Modal: 1 MiB per item
QUEUE_MAX_ITEMS = _env_int("RAYWEB_QUEUE_MAX_PARTITION_ITEMS", 5000)  # Modal: 5,000
QUEUE_MAX_PARTITIONS = 100_000  # Modal's limit
MAX_TOTAL = _env_int("RAYWEB_STATE_MAX_BYTES", 4 * 2**30)  # all keys and values together
PAGE_ITEMS, PAGE_BYTES = 1000, 16 * 2**20  # one answer of keys()/values()/items()
DONE_MAX_OPS = 10_000  # results kept for retried writes: this many, within DONE_MAX_BYTES
DONE_MAX_BYTES = 64 * 2**20

WRITES = frozenset(
    {
        "dict_create", "dict_delete", "dict_put", "dict_update", "dict_pop", "dict_clear",
        "queue_create", "queue_delete", "queue_put", "queue_get", "queue_clear",
    }
)  # fmt: skip
READS = frozenset(
    {
        "hydrate", "objects", "dict_get", "dict_contains", "dict_len", "dict_page", "queue_len",
        "queue_peek",
    }
)  # fmt: skip


@dataclass
class Partition:
    items: deque[tuple[int, bytes]] = field(default_factory=deque)  # (entry id, item)
    expires: float = float("inf")  # partition_ttl after the last put


@dataclass
class Obj:
    """One named Dict or Queue."""

    kind: str  # "dict" | "queue"
    created: float
    ephemeral: bool = False
    entries: dict[bytes, bytes] = field(default_factory=dict)  # a Dict's
    partitions: dict[bytes, Partition] = field(default_factory=dict)  # a Queue's
    next_id: int = 0


def _size(*blobs: bytes) -> int:
    return sum(len(b) for b in blobs)


class State:
    """Every Dict and Queue of a cluster, and the results of recent writes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}  # (kind, name) -> object
        self.total = 0  # bytes of keys and values held
        self.seq = 0  # writes applied (the log's sequence number)
        self.done: OrderedDict[str, Any] = OrderedDict()  # op id -> result
        self.done_bytes = 0

    # -- the entry points ------------------------------------------------------------
    def apply(self, kind: str, op_id: str | None, args: tuple[Any, ...], now: float) -> Any:
        """Apply a write; a write seen before (same ``op_id``) returns its first result."""
        if op_id is not None and op_id in self.done:
            return self.done[op_id]
        if kind not in WRITES:
            raise InvalidError(f"unknown state operation {kind!r}")
        result = getattr(self, kind)(now, *args)
        self.seq += 1
        if op_id is not None:
            self._remember(op_id, result)
        return result

    def read(self, kind: str, args: tuple[Any, ...], now: float) -> Any:
        if kind not in READS:
            raise InvalidError(f"unknown state operation {kind!r}")
        if kind == "objects":
            return self.objects_of(now, *args)
        return getattr(self, kind)(now, *args)

    def changes(self, kind: str, args: tuple[Any, ...], now: float) -> bool:
        """False for a write that would change nothing (a get from an empty partition): it
        need not be logged."""
        if kind != "queue_get":
            return True
        name, partition = args[0], args[1]
        part = self._queue(name, now).partitions.get(partition)
        return bool(part and part.items)

    def _remember(self, op_id: str, result: Any) -> None:
        size = _result_size(result)
        self.done[op_id] = result
        self.done_bytes += size
        while len(self.done) > DONE_MAX_OPS or self.done_bytes > DONE_MAX_BYTES:
            _, old = self.done.popitem(last=False)
            self.done_bytes -= _result_size(old)

    # -- objects -----------------------------------------------------------------------
    def _get(self, kind: str, name: str) -> Obj:
        obj = self.objects.get((kind, name))
        if obj is None:
            title = kind.capitalize()
            raise NotFoundError(
                f"{title} '{name}' not found. Suggestion: `rayweb {kind} create {name}`, or "
                f"`{title}.from_name({name!r}, create_if_missing=True)`."
            )
        return obj

    def _create(self, kind: str, now: float, name: str, ephemeral: bool, exist_ok: bool) -> bool:
        if (kind, name) in self.objects:
            if not exist_ok:
                raise AlreadyExistsError(f"{kind.capitalize()} '{name}' already exists.")
            return False
        self.objects[(kind, name)] = Obj(kind, created=now, ephemeral=ephemeral)
        return True

    def _delete(self, kind: str, name: str, allow_missing: bool) -> bool:
        obj = self.objects.get((kind, name))
        if obj is None:
            if allow_missing:
                return False
            self._get(kind, name)  # raises NotFoundError
        assert obj is not None
        self.total -= _obj_bytes(obj)
        del self.objects[(kind, name)]
        return True

    def hydrate(self, now: float, kind: str, name: str) -> bool:
        self._get(kind, name)  # NotFoundError, naming the fix
        return True

    def objects_of(self, now: float, kind: str) -> list[dict[str, Any]]:
        out = []
        for (k, name), obj in self.objects.items():
            if k != kind or obj.ephemeral:
                continue
            row: dict[str, Any] = {"name": name, "created": obj.created}
            if kind == "queue":
                self._expire(obj, now)
                row["partitions"] = len(obj.partitions)
                row["total"] = sum(len(p.items) for p in obj.partitions.values())
            else:
                row["keys"] = len(obj.entries)
            out.append(row)
        return sorted(out, key=lambda r: -r["created"])

    def _check_total(self, grow: int, what: str) -> None:
        if grow > 0 and self.total + grow > MAX_TOTAL:
            raise RequestSizeError(
                f"{what} request is too large: the cluster's Dicts and Queues would hold more "
                f"than RAYWEB_STATE_MAX_BYTES={MAX_TOTAL} bytes. Suggestion: delete what is no "
                "longer needed (`rayweb dict delete`, `rayweb queue clear`), or raise the limit."
            )

    # -- Dict ------------------------------------------------------------------------------
    def dict_create(self, now: float, name: str, ephemeral: bool, exist_ok: bool) -> bool:
        return self._create("dict", now, name, ephemeral, exist_ok)

    def dict_delete(self, now: float, name: str, allow_missing: bool) -> bool:
        return self._delete("dict", name, allow_missing)

    def dict_put(self, now: float, name: str, key: bytes, value: bytes, skip: bool) -> bool:
        return self._dict_write(name, [(key, value)], skip, "Dict.put")

    def dict_update(self, now: float, name: str, items: list[tuple[bytes, bytes]]) -> bool:
        return self._dict_write(name, items, False, "Dict.update")

    def _dict_write(
        self, name: str, items: list[tuple[bytes, bytes]], skip: bool, what: str
    ) -> bool:
        entries = self._get("dict", name).entries
        if any(len(v) > DICT_MAX_VALUE for _, v in items):
            raise RequestSizeError(
                f"{what} request is too large: a value is over the limit of {DICT_MAX_VALUE} "
                "bytes (RAYWEB_DICT_MAX_VALUE_BYTES). Suggestion: keep large data in a Volume "
                "and put its path in the Dict."
            )
        if skip and items[0][0] in entries:
            return False
        latest: dict[bytes, bytes] = dict(items)  # the last value of a key repeated in `items` wins
        grow = sum(
            len(v) - len(entries[k]) if k in entries else len(k) + len(v) for k, v in latest.items()
        )
        self._check_total(grow, what)
        created = items[0][0] not in entries
        entries.update(latest)
        self.total += grow
        return created

    def dict_pop(self, now: float, name: str, key: bytes) -> tuple[bool, bytes | None]:
        entries = self._get("dict", name).entries
        if key not in entries:
            return False, None
        value = entries.pop(key)
        self.total -= _size(key, value)
        return True, value

    def dict_clear(self, now: float, name: str) -> None:
        obj = self._get("dict", name)
        self.total -= _obj_bytes(obj)
        obj.entries.clear()

    def dict_get(self, now: float, name: str, key: bytes) -> tuple[bool, bytes | None]:
        entries = self._get("dict", name).entries
        return (True, entries[key]) if key in entries else (False, None)

    def dict_contains(self, now: float, name: str, key: bytes) -> bool:
        return key in self._get("dict", name).entries

    def dict_len(self, now: float, name: str) -> int:
        return len(self._get("dict", name).entries)

    def dict_page(
        self, now: float, name: str, what: str, start: int
    ) -> tuple[list[Any], int | None]:
        """Entries ``start``... of the Dict (``what``: keys, values or items), at most
        ``PAGE_ITEMS`` or ``PAGE_BYTES`` of them, and where the next page starts (None: the
        end). Pages keep each answer bounded; a Dict changed between pages may repeat or skip
        an entry (Modal's iteration order is not defined either)."""
        entries = self._get("dict", name).entries
        out: list[Any] = []
        size = 0
        for key, value in itertools.islice(entries.items(), start, None):
            if out and (len(out) >= PAGE_ITEMS or size + len(key) + len(value) > PAGE_BYTES):
                return out, start + len(out)
            out.append(key if what == "keys" else value if what == "values" else (key, value))
            size += len(key) + (len(value) if what != "keys" else 0)
        return out, None

    # -- Queue -------------------------------------------------------------------------
    def _queue(self, name: str, now: float) -> Obj:
        obj = self._get("queue", name)
        self._expire(obj, now)
        return obj

    def _expire(self, obj: Obj, now: float) -> None:
        for key in [k for k, p in obj.partitions.items() if p.expires <= now]:
            self.total -= sum(len(v) for _, v in obj.partitions.pop(key).items)

    def queue_create(self, now: float, name: str, ephemeral: bool, exist_ok: bool) -> bool:
        return self._create("queue", now, name, ephemeral, exist_ok)

    def queue_delete(self, now: float, name: str, allow_missing: bool) -> bool:
        return self._delete("queue", name, allow_missing)

    def queue_put(
        self, now: float, name: str, partition: bytes, values: list[bytes], ttl: float
    ) -> None:
        obj = self._queue(name, now)
        what = "Queue.put" if len(values) == 1 else "Queue.put_many"
        if any(len(v) > QUEUE_MAX_ITEM for v in values):
            raise RequestSizeError(
                f"{what} request is too large: an item is over the limit of {QUEUE_MAX_ITEM} "
                "bytes (RAYWEB_QUEUE_MAX_ITEM_BYTES). Suggestion: put large data in a Volume "
                "and its path in the Queue."
            )
        part = obj.partitions.get(partition)
        if part is None and len(obj.partitions) >= QUEUE_MAX_PARTITIONS:
            raise QueueFull(f"Queue '{name}' has {QUEUE_MAX_PARTITIONS} partitions already.")
        held = len(part.items) if part else 0
        if held + len(values) > QUEUE_MAX_ITEMS:
            raise QueueFull(
                f"Queue '{name}' partition {partition.decode() or '(default)'} holds {held} "
                f"items; it can hold at most {QUEUE_MAX_ITEMS}."
            )
        self._check_total(_size(*values), what)
        if part is None:
            part = obj.partitions[partition] = Partition()
        for value in values:
            part.items.append((obj.next_id, value))
            obj.next_id += 1
        part.expires = now + ttl
        self.total += _size(*values)

    def queue_get(self, now: float, name: str, partition: bytes, n: int) -> list[bytes]:
        part = self._queue(name, now).partitions.get(partition)
        out: list[bytes] = []
        while part is not None and part.items and len(out) < n:
            out.append(part.items.popleft()[1])
        self.total -= _size(*out)
        return out

    def queue_clear(self, now: float, name: str, partition: bytes, all: bool) -> None:
        obj = self._queue(name, now)
        keys = list(obj.partitions) if all else [partition]
        for key in keys:
            part = obj.partitions.pop(key, None)
            if part is not None:
                self.total -= sum(len(v) for _, v in part.items)

    def queue_len(self, now: float, name: str, partition: bytes, total: bool) -> int:
        obj = self._queue(name, now)
        if total:
            return sum(len(p.items) for p in obj.partitions.values())
        part = obj.partitions.get(partition)
        return len(part.items) if part else 0

    def queue_peek(
        self, now: float, name: str, partition: bytes, after: int, n: int
    ) -> list[tuple[int, bytes]]:
        part = self._queue(name, now).partitions.get(partition)
        if part is None:
            return []
        return [(i, v) for i, v in part.items if i > after][:n]


def _obj_bytes(obj: Obj) -> int:
    return sum(len(k) + len(v) for k, v in obj.entries.items()) + sum(
        len(v) for p in obj.partitions.values() for _, v in p.items
    )


def _result_size(result: Any) -> int:
    if isinstance(result, list):
        return sum(len(v) for v in result if isinstance(v, bytes)) + 8 * len(result)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], bytes):
        return len(result[1])
    return 8
