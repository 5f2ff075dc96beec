"""Unreferenced watchers, caches and leases close themselves, like files (issue 10, item 8).

An object that owns a thread (and a socket) and is dropped unclosed is closed
by the garbage collector: its thread ends within a couple of seconds, its
sockets close, and it says so with a ``ResourceWarning``.  Closed objects
say nothing.  ``setup.cfg`` turns warnings into errors, so each test records
them explicitly.
"""

from __future__ import annotations

import gc
import os
import threading
import warnings
from collections.abc import Iterator

import pytest
from helpers import wait_until

from etcdmap import EtcdClient, EtcdMapping

DROPPED = 5
ENDS_WITHIN = 3.0  # seconds for a dropped object's thread to end


def fds() -> int:
    """The number of open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def threads_named(*names: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate()
            if t.is_alive() and any(t.name.startswith(n) for n in names)}


@pytest.fixture
def m(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m["k"] = "v"  # the client's pooled connection is open before anything is counted
    return m


@pytest.fixture
def recorded() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised while the test runs (ResourceWarnings from finalizers too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_dropped_watchers_end_their_threads_and_sockets(
        m: EtcdMapping, recorded: list[warnings.WarningMessage]) -> None:
    with m.watch():  # what a client's first watch sets up for all (gRPC's poller) is counted
        pass
    before_threads, before_fds = threads_named("etcdmap-watch"), fds()
    for _ in range(DROPPED):
        m.watch()  # dropped at once, never closed
    gc.collect()
    wait_until(lambda: not threads_named("etcdmap-watch") - before_threads, ENDS_WITHIN,
               "the dropped watchers' threads ended")
    wait_until(lambda: fds() <= before_fds, ENDS_WITHIN, "the dropped watchers' sockets closed")
    found = resource_warnings(recorded)
    assert len(found) == DROPPED and all("Watcher" in w for w in found), found
    m["k"] = "still works"
    assert m["k"] == "still works"


def test_dropped_caches_end_their_threads_and_sockets(
        m: EtcdMapping, recorded: list[warnings.WarningMessage]) -> None:
    with m.cached() as warm:  # the client's pool grows to what a cache uses alongside it
        warm["k"] = "warm"
    del warm
    before_threads, before_fds = threads_named("etcdmap-cache", "etcdmap-watch"), fds()
    for n in range(DROPPED):
        cache = m.cached()
        cache["k"] = str(n)  # returns once the cache's own watch delivered it
        assert {t.name for t in threads_named("etcdmap-cache", "etcdmap-watch")
                - before_threads} == {"etcdmap-cache", "etcdmap-watch"}
        del cache
    gc.collect()
    wait_until(lambda: not threads_named("etcdmap-cache", "etcdmap-watch") - before_threads,
               ENDS_WITHIN, "the dropped caches' threads ended")
    wait_until(lambda: fds() <= before_fds, ENDS_WITHIN, "the dropped caches' sockets closed")
    found = resource_warnings(recorded)
    assert len(found) == DROPPED and all("CachedMapping" in w for w in found), found


def test_dropped_leases_end_their_keepalives_and_lapse(
        etcd_client: EtcdClient, recorded: list[warnings.WarningMessage]) -> None:
    before = threads_named("etcdmap-lease-")
    ids = []
    for _ in range(DROPPED):
        ids.append(etcd_client.lease(2).id)  # the Lease itself is dropped at once
    gc.collect()
    wait_until(lambda: not threads_named("etcdmap-lease-") - before, ENDS_WITHIN,
               "the dropped leases' keepalive threads ended")
    found = resource_warnings(recorded)
    assert len(found) == DROPPED and all("Lease" in w for w in found), found
    # No longer refreshed: each lapses once its TTL runs out.
    wait_until(lambda: all(etcd_client.lease_time_to_live(i).ttl < 0 for i in ids), 10,
               "the dropped leases lapsed")


def _open_and_close_everything(m: EtcdMapping, client: EtcdClient) -> None:
    with m.watch():
        pass
    watcher = m.watch()
    watcher.close()
    with m.cached() as cache:
        cache["k"] = "1"
    lease = client.lease(5)
    lease.revoke()
    quiet = client.lease(5)
    quiet.close()
    with m.lease(5) as live:
        live["leased"] = "1"


def test_closed_objects_say_nothing_and_leave_nothing(
        m: EtcdMapping, etcd_client: EtcdClient,
        recorded: list[warnings.WarningMessage]) -> None:
    _open_and_close_everything(m, etcd_client)  # the client's pool grows to what they use
    gc.collect()
    before_threads, before_fds = threads_named("etcdmap-"), fds()
    for _ in range(3):
        _open_and_close_everything(m, etcd_client)
    gc.collect()
    wait_until(lambda: not threads_named("etcdmap-") - before_threads, ENDS_WITHIN,
               "the closed objects' threads ended")
    wait_until(lambda: fds() <= before_fds, ENDS_WITHIN, "the closed objects' sockets closed")
    assert resource_warnings(recorded) == []


def test_a_cache_closed_at_once_leaves_no_watch_running(
        m: EtcdMapping, recorded: list[warnings.WarningMessage]) -> None:
    before = threads_named("etcdmap-watch")
    caches = []
    for _ in range(DROPPED):
        cache = m.cached()
        cache.close()
        caches.append(cache)  # still referenced: only close() may end its watch
    try:
        wait_until(lambda: not threads_named("etcdmap-watch") - before, ENDS_WITHIN,
                   "the closed caches' watch threads ended")
    finally:
        for cache in caches:  # what close() should have done, so nothing outlives the test
            left = cache._mirror.watcher
            if left is not None:
                left.close()
    del caches, cache
    gc.collect()
    assert resource_warnings(recorded) == []
