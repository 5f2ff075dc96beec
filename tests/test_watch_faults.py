"""Watches under faults: quiet streams, compaction elsewhere, one revision per batch.

Each test runs a real etcd; a TCP relay in front of it (from test_watch_resume)
cuts or freezes connections.  No sleeps stand in for synchronisation: tests
wait on what the watch did (requests it sent, events it delivered).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from conftest import http_log_of
from helpers import Relay, collect, wait_until

from etcdmap import EtcdClient, EtcdMapping, Event
from etcdmap.ops import Put

# -- a quiet watch on a healthy member -----------------------------------------------------


def test_a_quiet_watch_on_a_healthy_member_survives_compaction_of_other_keys(
        etcd_endpoint: str, etcd_client: EtcdClient, etcd_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient(etcd_endpoint) as own:
        log = http_log_of(own, monkeypatch)
        with own.watch_iter(prefix, prefix=True, read_timeout=0.3) as watcher:
            # Elsewhere the store moves on, and its history is compacted away.
            latest = [etcd_client.put(f"{etcd_prefix}-other/{i}", "x").revision
                      for i in range(3)][-1]
            etcd_client.compact(latest)
            # Several silences pass: each one is a check on the member, never a new stream.
            wait_until(lambda: log.count("/v3/kv/range") >= 6, 20, "three silences checked")
            mine = etcd_client.put(prefix + "k", "v").revision
            assert [e.revision for e in collect(watcher, 1)] == [mine]
    assert log.count("/v3/watch") == 1, log


def test_a_quiet_watch_reconnects_when_its_member_stops_answering(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The relay freezes the stream and the connection the checks would use;
    # a new connection (the next attempt) gets through again.
    prefix = etcd_prefix + "/"
    with EtcdClient(relay.endpoint, timeout=2) as via_relay:
        log = http_log_of(via_relay, monkeypatch)
        with via_relay.watch_iter(prefix, prefix=True, read_timeout=0.5) as watcher:
            via_relay.range(prefix)  # a pooled connection for the checks, frozen below too
            relay.freeze()
            wait_until(lambda: log.count("/v3/watch") >= 2, 20, "a second stream")
            mine = etcd_client.put(prefix + "k", "v").revision
            assert [e.revision for e in collect(watcher, 1, timeout=10)] == [mine]


def test_a_quiet_stream_that_missed_a_delete_is_replaced(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay) -> None:
    # The member answers (new connections work), the stream is silently dead,
    # and the only change is a delete: the key count tells.
    prefix = etcd_prefix + "/"
    etcd_client.put(prefix + "k", "v")
    with EtcdClient(relay.endpoint, timeout=2) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True, read_timeout=0.5) as watcher:
        relay.freeze()
        gone = etcd_client.delete_range(prefix + "k").revision
        events = collect(watcher, 1, timeout=10)
    assert [(e.type, e.revision) for e in events] == [("DELETE", gone)]


def test_compacted_names_the_revision_it_asked_for(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    from etcdmap import EtcdCompacted

    first = etcd_client.put(etcd_prefix + "/a", "1").revision
    latest = etcd_client.put(etcd_prefix + "/a", "2").revision
    etcd_client.compact(latest)
    with pytest.raises(EtcdCompacted) as info, \
            etcd_client.watch_iter(etcd_prefix + "/a", start_revision=first) as watcher:
        watcher.next_event(5)
    assert f"cannot watch from revision {first}:" in str(info.value)
    assert f"the oldest revision left is {latest}" in str(info.value)
    assert info.value.compact_revision == latest


# -- one revision at a time ------------------------------------------------------------------


def test_revisions_missed_while_disconnected_arrive_one_batch_each(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True) as watcher:
        relay.freeze()
        revisions = [etcd_client.txn(success=[Put(f"{prefix}{r}/{k}".encode(), b"v")
                                              for k in "ab"]).revision for r in range(3)]
        relay.cut()  # the watch resumes: the three revisions come in one stream message
        batches = [watcher.next_batch(10) for _ in revisions]
        assert watcher.next_batch(0.3) == []
    assert [{e.revision for e in b} for b in batches] == [{r} for r in revisions]
    assert [len(b) for b in batches] == [2, 2, 2]


def test_on_change_gets_one_call_per_revision_after_a_reconnect(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay) -> None:
    calls: list[list[Event[Any]]] = []
    with EtcdClient(relay.endpoint) as via_relay:
        m = EtcdMapping(etcd_prefix, client=via_relay)
        with m.cached(on_change=calls.append) as cache:
            cache["start"] = "1"
            calls.clear()
            relay.freeze()
            revisions = [etcd_client.put(f"{etcd_prefix}/k{i}", str(i)).revision
                         for i in range(4)]
            relay.cut()
            assert cache.wait_for(revisions[-1], 10)
            wait_until(lambda: len(calls) >= 4, 10, "four calls")
    assert [[e.revision for e in call] for call in calls] == [[r] for r in revisions]


# -- never noisy ------------------------------------------------------------------------------


def test_a_watch_logs_reconnects_below_warning(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay,
        caplog: pytest.LogCaptureFixture) -> None:
    # A library that prints on recovered failures prints through logging's
    # last-resort handler in every program that has not configured logging.
    prefix = etcd_prefix + "/"
    caplog.set_level(logging.DEBUG, logger="etcdmap")
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True) as watcher:
        relay.cut()
        mine = etcd_client.put(prefix + "k", "v").revision
        assert [e.revision for e in collect(watcher, 1)] == [mine]
    reconnects = [r for r in caplog.records if "interrupted" in r.getMessage()]
    assert reconnects and all(r.levelno < logging.WARNING for r in reconnects)


def test_closing_a_watch_while_it_checks_a_silent_member_ends_it_promptly(
        etcd_client: EtcdClient, etcd_prefix: str, relay: Relay,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with EtcdClient(relay.endpoint, timeout=3) as via_relay:
        log = http_log_of(via_relay, monkeypatch)
        watcher = via_relay.watch_iter(etcd_prefix + "/", prefix=True, read_timeout=0.3)
        (thread,) = [t for t in threading.enumerate() if t.name == "etcdmap-watch"
                     and t.is_alive()][-1:]
        relay.freeze()
        wait_until(lambda: "/v3/kv/range" in log, 10, "a check under way")
        watcher.close()
        thread.join(5)
        assert not thread.is_alive()
