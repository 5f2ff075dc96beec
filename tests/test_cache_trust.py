"""The cached view under bad data, re-entrant and closed writes, and derived views (issue 10).

``m`` is a plain mapping over the test's prefix (it reads etcd itself, so it
is the reference); ``caches(m)`` opens a cache over the same prefix and closes
it after the test.  ``etcd_client`` plays another tool writing raw bytes.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from etcdmap import (
    EtcdClient,
    EtcdCodecError,
    EtcdError,
    EtcdMapping,
    EtcdWatchError,
    Event,
    errors,
)
from etcdmap.cache import CachedMapping

WAIT = 10.0  # seconds a cache may take to show a write it did not make
DEEP = "[" * 1000 + "]" * 1000  # json.loads raises RecursionError on it
OpenCache = Callable[..., CachedMapping]
READY = "ready-marker"


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A plain (uncached) str-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client)


def revision_of(client: EtcdClient, key: str | bytes) -> int:
    """The revision that last wrote ``key``."""
    return client.range(key).kvs[0].mod_revision


def raw(client: EtcdClient, prefix: str) -> list[tuple[bytes, bytes, int]]:
    return [(kv.key, kv.value, kv.mod_revision)
            for kv in client.range(f"{prefix}/", prefix=True).kvs]


def followers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "etcdmap-cache" and t.is_alive()}


# -- 4. one bad value never ends a cache ---------------------------------------------------


class DecodeFails:
    """A custom codec that cannot decode ``b"boom"`` (it divides by zero)."""

    def encode(self, value: Any) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> Any:
        return 1 / 0 if data == b"boom" else data.decode()


@pytest.mark.parametrize(("codec", "bad"), [("json", DEEP), ("json", "{not json"),
                                            ("str", b"\xff\xfe"), (DecodeFails(), "boom")],
                         ids=["json-deep", "json-invalid", "str-not-utf8", "custom-raises"])
@pytest.mark.parametrize("when", ["before the cache", "while it follows"])
def test_a_bad_value_is_kept_aside_and_the_cache_goes_on(
        codec: Any, bad: str | bytes, when: str, etcd_client: EtcdClient, etcd_prefix: str,
        caches: OpenCache) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=codec)
    m["good"] = "1" if codec != "json" else 1
    key = f"{etcd_prefix}/bad"
    if when == "before the cache":
        etcd_client.put(key, bad)
        cache = caches(m)
    else:
        cache = caches(m)
        assert cache.wait_for(etcd_client.put(key, bad).revision, WAIT)
    with pytest.raises(EtcdCodecError) as raised:
        cache["bad"]
    assert raised.value.key == key
    with pytest.raises(EtcdCodecError):
        cache.get("bad")
    assert "bad" in cache and "good" in cache
    assert cache["good"] == m["good"]
    # Later writes, through the cache and by others, still show.
    started = time.monotonic()
    cache["through"] = "2" if codec != "json" else 2
    assert time.monotonic() - started < 2, "the write waited for a dead follower"
    assert cache["through"] == m["through"]
    assert cache.wait_for(etcd_client.put(f"{etcd_prefix}/other", "3").revision, WAIT)
    assert cache["other"] == m["other"]
    # A fixed value reads again.
    fixed = etcd_client.put(key, "4").revision
    assert cache.wait_for(fixed, WAIT) and cache["bad"] == m["bad"]


class Fatal(BaseException):
    """Not an ``Exception``: nothing in the follower may swallow it."""


def test_a_dead_follower_makes_every_read_and_write_raise_its_cause_at_once(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    def on_change(events: list[Event[Any]]) -> None:
        if any(e.key == "boom" for e in events):
            raise Fatal("the callback gave up")

    m.update({"a": "1", "db": {"host": "h"}})
    before = followers()
    cache = caches(m, on_change=on_change)
    (follower,) = followers() - before
    etcd_client.put(f"{etcd_prefix}/boom", "x")
    follower.join(WAIT)
    assert not follower.is_alive()

    reads: dict[str, Callable[[], object]] = {
        "cache[k]": lambda: cache["a"], "get": lambda: cache.get("a"),
        "get(missing)": lambda: cache.get("nope"), "in": lambda: "a" in cache,
        "len": lambda: len(cache), "iter": lambda: list(cache), "to_dict": cache.to_dict,
        "items": lambda: list(cache.items()), "path": lambda: cache["db/host"],
    }
    writes: dict[str, Callable[[], object]] = {
        "cache[k] = v": lambda: cache.__setitem__("w", "1"),
        "del": lambda: cache.__delitem__("a"), "pop": lambda: cache.pop("a"),
        "update": lambda: cache.update({"w": "1"}), "with_ttl": lambda: cache.with_ttl(
            60).__setitem__("w", "1"),
    }
    before = raw(etcd_client, etcd_prefix)
    for name, call in {**reads, **writes}.items():
        started = time.monotonic()
        with pytest.raises(EtcdWatchError, match="the callback gave up"):
            call()
        assert time.monotonic() - started < 1, f"{name} waited instead of raising"
    assert raw(etcd_client, etcd_prefix) == before  # the writes were refused, not sent


# -- 5. writes through a cache ------------------------------------------------------------


def test_a_callback_that_writes_through_its_own_cache_returns_at_once(
        etcd_endpoint: str, etcd_prefix: str, caches: OpenCache) -> None:
    with EtcdClient(etcd_endpoint, timeout=5) as client:
        m = EtcdMapping(etcd_prefix, client=client)
        holder: list[CachedMapping] = []
        took: list[float] = []
        failed: list[BaseException] = []
        done = threading.Event()

        def on_change(events: list[Event[Any]]) -> None:
            if not any(e.key == "trigger" for e in events):
                return
            started = time.monotonic()
            try:
                holder[0]["echo"] = "from the callback"
            except BaseException as exc:
                failed.append(exc)
            took.append(time.monotonic() - started)
            done.set()

        holder.append(caches(m, on_change=on_change))
        cache = holder[0]
        client.put(f"{etcd_prefix}/trigger", "go")
        assert done.wait(WAIT), "the callback never finished"
        assert failed == []
        assert took[0] < 2, f"the callback's write took {took[0]:.1f} s"
        assert cache.wait_for(revision_of(client, f"{etcd_prefix}/echo"), WAIT)
        assert cache["echo"] == "from the callback" == m["echo"]
        cache["later"] = "still follows"  # the follower went on after the callback
        assert cache["later"] == "still follows"


def test_a_closed_cache_refuses_writes_before_sending_and_still_reads(
        m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient, etcd_prefix: str,
        http_log: list[str]) -> None:
    m.update({"a": "1", "db": {"host": "h"}})
    cache = caches(m)
    cache["b"] = "2"  # the follower is up
    cache.close()
    before = raw(etcd_client, etcd_prefix)
    http_log.clear()
    writes: dict[str, Callable[[], object]] = {
        "cache[k] = v": lambda: cache.__setitem__("c", "3"),
        "cache[path] = v": lambda: cache.__setitem__("db/port", "5432"),
        "del": lambda: cache.__delitem__("a"), "pop": lambda: cache.pop("a"),
        "pop(missing, default)": lambda: cache.pop("nope", None),
        "update": lambda: cache.update({"c": "3"}),
        "setdefault": lambda: cache.setdefault("c", "3"),
        "replace": lambda: cache.replace("a", "1", "x"), "clear": cache.clear,
        "with_ttl": lambda: cache.with_ttl(60).__setitem__("c", "3"),
        "submapping": lambda: cache.submapping("db").__setitem__("port", "1"),
        "node": lambda: cache["db"].__setitem__("port", "1"),
    }
    for name, write in writes.items():
        with pytest.raises(errors.EtcdClosed) as raised:
            write()
        assert isinstance(raised.value, EtcdError) and isinstance(raised.value, ValueError)
        assert http_log == [], f"{name} sent {http_log}"
    assert raw(etcd_client, etcd_prefix) == before
    http_log.clear()
    # Its last copy still answers (from memory).
    assert cache["a"] == "1" and cache["db/host"] == "h" and "b" in cache
    assert len(cache) == 3 and cache.to_dict() == {"a": "1", "b": "2", "db": {"host": "h"}}
    assert http_log == []


def test_popitem_on_a_closed_cache_is_refused_before_sending(
        m: EtcdMapping, caches: OpenCache, http_log: list[str]) -> None:
    cache = caches(m)
    cache["a"] = "1"
    cache.close()
    m.clear()  # another client emptied the prefix
    http_log.clear()
    with pytest.raises(errors.EtcdClosed):
        cache.popitem()
    assert http_log == []


# -- 20. read-your-writes through views derived from the cache --------------------------------

ROUNDS = 20


class Lagging:
    """A cache whose follower :meth:`lag` holds up for 0.2 s once."""

    def __init__(self, cache: CachedMapping, stall: threading.Event, client: EtcdClient,
                 prefix: str) -> None:
        self.cache, self._stall, self._client, self._prefix = cache, stall, client, prefix
        self._count = 0

    def lag(self) -> None:
        """Make the follower lag behind the next write."""
        self._stall.set()
        self._count += 1
        self._client.put(f"{self._prefix}/noise", str(self._count))  # it stalls on this one


@pytest.fixture
def lagging(m: EtcdMapping, caches: OpenCache, etcd_client: EtcdClient,
            etcd_prefix: str) -> Lagging:
    stall = threading.Event()

    def on_change(events: list[Event[Any]]) -> None:
        if stall.is_set():  # hold the follower up once, so it lags behind the write
            stall.clear()
            time.sleep(0.2)

    return Lagging(caches(m, on_change=on_change), stall, etcd_client, etcd_prefix)


def test_a_write_through_with_ttl_of_the_cache_shows_at_once(
        lagging: Lagging, m: EtcdMapping) -> None:
    live: CachedMapping = lagging.cache
    for n in range(ROUNDS):
        lagging.lag()
        live.with_ttl(60)[f"t{n}"] = str(n)
        assert live.get(f"t{n}") == str(n), f"stale in round {n}"
    assert live.to_dict() == m.to_dict()


def test_a_write_through_a_lease_view_of_the_cache_shows_at_once(
        lagging: Lagging, m: EtcdMapping) -> None:
    live: CachedMapping = lagging.cache
    for n in range(ROUNDS):
        with live.lease(30) as view:
            lagging.lag()
            view[f"l{n}"] = str(n)
            assert live.get(f"l{n}") == str(n), f"stale in round {n}"
    m.clear()  # the revoke at each block's end removed them, but may not show yet (see below)
    assert live.wait_for(m.client.status().revision, WAIT)
    assert live.to_dict() == m.to_dict()


def test_keys_of_a_lease_view_are_gone_from_the_cache_when_the_block_ends(
        lagging: Lagging) -> None:
    live: CachedMapping = lagging.cache
    for n in range(5):
        with live.lease(30) as view:
            view[f"l{n}"] = str(n)
            lagging.lag()  # the follower is held up while the block ends
        assert f"l{n}" not in live, f"still shown in round {n}"


def test_a_write_through_a_submapping_of_the_cache_shows_at_once(
        lagging: Lagging, m: EtcdMapping) -> None:
    live: CachedMapping = lagging.cache
    for n in range(ROUNDS):
        lagging.lag()
        live.submapping("s")[f"x{n}"] = str(n)
        assert live.get(f"s/x{n}") == str(n), f"stale in round {n}"
    assert live.to_dict() == m.to_dict()


# -- 3. keys that are not UTF-8, cached ------------------------------------------------------


@pytest.fixture
def foreign(etcd_client: EtcdClient, etcd_prefix: str, m: EtcdMapping,
            caches: OpenCache) -> CachedMapping:
    base = f"{etcd_prefix}/".encode()
    etcd_client.put(base + b"\xff", b"v")
    etcd_client.put(base + b"d\xfe/x", b"1")
    etcd_client.put(base + b"ok", b"fine")
    return caches(m)


def test_every_name_a_cache_yields_reads_back(foreign: CachedMapping) -> None:
    names = list(foreign)
    assert sorted(names) == sorted(["\udcff", "d\udcfe", "ok"])
    for name in names:
        assert name in foreign and foreign.get(name) is not None
        assert foreign[name] is not None
    assert foreign["\udcff"] == "v" and foreign["d\udcfe/x"] == "1"
    assert foreign.to_dict() == {"\udcff": "v", "d\udcfe": {"x": "1"}, "ok": "fine"}
    assert dict(foreign)["\udcff"] == "v"


@pytest.mark.timeout(20)
def test_a_cache_of_foreign_keys_deletes_pops_and_empties(
        foreign: CachedMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    assert foreign.pop("\udcff") == "v"
    assert "\udcff" not in foreign
    del foreign["d\udcfe"]
    assert list(foreign) == ["ok"]
    foreign["\udcff"] = "again"
    assert foreign["\udcff"] == "again"
    assert etcd_client.range(f"{etcd_prefix}/".encode() + b"\xff").kvs[0].value == b"again"
    assert dict(foreign.popitem() for _ in range(2)) == {"\udcff": "again", "ok": "fine"}
    with pytest.raises(KeyError):
        foreign.popitem()
    assert len(foreign) == 0 and raw(etcd_client, etcd_prefix) == []


# -- 17. odd keys on the cached view, like on the mapping -------------------------------------


def test_unhashable_and_missing_keys_behave_like_the_mapping(
        m: EtcdMapping, caches: OpenCache) -> None:
    m.update({"a": "1", "db": {"host": "h"}})
    cache = caches(m)
    for view in (m, cache):
        assert view.get([1]) is None and view.get([1], "d") == "d"  # type: ignore[arg-type]
        assert ([1] in view) is False
        assert view.get("db/nope", "d") == "d"
    for key in ("db/nope", "nope", "nope/deeper", "a/under"):
        with pytest.raises(KeyError) as raised:
            cache[key]
        assert raised.value.args == (key,), raised.value.args
        with pytest.raises(KeyError) as plain:
            m[key]
        assert plain.value.args == raised.value.args


# -- 22. the rest of the dict protocol, cached ---------------------------------------------


TREE = {"a": "first", "db": {"host": "h", "port": "5432"}, "name": "app"}


@pytest.mark.parametrize("take", [copy.copy, copy.deepcopy, lambda c: c.copy()],
                         ids=["copy.copy", "copy.deepcopy", "cache.copy"])
def test_a_copy_of_a_cache_is_a_plain_dict_snapshot(
        take: Any, m: EtcdMapping, caches: OpenCache) -> None:
    m.update(TREE)
    cache = caches(m)
    snap = take(cache)
    assert type(snap) is dict and type(snap["db"]) is dict
    assert snap == TREE
    snap["db"]["host"] = "changed"
    snap["new"] = "x"
    assert cache.to_dict() == TREE == m.to_dict()
    cache["name"] = "later"
    assert snap["name"] == "app"


def test_fromkeys_and_reversed_on_a_cache(m: EtcdMapping, caches: OpenCache) -> None:
    m.update(TREE)
    cache = caches(m)
    made = CachedMapping.fromkeys(["a", "b"], 1)
    assert made == {"a": 1, "b": 1} and type(made) is dict
    assert list(reversed(cache)) == ["name", "db", "a"] == list(reversed(m))
    assert list(reversed(cache.keys())) == ["name", "db", "a"]
    assert [v if isinstance(v, str) else v.to_dict() for v in reversed(cache.values())] == [
        "app", {"host": "h", "port": "5432"}, "first"]
    assert [k for k, _ in reversed(cache.items())] == ["name", "db", "a"]
