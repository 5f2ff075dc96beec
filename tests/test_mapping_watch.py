"""``cfg.watch()`` and ``cfg.snapshot()``: a mapping's changes, in the mapping's terms.

Against a real etcd.  Keys come relative to the mapping and values decoded by
its codec; ``watch("db")`` means ``db`` and everything under ``db/``.  After
compaction the documented resync is ``snapshot()`` then
``watch(start_revision=rev + 1)``, and it misses and repeats nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from helpers import collect

from etcdmap import EtcdClient, EtcdCompacted, EtcdMapping, Event

# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A JSON-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client, codec="json")


def changes(events: list[Event[Any]]) -> list[tuple[str, str, Any]]:
    return [(e.type, e.key, e.value) for e in events]


# -- keys and values in the mapping's terms ----------------------------------------------


def test_a_mapping_watch_yields_keys_relative_to_the_mapping(m: EtcdMapping) -> None:
    with m.watch() as watcher:
        m["top"] = 1
        m["db/host"] = "localhost"
        del m["top"]
        events = collect(watcher, 3)
    assert changes(events) == [
        ("PUT", "top", 1), ("PUT", "db/host", "localhost"), ("DELETE", "top", None),
    ]


def test_a_mapping_watch_decodes_values_with_the_mapping_codec(m: EtcdMapping) -> None:
    m["k"] = "old"
    with m.watch(prev_kv=True) as watcher:
        m["n"] = 42
        m["l"] = [1, "two", None]
        m["k"] = 1.5
        del m["k"]
        events = collect(watcher, 4)
    assert changes(events) == [
        ("PUT", "n", 42), ("PUT", "l", [1, "two", None]), ("PUT", "k", 1.5), ("DELETE", "k", None),
    ]
    assert [e.prev_value for e in events] == [None, None, "old", 1.5]


def test_a_mapping_watch_ignores_keys_beside_its_prefix(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    with m.watch() as watcher:
        etcd_client.put(f"{etcd_prefix}-x/k", "1")
        etcd_client.put(f"{etcd_prefix}x", "1")
        etcd_client.put(etcd_prefix, "1")  # the prefix itself is no key of the mapping
        m["mine"] = "yes"
        events = collect(watcher, 1)
    assert changes(events) == [("PUT", "mine", "yes")]


def test_watching_a_key_sees_it_and_its_subtree_but_not_its_siblings(m: EtcdMapping) -> None:
    with m.watch("db") as watcher:
        m["db-x"] = 0
        m["db.x"] = 0
        m["dbx"] = 0
        m["db"] = 1
        m["db/host"] = "h"  # replaces the leaf db with a subtree
        m["db0"] = 0
        events = collect(watcher, 3)
    assert changes(events)[0] == ("PUT", "db", 1)
    # One write replaced the leaf with a subtree: one revision, two events.
    assert sorted(changes(events)[1:]) == [("DELETE", "db", None), ("PUT", "db/host", "h")]
    assert events[1].revision == events[2].revision


def test_a_submapping_watch_yields_keys_relative_to_the_submapping(m: EtcdMapping) -> None:
    sub = m.submapping("services")
    with sub.watch() as watcher:
        m["other"] = 0
        sub["web/port"] = 80
        events = collect(watcher, 1)
    assert changes(events) == [("PUT", "web/port", 80)]


def test_a_mapping_watch_sees_changes_made_after_it_returned(m: EtcdMapping) -> None:
    m["before"] = 0
    with m.watch() as watcher:
        m["after"] = 1
        events = collect(watcher, 1)
    assert changes(events) == [("PUT", "after", 1)]


def test_a_multi_key_write_arrives_as_one_batch(m: EtcdMapping) -> None:
    with m.watch() as watcher:
        m.update({"a": 1, "b": {"c": 2}})
        batch = watcher.next_batch(5)
        assert watcher.next_event(0.3) is None
    assert sorted(changes(batch)) == [("PUT", "a", 1), ("PUT", "b/c", 2)]
    assert len({e.revision for e in batch}) == 1


def test_ending_a_lease_block_shows_its_keys_deleted_in_one_batch(m: EtcdMapping) -> None:
    with m.watch() as watcher:
        with m.lease(60) as live:
            live["a"] = 1
            live["b/c"] = 2
        puts = watcher.next_batch(5) + watcher.next_batch(5)
        deletes = watcher.next_batch(5)
    assert sorted(changes(puts)) == [("PUT", "a", 1), ("PUT", "b/c", 2)]
    assert sorted(changes(deletes)) == [("DELETE", "a", None), ("DELETE", "b/c", None)]
    assert len({e.revision for e in deletes}) == 1


def test_a_mapping_watch_from_a_revision_replays_history(m: EtcdMapping) -> None:
    m["k"] = 1
    _, rev = m.snapshot()
    m["k"] = 2
    del m["k"]
    with m.watch(start_revision=rev) as watcher:
        events = collect(watcher, 3)
    assert changes(events) == [("PUT", "k", 1), ("PUT", "k", 2), ("DELETE", "k", None)]


# -- snapshots, compaction and the resync recipe ------------------------------------------


def test_snapshot_is_the_subtree_and_the_revision_it_was_read_at(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    m.update({"a": 1, "b": {"c": [2]}})
    written = etcd_client.status().revision
    tree, rev = m.snapshot()
    assert tree == {"a": 1, "b": {"c": [2]}}
    assert rev == written


def test_a_snapshot_of_an_empty_mapping_still_carries_the_current_revision(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    written = etcd_client.put(f"{etcd_prefix}-elsewhere", "x").revision
    assert m.snapshot() == ({}, written)


def test_a_mapping_watch_from_a_compacted_revision_raises_etcd_compacted(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    m["k"] = 1
    _, old = m.snapshot()
    m["k"] = 2
    _, latest = m.snapshot()
    etcd_client.compact(latest)
    with m.watch(start_revision=old) as watcher, pytest.raises(EtcdCompacted) as info:
        watcher.next_event(5)
    assert info.value.compact_revision == latest


def test_the_documented_resync_after_compaction_misses_and_repeats_nothing(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    m["a"] = 1
    _, old = m.snapshot()
    m["a"] = 2
    etcd_client.compact(m.snapshot()[1])
    with pytest.raises(EtcdCompacted), m.watch(start_revision=old) as stale:
        stale.next_event(5)
    # The recipe: take a snapshot, then watch from just after it.
    tree, rev = m.snapshot()
    m["b"] = 3  # between the snapshot and the new watch: must not be missed
    with m.watch(start_revision=rev + 1) as watcher:
        m["a"] = 4
        events = collect(watcher, 2)
    assert tree == {"a": 2}
    assert changes(events) == [("PUT", "b", 3), ("PUT", "a", 4)]


# -- ending a watch --------------------------------------------------------------------------


def test_breaking_out_of_a_for_loop_inside_with_ends_the_watch_thread(m: EtcdMapping) -> None:
    m["k"] = 1
    _, rev = m.snapshot()
    before = {t for t in threading.enumerate() if t.name == "etcdmap-watch"}
    started = time.monotonic()
    with m.watch(start_revision=rev) as watcher:
        (thread,) = {t for t in threading.enumerate() if t.name == "etcdmap-watch"} - before
        for event in watcher:
            assert (event.key, event.value) == ("k", 1)
            break
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
