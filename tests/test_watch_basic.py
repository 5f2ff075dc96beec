"""Watching keys with EtcdClient.watch_iter against a real etcd."""

from __future__ import annotations

import threading
import time

import pytest

from etcdmap import EtcdClient, EtcdCompacted
from etcdmap.ops import Delete, Put


def watch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "etcdmap-watch"}


def test_watch_iter_delivers_changes_made_after_it_returned_in_order(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    base = f"{etcd_prefix}/"
    etcd_client.put(base + "before", "not seen")
    with etcd_client.watch_iter(base, prefix=True) as watcher:
        etcd_client.put(base + "a", "1")
        etcd_client.put(f"{etcd_prefix}x", "outside the prefix")
        etcd_client.put(base + "b", "2")
        etcd_client.delete_range(base + "a")
        events = [watcher.next_event(5) for _ in range(3)]
        assert watcher.next_event(0.3) is None
    assert [(e.type, e.key, e.value) for e in events if e] == [
        ("PUT", base + "a", "1"),
        ("PUT", base + "b", "2"),
        ("DELETE", base + "a", None),
    ]
    revisions = [e.revision for e in events if e]
    assert revisions == sorted(set(revisions))


def test_watch_iter_with_prev_kv_gives_the_previous_values(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/k"
    with etcd_client.watch_iter(key, prev_kv=True) as watcher:
        etcd_client.put(key, "1")
        etcd_client.put(key, "2")
        etcd_client.delete_range(key)
        events = [watcher.next_event(5) for _ in range(3)]
    assert [(e.type, e.value, e.prev_value) for e in events if e] == [
        ("PUT", "1", None),
        ("PUT", "2", "1"),
        ("DELETE", None, "2"),
    ]


def test_watch_iter_of_a_bytes_key_yields_bytes(etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k".encode()
    with etcd_client.watch_iter(key) as watcher:
        etcd_client.put(key, b"\xff\x00")
        event = watcher.next_event(5)
    assert event is not None and (event.key, event.value) == (key, b"\xff\x00")


def test_watch_iter_from_a_start_revision_replays_history(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/k"
    first = etcd_client.put(key, "1").revision
    etcd_client.put(key, "2")
    deleted = etcd_client.delete_range(key).revision
    with etcd_client.watch_iter(key, start_revision=first) as watcher:
        events = [watcher.next_event(5) for _ in range(3)]
    assert [(e.type, e.value) for e in events if e] == [
        ("PUT", "1"), ("PUT", "2"), ("DELETE", None),
    ]
    assert [e.revision for e in events if e] == [first, first + 1, deleted]


def test_the_events_of_one_txn_arrive_in_one_batch(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    a, b, c = (f"{etcd_prefix}/{n}".encode() for n in "abc")
    etcd_client.put(c, b"doomed")
    with etcd_client.watch_iter(f"{etcd_prefix}/", prefix=True) as watcher:
        txn = etcd_client.txn(success=[Put(a, b"1"), Put(b, b"2"), Delete(c)])
        batch = watcher.next_batch(5)
    assert sorted((e.type, e.key) for e in batch) == [
        ("DELETE", f"{etcd_prefix}/c"), ("PUT", f"{etcd_prefix}/a"), ("PUT", f"{etcd_prefix}/b"),
    ]
    assert {e.revision for e in batch} == {txn.revision}


def test_closing_a_watcher_ends_its_thread_promptly(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    before = watch_threads()
    watcher = etcd_client.watch_iter(f"{etcd_prefix}/k")
    (thread,) = watch_threads() - before
    started = time.monotonic()
    watcher.close()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert watcher.next_event(0.1) is None


def test_watching_from_a_compacted_revision_raises_etcd_compacted(
    etcd_client: EtcdClient, etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}/k"
    old = etcd_client.put(key, "1").revision
    etcd_client.put(key, "2")
    latest = etcd_client.put(key, "3").revision
    etcd_client.compact(latest)
    with etcd_client.watch_iter(key, start_revision=old) as watcher, \
            pytest.raises(EtcdCompacted) as info:
        watcher.next_event(5)
    assert info.value.compact_revision == latest


@pytest.mark.parametrize(("revision", "error"), [(-1, ValueError), ("3", TypeError),
                                                 (1.5, TypeError), (True, TypeError)])
def test_a_bad_start_revision_is_refused_at_once(etcd_client: EtcdClient, etcd_prefix: str,
                                                 revision: object,
                                                 error: type[Exception]) -> None:
    with pytest.raises(error, match="start_revision"):
        etcd_client.watch_iter(f"{etcd_prefix}/k", start_revision=revision)  # type: ignore[arg-type]


def test_a_bad_wait_is_refused_at_once(etcd_client: EtcdClient, etcd_prefix: str) -> None:
    with etcd_client.watch_iter(f"{etcd_prefix}/k") as events:
        with pytest.raises(TypeError, match="timeout"):
            events.next_event("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            events.next_event(-1)
