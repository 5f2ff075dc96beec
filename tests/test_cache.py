"""``CachedMapping``: a watch-fed, in-memory copy of an ``EtcdMapping``, against a real etcd.

``m`` is a plain mapping over the test's prefix (it reads etcd itself, so it
is the reference), ``caches(m)`` opens a cache over the same prefix and closes
it after the test.  Writes by "another client" go through ``etcd_client``
directly; their revision is what the test then waits for.

Failure tests start their own etcd: a single server behind a TCP relay the test
can cut (a network partition), or a 3-member cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import blocked_in, wait_until

from etcdmap import EtcdClient, EtcdError, EtcdKeyError, EtcdMapping, Event
from etcdmap.cache import CachedMapping
from etcdmap.testing import EtcdCluster, EtcdServer

WAIT = 10.0  # seconds a cache may take to catch up with a write it did not make
CACHE_THREADS = ("etcdmap-cache", "etcdmap-watch")

# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A plain (uncached) str-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client)


OpenCache = Callable[..., CachedMapping]


@pytest.fixture
def cache(m: EtcdMapping, caches: OpenCache) -> CachedMapping:
    """A cache over the test's prefix, holding a small tree."""
    m.update({"name": "app", "db": {"host": "localhost", "port": "5432"},
              "svc": {"a": {"url": "http://a"}}})
    cache = caches(m)
    cache["name"] = "app"  # returns once the watch delivered it: the watch is up
    return cache


def cache_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name in CACHE_THREADS and t.is_alive()}


def key_revision(client: EtcdClient, key: str) -> int:
    """The revision that last wrote ``key``."""
    return client.get(key).revision


class Relay:
    """A TCP relay to an etcd member; ``cut()`` partitions its clients, ``heal()`` ends it.

    While cut, the relay accepts connections and closes them at once, as a
    partitioned network path would fail them.
    """

    def __init__(self, target: str):
        url = urlsplit(target)
        self._target = (url.hostname or "127.0.0.1", url.port or 2379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.refused = 0  # connections turned away while cut
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                conn.close()
                continue
            conn.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._socks |= {conn, upstream}
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            self._socks.difference_update(socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """Drop every relayed connection, and fail new ones until ``heal()``."""
        self._up.clear()
        with self._lock:
            socks = list(self._socks)
        self._drop(*socks)

    def heal(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)
        self._listener.close()


# -- reads come from memory -------------------------------------------------------------


def test_reads_make_no_http_requests(cache: CachedMapping, etcd_client: EtcdClient,
                                     http_log: list[str]) -> None:
    assert cache.client is etcd_client  # so http_log sees its requests
    log = http_log
    log.clear()
    assert cache["name"] == "app"
    assert cache["db/host"] == "localhost"
    assert cache["db"]["port"] == "5432"
    assert cache["svc/a/url"] == "http://a"
    assert "db" in cache and "db/port" in cache and "nope" not in cache and "db/x" not in cache
    assert cache.get("name") == "app" and cache.get("nope", 7) == 7 and cache.get("db/x") is None
    with pytest.raises(KeyError):
        cache["nope"]
    with pytest.raises(KeyError):
        cache["db/nope"]
    assert len(cache) == 3 and len(cache["db"]) == 2 and bool(cache)
    assert sorted(cache) == ["db", "name", "svc"]
    assert sorted(cache.keys()) == ["db", "name", "svc"]
    assert len(list(cache.items())) == 3 and len(list(cache.values())) == 3
    tree = cache.to_dict()
    assert cache == tree and tree == cache and cache != {}
    assert cache.snapshot()[0] == tree
    assert json.loads(json.dumps(cache)) == tree
    assert dict(cache)["name"] == "app"
    assert repr(cache)
    assert log == []


def test_reads_answer_like_the_mapping(cache: CachedMapping, m: EtcdMapping) -> None:
    expected = {"name": "app", "db": {"host": "localhost", "port": "5432"},
                "svc": {"a": {"url": "http://a"}}}
    assert m.to_dict() == expected
    assert cache.to_dict() == expected
    assert cache == expected and expected == cache
    assert cache == m
    assert json.loads(json.dumps(cache)) == expected
    assert json.loads(json.dumps(cache["db"])) == expected["db"]
    for key in ["name", "db/host", "svc/a/url", "nope", "db/nope", "name/x", "svc/a/url/x"]:
        assert (key in cache) == (key in m), key
        assert cache.get(key, "<none>") == m.get(key, "<none>"), key
    assert sorted(cache) == sorted(m) and len(cache) == len(m)
    assert sorted(cache["svc"]) == ["a"]
    assert dict(cache.items())["name"] == "app"
    assert 1 not in cache and cache.get(1) is None
    with pytest.raises(EtcdKeyError):
        cache["nope"]


def test_sub_directories_are_cached_nodes(cache: CachedMapping, etcd_prefix: str) -> None:
    db = cache["db"]
    assert isinstance(db, CachedMapping) and isinstance(db, dict)
    assert db.prefix == f"{etcd_prefix}/db/"
    assert db == {"host": "localhost", "port": "5432"}
    assert isinstance(cache["svc"]["a"], CachedMapping)
    assert isinstance(cache["svc/a"], CachedMapping)
    assert cache["svc/a"]["url"] == "http://a"
    assert db.revision == cache.revision
    assert all(isinstance(v, CachedMapping) for k, v in cache.items() if k != "name")


def test_a_node_follows_its_directory(cache: CachedMapping, etcd_client: EtcdClient,
                                      etcd_prefix: str) -> None:
    db = cache["db"]
    rev = etcd_client.put(f"{etcd_prefix}/db/user", "admin").revision
    assert cache.wait_for(rev, WAIT)
    assert db["user"] == "admin" and db is cache["db"]


# -- read-your-writes -------------------------------------------------------------------

BEFORE = {"a": "1", "db": {"host": "h", "port": "5432"}, "tags": {"x": "1"}}


def _popitem(c: CachedMapping) -> None:
    key, value = c.popitem()
    assert BEFORE[key] == (value.to_dict() if isinstance(value, EtcdMapping) else value)


def _ior(c: CachedMapping) -> None:
    c |= {"a": "3", "n/m": "4"}


def _setdefault_absent(c: CachedMapping) -> None:
    assert c.setdefault("new", "v") == "v"


def _setdefault_tree(c: CachedMapping) -> None:
    assert c.setdefault("new", {"x": "1"}) == {"x": "1"}


def _replace_hit(c: CachedMapping) -> None:
    assert c.replace("db/host", "h", "h2") is True


def _pop_leaf(c: CachedMapping) -> None:
    assert c.pop("a") == "1"


def _pop_tree(c: CachedMapping) -> None:
    assert c.pop("db") == {"host": "h", "port": "5432"}


def _set_through_node(c: CachedMapping) -> None:
    c["db"]["host"] = "h2"


def _clear_node(c: CachedMapping) -> None:
    c["db"].clear()


def _del(key: str) -> Callable[[CachedMapping], None]:
    def delete(c: CachedMapping) -> None:
        del c[key]
    return delete


def _set(key: str, value: Any) -> Callable[[CachedMapping], None]:
    def assign(c: CachedMapping) -> None:
        c[key] = value
    return assign


WRITES: dict[str, tuple[Callable[[CachedMapping], None], dict[str, Any] | None]] = {
    "setitem": (_set("b", "2"), {**BEFORE, "b": "2"}),
    "setitem path": (_set("db/user", "u"), {**BEFORE, "db": {**BEFORE["db"], "user": "u"}}),
    "setitem through a node": (_set_through_node, {**BEFORE, "db": {"host": "h2", "port": "5432"}}),
    "setitem mapping": (_set("db", {"url": "u"}), {**BEFORE, "db": {"url": "u"}}),
    "setitem scalar over a dir": (_set("db", "leaf"), {**BEFORE, "db": "leaf"}),
    "setitem path through a leaf": (_set("a/b", "2"), {**BEFORE, "a": {"b": "2"}}),
    "setitem empty mapping": (_set("tags", {}), {"a": "1", "db": BEFORE["db"]}),
    "delitem": (_del("a"), {"db": BEFORE["db"], "tags": {"x": "1"}}),
    "delitem dir": (_del("db"), {"a": "1", "tags": {"x": "1"}}),
    "delitem path": (_del("db/host"), {**BEFORE, "db": {"port": "5432"}}),
    "delitem last of a dir": (_del("tags/x"), {"a": "1", "db": BEFORE["db"]}),
    "pop": (_pop_leaf, {"db": BEFORE["db"], "tags": {"x": "1"}}),
    "pop dir": (_pop_tree, {"a": "1", "tags": {"x": "1"}}),
    "popitem": (_popitem, None),
    "update": (lambda c: c.update({"a": "2", "db/user": "u"}, z="9"),
               {**BEFORE, "a": "2", "z": "9", "db": {**BEFORE["db"], "user": "u"}}),
    "ior": (_ior, {**BEFORE, "a": "3", "n": {"m": "4"}}),
    "setdefault": (_setdefault_absent, {**BEFORE, "new": "v"}),
    "setdefault mapping": (_setdefault_tree, {**BEFORE, "new": {"x": "1"}}),
    "replace": (_replace_hit, {**BEFORE, "db": {"host": "h2", "port": "5432"}}),
    "clear": (lambda c: c.clear(), {}),
    "clear a node": (_clear_node, {"a": "1", "tags": {"x": "1"}}),
}


@pytest.mark.parametrize("name", list(WRITES))
def test_a_write_through_the_cache_is_visible_when_it_returns(
        name: str, m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient,
        etcd_prefix: str) -> None:
    write, expected = WRITES[name]
    m.update(BEFORE)
    stall = threading.Event()

    def on_change(events: list[Event[Any]]) -> None:
        if stall.is_set():  # hold the follower up once, so it lags behind the write
            stall.clear()
            time.sleep(0.2)

    cache = caches(m, on_change=on_change)
    before = cache.revision
    stall.set()
    etcd_client.put(f"{etcd_prefix}/a", "1")  # a revision that changes nothing shown
    write(cache)
    shown = cache.to_dict()  # no waiting: the write returned only once the cache had it
    stored = m.to_dict()
    if expected is not None:
        assert stored == expected
    assert shown == stored
    assert cache.revision > before


def test_writes_that_change_nothing_return_at_once_and_keep_the_cache(
        m: EtcdMapping, caches: OpenCache) -> None:
    m.update(BEFORE)
    cache = caches(m)
    before = cache.revision
    started = time.monotonic()
    assert cache.setdefault("a", "other") == "1"
    assert cache.replace("a", "not it", "2") is False
    assert cache.pop("nope", None) is None
    with pytest.raises(KeyError):
        del cache["nope"]
    cache["tags"] = {"x": "1"}  # the same value again is still a write (a new revision)
    assert time.monotonic() - started < cache.client.timeout
    assert cache.to_dict() == BEFORE == m.to_dict()
    assert cache.revision > before


@pytest.mark.parametrize("op", ["setdefault", "replace", "pop", "delitem", "set empty"])
def test_a_write_that_changes_nothing_leaves_the_cache_as_fresh_as_its_answer(
        op: str, m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient,
        etcd_prefix: str) -> None:
    # Another client changes "a" (and drops "gone") just before this process's
    # write.  The write changes nothing, but etcd answered it at a revision
    # that includes the other change: once it returns, the cache must not
    # contradict that answer (setdefault says "new" while cache["a"] says "old").
    m.update({"a": "old", "gone": "1"})
    stall = threading.Event()

    def on_change(events: list[Event[Any]]) -> None:
        if stall.is_set():  # hold the follower up, as a busy process would
            stall.clear()
            time.sleep(0.3)

    cache = caches(m, on_change=on_change)
    stall.set()
    etcd_client.put(f"{etcd_prefix}/stall", "1")
    etcd_client.delete_range(f"{etcd_prefix}/gone")
    etcd_client.put(f"{etcd_prefix}/a", "new")
    if op == "setdefault":
        assert cache.setdefault("a", "mine") == "new"
    elif op == "replace":
        assert cache.replace("a", "old", "mine") is False  # etcd holds "new"
    elif op == "pop":
        assert cache.pop("gone", None) is None
    elif op == "delitem":
        with pytest.raises(KeyError):
            del cache["gone"]
    else:
        cache["gone"] = {}
    assert (cache.get("a"), "gone" in cache) == ("new", False)


def test_many_writes_in_a_row_each_read_back(cache: CachedMapping, m: EtcdMapping) -> None:
    for i in range(30):
        cache[f"k/{i % 7}"] = str(i)
        assert cache[f"k/{i % 7}"] == str(i)
        assert cache.setdefault(f"once/{i % 3}", str(i)) == str(i % 3)
    assert cache.to_dict() == m.to_dict()


# -- writes by others: wait_for and revision -------------------------------------------


def test_a_put_by_another_client_shows_after_wait_for_its_revision(
        cache: CachedMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    rev = etcd_client.put(f"{etcd_prefix}/db/user", "admin").revision
    assert cache.wait_for(rev, WAIT)
    assert cache["db/user"] == "admin"
    assert cache.revision >= rev
    rev = etcd_client.delete_range(f"{etcd_prefix}/db/", prefix=True).revision
    assert cache.wait_for(rev, WAIT)
    assert "db" not in cache and "db/host" not in cache
    assert cache.get("db") is None


def test_writes_by_an_uncached_mapping_show_after_wait_for(
        cache: CachedMapping, etcd_endpoint: str, etcd_prefix: str) -> None:
    with EtcdClient(etcd_endpoint) as other:
        writer = EtcdMapping(etcd_prefix, client=other)
        del writer["svc/a"]
        writer["db"] = {"url": "postgres://"}
        writer.update({"name": "renamed", "svc/b/url": "http://b"})
        rev = key_revision(other, f"{etcd_prefix}/name")
        assert cache.wait_for(rev, WAIT)
        assert cache.to_dict() == writer.to_dict() == {
            "name": "renamed", "db": {"url": "postgres://"}, "svc": {"b": {"url": "http://b"}}}


def test_revision_is_the_load_revision_then_advances(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    loaded = etcd_client.put(f"{etcd_prefix}/a", "1").revision
    cache = caches(m)
    assert cache.revision >= loaded
    assert cache.wait_for(cache.revision, 0)  # already there: no wait at all
    rev = etcd_client.put(f"{etcd_prefix}/a", "2").revision
    assert cache.wait_for(rev, WAIT)
    assert cache.revision >= rev and cache["a"] == "2"
    cache["b"] = "3"
    assert cache.revision >= key_revision(etcd_client, f"{etcd_prefix}/b") > rev
    tree, at = cache.snapshot()
    assert tree == {"a": "2", "b": "3"} and at == cache.revision


def test_wait_for_a_future_revision_times_out(cache: CachedMapping) -> None:
    started = time.monotonic()
    assert cache.wait_for(cache.revision + 1000, timeout=0.3) is False
    assert 0.25 <= time.monotonic() - started < 3


def test_wait_for_blocks_until_the_revision_arrives(
        cache: CachedMapping, etcd_endpoint: str, etcd_prefix: str) -> None:
    # The put is made only once the waiter is blocked inside wait_for, and the
    # waiter records what the cache shows the moment wait_for returns.
    target = cache.revision + 1
    returned: list[tuple[bool, Any]] = []

    def wait() -> None:
        ok = cache.wait_for(target, WAIT)
        returned.append((ok, cache.get("late")))

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        wait_until(lambda: blocked_in(waiter, CachedMapping.wait_for) or not waiter.is_alive(),
                   WAIT, "waiting")
        assert not returned, f"wait_for returned before revision {target} existed: {returned}"
        assert "late" not in cache
        with EtcdClient(etcd_endpoint) as other:
            written = other.put(f"{etcd_prefix}/late", "1").revision
    finally:
        waiter.join(WAIT + 5)
    assert written == target
    assert returned == [(True, "1")]


def test_wait_for_a_revision_that_changed_nothing_under_the_prefix(
        cache: CachedMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    # The cache reflects every revision up to now, whatever changed elsewhere;
    # "wait until the cache is as fresh as etcd is now" is wait_for(current revision).
    rev = etcd_client.put(f"{etcd_prefix}-elsewhere/k", "v").revision
    assert cache.wait_for(rev, timeout=3), (
        f"the cache is at {cache.revision}: nothing under its prefix changed up to {rev}")


# -- on_change ------------------------------------------------------------------------


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait until ``check()``: on_change runs on the cache's thread, after wait_for returns."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_on_change_must_be_callable_and_getitems_takes_keys(
        m: EtcdMapping, cache: CachedMapping) -> None:
    with pytest.raises(TypeError, match="on_change must be callable"):
        m.cached(on_change=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable of keys"):
        cache.getitems("ab")


def test_on_change_gets_relative_keys_and_decoded_values(
        etcd_client: EtcdClient, etcd_prefix: str, caches: OpenCache) -> None:
    jm = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    jm["cfg/n"] = 1
    calls: list[list[Event[Any]]] = []
    cache = caches(jm, on_change=calls.append)
    etcd_client.put(f"{etcd_prefix}/cfg/n", "2")
    etcd_client.put(f"{etcd_prefix}/flag", "true")
    rev = etcd_client.delete_range(f"{etcd_prefix}/cfg/n").revision
    assert cache.wait_for(rev, WAIT)
    eventually(lambda: sum(map(len, calls)) >= 3, "on_change was not called for every event")
    events = [e for batch in calls for e in batch]
    assert [(e.type, e.key, e.value, e.prev_value) for e in events] == [
        ("PUT", "cfg/n", 2, 1),
        ("PUT", "flag", True, None),
        ("DELETE", "cfg/n", None, 2),
    ]
    assert [e.revision for e in events] == [rev - 2, rev - 1, rev]
    assert cache.to_dict() == {"flag": True}


def test_on_change_runs_after_its_events_are_applied(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    # What the callback sees of the cache, per call: its events, the cache's
    # revision and contents.  It runs on the cache's only applying thread, so
    # the cache is exactly at its last event's revision.
    seen: list[tuple[list[Event[Any]], int, dict[str, Any]]] = []
    holder: list[CachedMapping] = []

    def on_change(events: list[Event[Any]]) -> None:
        c = holder[0]
        seen.append((events, c.revision, c.to_dict()))

    m["a"] = "0"
    holder.append(caches(m, on_change=on_change))
    cache = holder[0]
    cache["a"] = "1"  # the cache's own write
    r1 = key_revision(etcd_client, f"{etcd_prefix}/a")
    r2 = etcd_client.put(f"{etcd_prefix}/b/c", "2").revision  # another client's
    r3 = etcd_client.delete_range(f"{etcd_prefix}/a").revision
    assert cache.wait_for(r3, WAIT)
    states = {r1: {"a": "1"}, r2: {"a": "1", "b": {"c": "2"}}, r3: {"b": {"c": "2"}}}
    eventually(lambda: sum(len(s[0]) for s in seen) >= 3, "on_change missed events")
    assert sorted(e.revision for s in seen for e in s[0]) == [r1, r2, r3]
    for events, revision, shown in seen:
        assert revision == max(e.revision for e in events)
        assert shown == states[revision]


def test_on_change_gets_a_transaction_as_one_call(
        m: EtcdMapping, caches: OpenCache) -> None:
    m["db"] = {"host": "h", "port": "1"}
    calls: list[list[Event[Any]]] = []
    cache = caches(m, on_change=calls.append)
    cache["db"] = "leaf"  # deletes two keys and puts one, in one txn
    after = m.client.put(f"{m.prefix}later", "x").revision
    eventually(lambda: len(calls) >= 2, "on_change was not called twice")
    # The txn was one call, and the next call is already the next write's.
    assert sorted((e.type, e.key) for e in calls[0]) == [
        ("DELETE", "db/host"), ("DELETE", "db/port"), ("PUT", "db")]
    assert len({e.revision for e in calls[0]}) == 1
    assert [(e.key, e.revision) for e in calls[1]] == [("later", after)]
    assert len(calls) == 2


def test_a_failing_on_change_does_not_stop_the_cache(
        m: EtcdMapping, caches: OpenCache, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def on_change(events: list[Event[Any]]) -> None:
        calls.append(len(events))
        raise RuntimeError("callback bug")

    cache = caches(m, on_change=on_change)
    with caplog.at_level(logging.ERROR, logger="etcdmap.cache"):
        cache["a"] = "1"
        cache["b"] = "2"
        eventually(lambda: len(calls) == 2, "on_change was not called for the second write")
    assert cache.to_dict() == {"a": "1", "b": "2"}
    assert "on_change callback failed" in caplog.text


# -- the leaf and prefix rule ------------------------------------------------------------

# Raw etcd operations (put or delete, by relative key) that other tools may do.
LAYOUTS: dict[str, list[tuple[str, str | None]]] = {
    "leaf then subtree": [("x", "leaf"), ("x/y", "sub"), ("x.z", "beside")],
    "subtree then leaf": [("x/y", "sub"), ("x.z", "beside"), ("x", "leaf")],
    "leaf deleted uncovers the subtree": [("x", "leaf"), ("x/y", "sub"), ("x/w/v", "deep"),
                                          ("x", None)],
    "subtree deleted under a leaf": [("x", "leaf"), ("x/y", "sub"), ("x/y", None)],
    "leaf and subtree both deleted": [("x", "leaf"), ("x/y", "sub"), ("x/y", None), ("x", None)],
    "nested leaf over a subtree": [("a/x/y", "sub"), ("a/x", "leaf"), ("a/b", "1")],
    "leaf comes back": [("x", "leaf"), ("x/y", "sub"), ("x", None), ("x", "again")],
    "deep subtree emptied then refilled": [("a/b/c", "1"), ("a/b/c", None), ("a/b/d", "2")],
    "deep subtree emptied under a sibling": [("a/b/c", "1"), ("a/e", "1"), ("a/b/c", None),
                                             ("a/b/d", "2")],
    "keys with empty segments": [("/a", "1"), ("b//c", "2"), ("d/", "3"), ("ok", "4")],
}


def _apply_raw(client: EtcdClient, prefix: str, ops: list[tuple[str, str | None]]) -> int:
    rev = 0
    for key, value in ops:
        full = f"{prefix}/{key}"
        rev = (client.delete_range(full) if value is None else client.put(full, value)).revision
    return rev


@pytest.mark.parametrize("how", ["loaded", "watched"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_cache_shows_what_the_mapping_shows(
        layout: str, how: str, m: EtcdMapping, caches: OpenCache,
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    if how == "loaded":
        _apply_raw(etcd_client, etcd_prefix, LAYOUTS[layout])
        cache = caches(m)
    else:
        cache = caches(m)
        assert cache.wait_for(_apply_raw(etcd_client, etcd_prefix, LAYOUTS[layout]), WAIT)
    expected = m.to_dict()
    assert cache.to_dict() == expected
    assert cache == expected
    assert sorted(cache) == sorted(m)
    assert len(cache) == len(m)
    for name in expected:
        assert cache[name] == m[name], name


def test_the_leaf_wins_and_its_deletion_uncovers_the_subtree(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    cache = caches(m)
    etcd_client.put(f"{etcd_prefix}/x/y", "sub")
    rev = etcd_client.put(f"{etcd_prefix}/x", "leaf").revision
    assert cache.wait_for(rev, WAIT)
    assert cache["x"] == "leaf" and list(cache) == ["x"] and len(cache) == 1
    rev = etcd_client.put(f"{etcd_prefix}/x/w", "hidden").revision  # while the leaf hides it
    assert cache.wait_for(rev, WAIT)
    assert cache.to_dict() == {"x": "leaf"}
    rev = etcd_client.delete_range(f"{etcd_prefix}/x").revision
    assert cache.wait_for(rev, WAIT)
    x = cache["x"]
    assert isinstance(x, CachedMapping)
    assert x == {"y": "sub", "w": "hidden"} == m["x"].to_dict()
    assert cache["x/w"] == "hidden"


def test_a_path_key_under_a_leaf_reads_like_the_mapping(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(f"{etcd_prefix}/x", "leaf")
    etcd_client.put(f"{etcd_prefix}/x/y", "sub")
    cache = caches(m)
    assert m["x"] == cache["x"] == "leaf"
    assert m["x/y"] == "sub" and "x/y" in m  # the mapping reaches the subtree by path
    assert ("x/y" in cache, cache.get("x/y")) == (True, "sub")


def test_pop_of_a_leaf_over_a_subtree_removes_both(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(f"{etcd_prefix}/x", "leaf")
    etcd_client.put(f"{etcd_prefix}/x/y", "sub")
    etcd_client.put(f"{etcd_prefix}/z", "1")
    cache = caches(m)
    assert cache.pop("x") == "leaf"
    assert cache.to_dict() == {"z": "1"} == m.to_dict()
    assert etcd_client.range(f"{etcd_prefix}/x", prefix=True).kvs == ()


# -- compaction -----------------------------------------------------------------------------


def test_the_cache_keeps_following_after_a_compaction(
        cache: CachedMapping, m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    cache["before"] = "1"
    etcd_client.compact(etcd_client.status().revision)
    etcd_client.put(f"{etcd_prefix}/after", "2")
    rev = etcd_client.delete_range(f"{etcd_prefix}/name").revision
    assert cache.wait_for(rev, WAIT)
    cache["mine"] = "3"
    assert cache.to_dict() == m.to_dict()
    assert cache["after"] == "2" and "name" not in cache and cache["mine"] == "3"


@contextlib.contextmanager
def behind_a_compaction(caplog: pytest.LogCaptureFixture, **cache_kw: Any,
                        ) -> Iterator[tuple[CachedMapping, EtcdMapping, Callable[[], int]]]:
    """A cache that falls behind a compaction: ``(cache, truth, partition_and_compact)``.

    The cache reaches its own etcd through a relay.  ``partition_and_compact()``
    cuts the relay, changes the tree through another client, compacts past the
    cache's revision and heals the relay; it returns the compacted revision.  The
    cache's watch then resumes from a compacted revision, so its follower gets
    ``EtcdCompacted`` and must reload.
    """
    with EtcdServer() as server, contextlib.closing(Relay(server.endpoint)) as relay, \
            EtcdClient(relay.endpoint, timeout=2) as through_relay, \
            EtcdClient(server.endpoint) as direct:
        truth = EtcdMapping("app", client=direct)
        truth.update({"keep": "1", "change": "old", "drop": "x", "dir": {"a": "1", "b": "2"}})
        cache = EtcdMapping("app", client=through_relay).cached(**cache_kw)
        try:
            cache["seen"] = "live"  # the watch works through the relay

            def partition_and_compact() -> int:
                resumes_after = cache.revision
                relay.cut()
                truth.update({"change": "new", "added": "1", "dir/c": "3"})
                del truth["drop"]
                del truth["dir/a"]
                for i in range(5):
                    truth["churn"] = str(i)
                compacted = direct.status().revision
                direct.compact(compacted)
                assert compacted > resumes_after + 1
                deadline = time.monotonic() + WAIT
                while relay.refused == 0:  # the watch has tried, and failed, to resume
                    assert time.monotonic() < deadline, "the cache's watch never reconnected"
                    time.sleep(0.02)
                relay.heal()
                return compacted

            with caplog.at_level(logging.WARNING, logger="etcdmap.cache"):
                yield cache, truth, partition_and_compact
        finally:
            cache.close()


def test_a_cache_behind_a_compaction_resyncs(caplog: pytest.LogCaptureFixture) -> None:
    with behind_a_compaction(caplog) as (cache, truth, partition_and_compact):
        compacted = partition_and_compact()
        assert cache.wait_for(compacted, 3 * WAIT)
        assert "fell behind compaction" in caplog.text  # it did take the resync path
        assert cache.to_dict() == truth.to_dict() == {
            "keep": "1", "change": "new", "added": "1", "churn": "4", "seen": "live",
            "dir": {"b": "2", "c": "3"}}
        truth["later"] = "1"  # and it follows the watch again afterwards
        cache["mine"] = "2"
        assert cache["later"] == "1" and cache["mine"] == "2"
        assert cache.to_dict() == truth.to_dict()


def test_on_change_reports_what_a_resync_changed(caplog: pytest.LogCaptureFixture) -> None:
    # A consumer that keeps its own copy from on_change's events must not miss
    # the changes a resync brings in.
    replica: dict[str, Any] = {}

    def on_change(events: list[Event[Any]]) -> None:
        for e in events:
            if e.type == "PUT":
                replica[e.key] = e.value
            else:
                replica.pop(e.key, None)

    with behind_a_compaction(caplog, on_change=on_change) as (cache, truth, partition_and_compact):
        replica.update({"keep": "1", "change": "old", "drop": "x", "dir/a": "1", "dir/b": "2",
                        "seen": "live"})
        compacted = partition_and_compact()
        assert cache.wait_for(compacted, 3 * WAIT)
        assert "fell behind compaction" in caplog.text
        flat = dict(_flatten(cache.to_dict()))
        assert flat == dict(_flatten(truth.to_dict()))
        assert replica == flat, "on_change was not told what the resync changed"


def _flatten(tree: dict[str, Any], base: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{base}{k}/")
        else:
            yield f"{base}{k}", v


# -- member failover --------------------------------------------------------------------


@pytest.mark.cluster
def test_the_cache_follows_through_the_loss_of_its_member_and_leader() -> None:
    with EtcdCluster(3) as cluster:
        leader = cluster.leader_index()
        others = [cluster.endpoints[i] for i in range(3) if i != leader]
        # The cache talks to the leader first: its load and its watch go there.
        with EtcdClient([cluster.endpoints[leader], *others]) as cache_client, \
                EtcdClient(others) as writer_client:
            writer = EtcdMapping("app", client=writer_client)
            writer.update({"a": "0", "db": {"host": "h"}})
            cache = EtcdMapping("app", client=cache_client).cached()
            try:
                cache["b"] = "1"
                assert cache_client.endpoints[0] == cluster.endpoints[leader]
                stop = threading.Event()
                after_kill: list[int] = []
                killed = threading.Event()

                def keep_writing() -> None:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            writer[f"k/{i % 10}"] = str(i)
                        except EtcdError:
                            continue  # an election in progress: try again
                        if killed.is_set():
                            after_kill.append(i)
                        time.sleep(0.01)

                thread = threading.Thread(target=keep_writing)
                thread.start()
                try:
                    time.sleep(0.3)
                    cluster.kill(leader)
                    killed.set()
                    cluster.wait_for_leader(timeout=20, exclude=leader)
                    deadline = time.monotonic() + 20
                    while len(after_kill) < 20 and time.monotonic() < deadline:
                        time.sleep(0.05)
                finally:
                    stop.set()
                    thread.join()
                assert len(after_kill) >= 20, "the writer could not write after the failover"
                rev = writer_client.put("app/last", "1").revision
                assert cache.wait_for(rev, 3 * WAIT)
                assert cache.to_dict() == writer.to_dict()
                assert cache["k"] == writer["k"].to_dict() and len(cache["k"]) == 10
                cache["after"] = "failover"  # read-your-writes through a surviving member
                assert cache["after"] == "failover" == writer["after"]
            finally:
                cache.close()


# -- fork -------------------------------------------------------------------------------

CHILD_FAILURES = {
    10: "the child's cache lost the data loaded before the fork",
    11: "the child's cache never saw the parent's write after the fork",
    12: "the child's own write was not visible when it returned",
    13: "the child has no cache thread",
    14: "the child raised (traceback on stderr)",
    15: "the child's close() left threads behind",
}


def _in_the_child(cache: CachedMapping) -> int:
    try:
        if cache.get("before") != "1":
            return 10
        deadline = time.monotonic() + WAIT
        while cache.get("parent") != "after fork":  # only the child's own watch can bring it
            if time.monotonic() > deadline:
                return 11
            time.sleep(0.01)
        if not any(t.name == "etcdmap-cache" for t in cache_threads()):
            return 13
        cache["child"] = "from the child"
        if cache.get("child") != "from the child":
            return 12
        running = cache_threads()
        cache.close()
        if len(running - cache_threads()) != 2:  # this cache's follower and its watch
            return 15
        return 0
    except BaseException:
        traceback.print_exc()
        return 14


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+ warns about threads
def test_a_forked_child_reads_and_writes_through_its_own_copy(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["before"] = "1"
    cache = caches(m)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 14
        try:
            code = _in_the_child(cache)
        finally:
            os._exit(code)
    try:
        cache["parent"] = "after fork"
        deadline = time.monotonic() + 3 * WAIT
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the forked child hangs"
            time.sleep(0.02)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    code = os.waitstatus_to_exitcode(done[1])
    assert code == 0, CHILD_FAILURES.get(code, f"child exit status {code}")
    assert cache.wait_for(key_revision(etcd_client, f"{etcd_prefix}/child"), WAIT)
    assert cache["child"] == "from the child"
    cache["parent2"] = "still works"
    assert cache.to_dict() == m.to_dict() == {
        "before": "1", "parent": "after fork", "child": "from the child", "parent2": "still works"}


# -- close ------------------------------------------------------------------------------


def test_close_ends_the_cache_threads(m: EtcdMapping) -> None:
    before = cache_threads()
    cache = m.cached()
    try:
        cache["a"] = "1"  # read-your-writes: the watch is running now
        mine = cache_threads() - before
        assert {t.name for t in mine} == set(CACHE_THREADS)
    finally:
        cache.close()
    deadline = time.monotonic() + 2
    while any(t.is_alive() for t in mine) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [t for t in mine if t.is_alive()]
    cache.close()  # twice is fine


def test_a_with_block_closes_the_cache(m: EtcdMapping) -> None:
    before = cache_threads()
    with m.cached() as cache:
        cache["a"] = "1"
        mine = cache_threads() - before
        assert mine
    for t in mine:
        t.join(2)
    assert not [t for t in mine if t.is_alive()]


def test_a_closed_cache_stops_following(cache: CachedMapping, etcd_client: EtcdClient,
                                        etcd_prefix: str) -> None:
    cache.close()
    rev = etcd_client.put(f"{etcd_prefix}/after-close", "1").revision
    assert cache.wait_for(rev, timeout=0.5) is False
    assert "after-close" not in cache and cache["name"] == "app"  # still readable


def test_a_cache_made_from_endpoints_works_and_closes(etcd_endpoint: str, etcd_prefix: str) -> None:
    before = cache_threads()
    cache = CachedMapping(etcd_prefix, endpoints=etcd_endpoint)
    cache["a"] = "1"
    assert cache["a"] == "1"
    cache.close()
    for t in cache_threads() - before:
        t.join(2)
    assert not cache_threads() - before


# -- threads --------------------------------------------------------------------------------


@contextlib.contextmanager
def fast_thread_switches() -> Iterator[None]:
    """Switch threads every few microseconds, so races show up in a short test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _race_readers(n: int, read: Callable[[], Any], writes: Callable[[], None],
                  ) -> tuple[list[BaseException], list[Any]]:
    """Run ``read`` in ``n`` threads in a loop while ``writes()`` runs; errors and results."""
    stop = threading.Event()
    errors: list[BaseException] = []
    results: list[Any] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                results.append(read())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        writes()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return errors, results


def test_multi_key_reads_see_whole_revisions_while_a_writer_updates(
        m: EtcdMapping, caches: OpenCache) -> None:
    cache = caches(m)
    cache.update({"a": "0", "b": "0", "t": "0"})
    last_revision = threading.local()

    def read() -> str:
        tree, revision = cache.snapshot()
        assert revision >= getattr(last_revision, "value", 0)
        last_revision.value = revision
        assert tree["a"] == tree["b"], tree
        assert tree["t"] in (tree["a"], {"v": tree["a"]}), tree
        items = dict(cache.items())
        assert items["a"] == items["b"] and set(items) == {"a", "b", "t"}
        assert sorted(cache) == ["a", "b", "t"]
        json.dumps(cache)
        return str(tree["a"])

    def writes() -> None:
        for i in range(1, 101):
            cache.update({"a": str(i), "b": str(i), "t": str(i) if i % 2 else {"v": str(i)}})

    with fast_thread_switches():
        errors, seen = _race_readers(4, read, writes)
    assert not errors, errors[0]
    assert len(set(seen)) > 10, "the readers did not overlap the writes"
    assert cache.to_dict() == m.to_dict() == {"a": "100", "b": "100", "t": {"v": "100"}}


def test_single_key_reads_never_see_a_key_missing_mid_revision(
        m: EtcdMapping, caches: OpenCache) -> None:
    # "t" exists at every revision: each write replaces a leaf by a subtree (or
    # back) in one transaction.  Reads must never find it, or the count, missing.
    cache = caches(m)
    cache.update({"a": "0", "t": "0"})

    def read() -> tuple[bool, int, bool]:
        try:
            cache["t"]
            found = True
        except KeyError:
            found = False
        return found, len(cache), "t" in cache

    def writes() -> None:
        for i in range(1, 101):
            cache["t"] = {"v": str(i)} if i % 2 else str(i)

    with fast_thread_switches():
        errors, seen = _race_readers(2, read, writes)
    assert not errors, errors[0]
    gaps = [s for s in seen if s != (True, 2, True)]
    assert not gaps, f"{len(gaps)} of {len(seen)} reads saw a half-applied revision: {gaps[:3]}"
