"""``rayweb.Dict`` (Modal's ``modal.Dict``): a key-value store shared by every function and
endpoint of the cluster, kept by the ``rayweb-state`` actor and persisted on the head node.

Keys compare by their pickled bytes, so use primitive keys (str, int, tuples of them) as
Modal recommends. Values are pickled, at most ``RAYWEB_DICT_MAX_VALUE_BYTES`` each (100 MiB,
Modal's limit). Unlike Modal's, entries do not expire after 7 days idle: they stay until
they are popped, cleared or the Dict is deleted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .exception import DeprecationError
from .objects import Ephemeral, Program, check_name, dump_key, dump_value, live, load


@dataclass(frozen=True)
class ObjectInfo:
    """``Dict.info()`` / ``Queue.info()`` (Modal's ``DictInfo``/``QueueInfo``)."""

    name: str | None
    created_at: datetime
    created_by: str | None = None


DictInfo = QueueInfo = ObjectInfo


class _NamedObject:
    """What Dict and Queue share: lazy creation on first use, ``objects``, ``info``."""

    _kind = ""

    def __init__(self, *_a: Any, _name: str = "", _create: bool = False, **_k: Any) -> None:
        if not _name:
            title = type(self).__name__
            raise RuntimeError(
                f"`{title}(...)` constructor is not allowed. Please use `{title}.from_name` "
                f"or `{title}.ephemeral` instead"
            )
        self._name = _name
        self._create = _create
        self._ephemeral = False

    @property
    def name(self) -> str | None:
        return None if self._ephemeral else self._name

    @property
    def object_id(self) -> str:
        return f"{self._kind[:2]}-{self._name}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}.from_name({self._name!r})"

    def __reduce__(self) -> Any:  # a handle travels to replicas as its name
        return (_restore, (type(self), self._name, self._ephemeral))

    def _ready(self) -> Program:
        """Create the object on first use when ``create_if_missing=True``."""
        if self._create:
            yield (f"{self._kind}_create", self._name, False, True)
            self._create = False

    @live
    def hydrate(self) -> Program:
        """Check that the object exists now (NotFoundError, naming the fix, if not)."""
        yield from self._ready()
        yield ("hydrate", self._kind, self._name)
        return self

    @live
    def info(self) -> Program:
        yield from self._ready()
        rows = yield ("objects", self._kind)
        for row in rows:
            if row["name"] == self._name:
                created = datetime.fromtimestamp(row["created"], tz=timezone.utc)
                return ObjectInfo(self.name, created)
        return ObjectInfo(self.name, datetime.now(tz=timezone.utc))

    @live
    def _create_ephemeral(self) -> Program:
        self._ephemeral = True
        yield (f"{self._kind}_create", self._name, True, False)

    @live
    def _delete_ephemeral(self) -> Program:
        yield (f"{self._kind}_delete", self._name, True)


def _restore(cls: type, name: str, ephemeral: bool) -> Any:
    obj = cls(_name=name)
    obj._ephemeral = ephemeral
    return obj


class _Manager:
    """``Dict.objects`` / ``Queue.objects``: create, list and delete named objects."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.kind = cls._kind  # type: ignore[attr-defined]

    @live
    def create(
        self, name: str, *, allow_existing: bool = False, environment_name: str | None = None
    ) -> Program:
        yield (f"{self.kind}_create", check_name(self.cls.__name__, name), False, allow_existing)

    @live
    def list(self, *, max_objects: int | None = None, **_kwargs: Any) -> Program:
        from .exception import InvalidError

        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects cannot be negative")
        rows = yield ("objects", self.kind)
        return [self.cls(_name=r["name"]) for r in rows[:max_objects]]

    @live
    def delete(
        self, name: str, *, allow_missing: bool = False, environment_name: str | None = None
    ) -> Program:
        yield (f"{self.kind}_delete", name, allow_missing)


class _ObjectsProperty:
    def __get__(self, obj: Any, owner: type) -> _Manager:
        return _Manager(owner)


def _from_name(cls: Any, name: str, create_if_missing: bool) -> Any:
    return cls(_name=check_name(cls.__name__, name), _create=create_if_missing)


def _ephemeral_name(kind: str) -> str:
    return f"ephemeral-{kind}-{int(time.time())}-{uuid.uuid4().hex[:12]}"


class Dict(_NamedObject):
    """A distributed dictionary (``Dict.from_name("cache", create_if_missing=True)``)."""

    _kind = "dict"
    objects = _ObjectsProperty()
    _initial: dict[Any, Any] | None = None  # Dict.ephemeral(data)

    @classmethod
    def from_name(
        cls,
        name: str,
        data: Mapping[Any, Any] | None = None,
        *,
        namespace: Any = None,
        environment_name: str | None = None,
        create_if_missing: bool = False,
    ) -> Dict:
        if data is not None:
            raise DeprecationError(
                "Passing data to `modal.Dict.from_name` is no longer supported. Suggestion: "
                "call `.update(data)` on the Dict."
            )
        d: Dict = _from_name(cls, name, create_if_missing)
        return d

    @classmethod
    def ephemeral(cls, data: Mapping[Any, Any] | None = None, **_kwargs: Any) -> Ephemeral:
        def make() -> Dict:
            d = cls(_name=_ephemeral_name("dict"))
            if data:
                d._initial = dict(data)
            return d

        return Ephemeral(make)

    @live
    def _create_ephemeral(self) -> Program:
        self._ephemeral = True
        yield ("dict_create", self._name, True, False)
        initial = getattr(self, "_initial", None)
        if initial:
            yield ("dict_update", self._name, _pairs(initial.items()))

    @live
    def get(self, key: Any, default: Any = None) -> Program:
        """The value for ``key``, or ``default`` when the Dict has no such key."""
        yield from self._ready()
        found, value = yield ("dict_get", self._name, dump_key(key))
        return load(value) if found else default

    @live
    def contains(self, key: Any) -> Program:
        yield from self._ready()
        return (yield ("dict_contains", self._name, dump_key(key)))

    @live
    def len(self) -> Program:
        """The number of entries."""
        yield from self._ready()
        return (yield ("dict_len", self._name))

    @live
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> Program:
        """Set ``key``; True when it was added (False: it existed, ``skip_if_exists``)."""
        yield from self._ready()
        return (yield ("dict_put", self._name, dump_key(key), dump_value(value), skip_if_exists))

    @live
    def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> Program:
        """``dict.update``: every pair in one write."""
        yield from self._ready()
        items = dict(other or {}, **kwargs)
        if items:
            yield ("dict_update", self._name, _pairs(items.items()))

    @live
    def pop(self, key: Any) -> Program:
        """Remove ``key`` and return its value; ``KeyError`` when it is missing."""
        yield from self._ready()
        found, value = yield ("dict_pop", self._name, dump_key(key))
        if not found:
            raise KeyError(f"{key} not in dict {self.object_id}")
        return load(value)

    @live
    def clear(self) -> Program:
        yield from self._ready()
        yield ("dict_clear", self._name)

    def _pages(self, what: str) -> Program:
        yield from self._ready()
        out: list[Any] = []
        start: int | None = 0
        while start is not None:
            page, start = yield ("dict_page", self._name, what, start)
            out.extend(page)
        return out

    @live(iterates=True)
    def keys(self) -> Program:
        """The keys (an iterator; ``.aio``: an async iterator), in no defined order."""
        return [load(k) for k in (yield from self._pages("keys"))]

    @live(iterates=True)
    def values(self) -> Program:
        return [load(v) for v in (yield from self._pages("values"))]

    @live(iterates=True)
    def items(self) -> Program:
        return [(load(k), load(v)) for k, v in (yield from self._pages("items"))]

    def __getitem__(self, key: Any) -> Any:
        missing = object()
        value = self.get(key, missing)
        if value is missing:
            raise KeyError(f"{key} not in dict {self.object_id}")
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return bool(self.contains(key))

    def __len__(self) -> int:
        return int(self.len())


def _pairs(items: Any) -> list[tuple[bytes, bytes]]:
    return [(dump_key(k), dump_value(v)) for k, v in items]
