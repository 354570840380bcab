"""The Dict/Queue store without Ray: its operations, its log and snapshot on disk, and
Modal's errors on the declaring side."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from rayweb import Dict, Queue
from rayweb.exception import AlreadyExistsError, InvalidError, NotFoundError, RequestSizeError
from rayweb.objects import dump_key
from rayweb.queues import _partition
from rayweb.services import state as state_mod
from rayweb.services.state import QueueFull, State
from rayweb.services.statelog import StateFiles, StoreLocked


def k(x):
    return dump_key(x)


def test_dict_operations_keep_keys_as_their_pickled_bytes():
    s = State()
    assert s.apply("dict_create", "op1", ("d", False, False), 1.0) is True
    assert s.apply("dict_put", None, ("d", k("a"), b"1", False), 1.0) is True
    assert s.apply("dict_put", None, ("d", k("a"), b"2", True), 1.0) is False  # skip_if_exists
    assert s.read("dict_get", ("d", k("a")), 1.0) == (True, b"1")  # kept
    assert s.apply("dict_put", None, ("d", k("a"), b"3", False), 1.0) is False  # overwrote
    assert s.read("dict_get", ("d", k("a")), 1.0) == (True, b"3")
    assert s.read("dict_get", ("d", k(1)), 1.0) == (False, None)
    s.apply("dict_update", None, ("d", [(k(1), b"x"), (k(1), b"y"), (k(2), b"z")]), 1.0)
    assert s.read("dict_get", ("d", k(1)), 1.0) == (True, b"y")  # the last one wins
    assert s.read("dict_len", ("d",), 1.0) == 3
    assert s.apply("dict_pop", None, ("d", k(2)), 1.0) == (True, b"z")
    assert s.apply("dict_pop", None, ("d", k(2)), 1.0) == (False, None)
    items, end = s.read("dict_page", ("d", "items", 0), 1.0)
    assert end is None and s.total == sum(len(a) + len(b) for a, b in items)
    s.apply("dict_clear", None, ("d",), 1.0)
    assert s.read("dict_len", ("d",), 1.0) == 0 and s.total == 0
    with pytest.raises(AlreadyExistsError):
        s.apply("dict_create", None, ("d", False, False), 1.0)
    assert s.apply("dict_create", None, ("d", False, True), 1.0) is False
    with pytest.raises(NotFoundError, match="rayweb dict create nope"):
        s.read("dict_get", ("nope", k("a")), 1.0)


def test_iterating_a_dict_comes_in_bounded_pages(monkeypatch):
    monkeypatch.setattr(state_mod, "PAGE_ITEMS", 3)
    monkeypatch.setattr(state_mod, "PAGE_BYTES", 25)
    s = State()
    s.apply("dict_create", None, ("d", False, False), 0.0)
    s.apply("dict_update", None, ("d", [(k(i), b"v" * i) for i in range(1, 8)]), 0.0)
    pages, start = [], 0
    while start is not None:
        page, start = s.read("dict_page", ("d", "values", start), 0.0)
        pages.append(page)
    # at most 3 entries and 25 bytes of keys and values a page (pickled int keys: 6 bytes)
    assert [b"".join(p).count(b"v") for p in pages] == [6, 9, 13]
    assert sum(len(p) for p in pages) == 7
    keys, start = s.read("dict_page", ("d", "keys", 0), 0.0)
    assert keys == [k(1), k(2), k(3)] and start == 3


def test_a_write_retried_with_its_operation_id_is_applied_once():
    s = State()
    s.apply("queue_create", None, ("q", False, False), 0.0)
    s.apply("queue_put", None, ("q", b"", [b"a", b"b"], 60.0), 0.0)
    assert s.apply("queue_get", "get-1", ("q", b"", 1), 0.0) == [b"a"]
    assert s.apply("queue_get", "get-1", ("q", b"", 1), 0.0) == [b"a"]  # the same answer
    assert s.read("queue_len", ("q", b"", False), 0.0) == 1


def test_queue_partitions_limits_and_ttl(monkeypatch):
    s = State()
    s.apply("queue_create", None, ("q", False, False), 0.0)
    s.apply("queue_put", None, ("q", b"", [b"1", b"2", b"3"], 100.0), 0.0)
    s.apply("queue_put", None, ("q", b"p", [b"x"], 10.0), 0.0)
    assert s.read("queue_len", ("q", b"", True), 5.0) == 4
    assert s.read("queue_peek", ("q", b"", -1, 2), 5.0) == [(0, b"1"), (1, b"2")]
    assert s.read("queue_peek", ("q", b"", 1, 10), 5.0) == [(2, b"3")]
    assert s.read("queue_len", ("q", b"p", False), 11.0) == 0  # expired 10 s after its put
    assert s.apply("queue_get", None, ("q", b"", 5), 11.0) == [b"1", b"2", b"3"]
    assert s.total == 0
    monkeypatch.setattr(state_mod, "QUEUE_MAX_ITEMS", 3)
    s.apply("queue_put", None, ("q", b"", [b"a", b"b"], 100.0), 0.0)
    with pytest.raises(QueueFull, match="at most 3"):
        s.apply("queue_put", None, ("q", b"", [b"c", b"d"], 100.0), 0.0)
    assert s.read("queue_len", ("q", b"", False), 0.0) == 2  # a refused put changes nothing
    monkeypatch.setattr(state_mod, "QUEUE_MAX_ITEM", 4)
    with pytest.raises(RequestSizeError, match="Queue.put_many request is too large"):
        s.apply("queue_put", None, ("q", b"z", [b"ok", b"12345"], 100.0), 0.0)
    s.apply("queue_clear", None, ("q", b"", True), 0.0)
    assert s.read("queue_len", ("q", b"", True), 0.0) == 0


def test_the_total_size_is_bounded(monkeypatch):
    monkeypatch.setattr(state_mod, "MAX_TOTAL", 100)
    s = State()
    s.apply("dict_create", None, ("d", False, False), 0.0)
    s.apply("dict_put", None, ("d", b"k", b"v" * 50, False), 0.0)
    with pytest.raises(RequestSizeError, match="RAYWEB_STATE_MAX_BYTES"):
        s.apply("dict_put", None, ("d", b"k2", b"v" * 50, False), 0.0)
    s.apply("dict_put", None, ("d", b"k", b"v" * 90, False), 0.0)  # replacing counts the change
    assert s.total == 91


def test_the_log_replays_torn_tails_and_snapshots(tmp_path):
    files = StateFiles(tmp_path / "state")
    files.acquire("addr")
    s = files.load()
    frames = []
    for i, (kind, args) in enumerate(
        [
            ("dict_create", ("d", False, False)),
            ("dict_put", ("d", k("a"), b"1", False)),
            ("queue_create", ("q", False, False)),
            ("queue_put", ("q", b"", [b"x", b"y"], 1e9)),
            ("queue_get", ("q", b"", 1)),
        ]
    ):
        s.apply(kind, f"op{i}", args, 1.0)
        frames.append(files.frame(s.seq, f"op{i}", kind, args, 1.0))
    files.append(frames[:3])
    files.append(frames[3:])
    with open(files.log_path, "ab") as f:
        f.write(frames[0][:7])  # a crash while writing: never acknowledged
    files.release()

    again = StateFiles(tmp_path / "state")
    again.acquire("addr")
    loaded = again.load()
    assert loaded.read("dict_get", ("d", k("a")), 1.0) == (True, b"1")
    assert loaded.read("queue_peek", ("q", b"", -1, 10), 1.0) == [(1, b"y")]
    assert loaded.done["op4"] == [b"x"] and loaded.seq == 5
    assert os.path.getsize(again.log_path) == sum(map(len, frames))  # the torn tail is cut
    again.snapshot(loaded)
    assert os.path.getsize(again.log_path) == 0
    # a crash between the snapshot's rename and the log's truncation applies nothing twice
    again.append(frames)
    assert again.load().read("queue_len", ("q", b"", False), 1.0) == 1
    mode = stat.S_IMODE(os.stat(tmp_path / "state").st_mode)
    assert mode == 0o700
    for name in ("log", "snapshot", "owner.json", ".lock"):
        assert stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode) == 0o600, name
    with pytest.raises(StoreLocked, match="pid") as info:
        StateFiles(tmp_path / "state").acquire("other")
    assert info.value.owner["address"] == "addr"
    again.release()


def test_declaring_follows_modals_rules():
    with pytest.raises(RuntimeError, match="constructor is not allowed"):
        Dict()
    with pytest.raises(RuntimeError, match=r"Queue\(\) is not allowed"):
        Queue()
    with pytest.raises(InvalidError, match="Invalid Dict name: 'a b'"):
        Dict.from_name("a b")
    with pytest.raises(InvalidError, match="Invalid Queue name"):
        Queue.from_name("x" * 65)
    with pytest.raises(InvalidError, match="between 1 and 64 characters"):
        _partition("p" * 65)
    with pytest.raises(InvalidError, match="between 1 and 64 characters"):
        _partition("")
    q = Queue.from_name("jobs")
    with pytest.raises(InvalidError, match="Partition must be null when requesting total"):
        q.len(partition="a", total=True)
    with pytest.raises(InvalidError, match="Partition must be null when requesting to clear"):
        q.clear(partition="a", all=True)
    d = pickle.loads(pickle.dumps(Dict.from_name("cache", create_if_missing=True)))
    assert d.name == "cache" and d.object_id == "di-cache"
    assert dump_key("a") == pickle.dumps("a", protocol=5)
