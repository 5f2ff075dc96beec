"""Data is never lost and answers are never wrong (issue 10), against a real etcd.

Content that other tools wrote (values a codec cannot read, keys that are not
UTF-8), codecs that fail, bad arguments, copies, pickles and the rest of the
dict protocol.  ``etcd_client`` plays the other tool: it writes raw bytes.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import threading
from typing import Any

import pytest
from helpers import collect

from etcdmap import EtcdClient, EtcdCodecError, EtcdMapping

RANGE = "/v3/kv/range"
NOT_JSON = b"{not json"
DEEP = "[" * 1000 + "]" * 1000  # json.loads raises RecursionError on it


def raw(client: EtcdClient, prefix: str) -> list[tuple[bytes, bytes, int, int, int]]:
    """Every key under ``prefix`` as etcd stores it, revisions included."""
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
            for kv in client.range(f"{prefix}/", prefix=True).kvs]


# -- 1. a pop that raises leaves etcd as it was -----------------------------------------

BAD_VALUES = {"str": b"\xff\xfe", "json": NOT_JSON}


def assert_pop_deletes_nothing(m: EtcdMapping, name: str, bad_key: str,
                               client: EtcdClient) -> None:
    """``m.pop(name)``, with or without a default, names ``bad_key`` and changes nothing."""
    before = raw(client, m.prefix)
    with pytest.raises(EtcdCodecError) as raised:
        m.pop(name)
    assert raised.value.key == bad_key
    assert raw(client, m.prefix) == before
    with pytest.raises(EtcdCodecError):
        m.pop(name, "default")  # a default is for an absent key, not a bad one
    assert raw(client, m.prefix) == before


@pytest.mark.parametrize("codec", list(BAD_VALUES))
def test_a_pop_that_cannot_decode_the_subtree_deletes_nothing(
        codec: str, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=codec)
    m["cfg"] = {"a": "1"}
    m["other"] = "o"
    etcd_client.put(f"{etcd_prefix}/cfg/bin".encode(), BAD_VALUES[codec])
    assert_pop_deletes_nothing(m, "cfg", f"{etcd_prefix}/cfg/bin", etcd_client)


@pytest.mark.parametrize("codec", list(BAD_VALUES))
def test_a_pop_that_cannot_decode_the_leaf_deletes_nothing(
        codec: str, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=codec)
    etcd_client.put(f"{etcd_prefix}/leaf".encode(), BAD_VALUES[codec])
    m["leaf/under"] = "1"  # clears the leaf ancestor: put it back by hand
    etcd_client.put(f"{etcd_prefix}/leaf".encode(), BAD_VALUES[codec])
    assert_pop_deletes_nothing(m, "leaf", f"{etcd_prefix}/leaf", etcd_client)


@pytest.mark.parametrize("codec", list(BAD_VALUES))
def test_a_popitem_that_cannot_decode_deletes_nothing(
        codec: str, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=codec)
    m["cfg"] = {"a": "1", "b": "2"}
    etcd_client.put(f"{etcd_prefix}/cfg/bin".encode(), BAD_VALUES[codec])
    before = raw(etcd_client, etcd_prefix)
    with pytest.raises(EtcdCodecError) as raised:
        m.popitem()
    assert raised.value.key == f"{etcd_prefix}/cfg/bin"
    assert raw(etcd_client, etcd_prefix) == before


def test_a_pop_that_succeeds_returns_the_value_and_removes_leaf_and_subtree(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"tree": {"a": "1", "b": {"c": "2"}}, "other": "o"})
    etcd_client.put(f"{etcd_prefix}/both/x", "under")  # other tools store both
    etcd_client.put(f"{etcd_prefix}/both", "leaf")
    assert m.pop("tree") == {"a": "1", "b": {"c": "2"}}
    assert m.pop("both") == "leaf"  # the leaf wins, and both go
    assert [k for k, *_ in raw(etcd_client, etcd_prefix)] == [f"{etcd_prefix}/other".encode()]
    assert m.popitem() == ("other", "o")
    assert raw(etcd_client, etcd_prefix) == []


def test_two_clients_popping_the_same_key_one_gets_it(
        etcd_endpoint: str, etcd_prefix: str) -> None:
    with EtcdClient(etcd_endpoint) as c1, EtcdClient(etcd_endpoint) as c2:
        mappings = [EtcdMapping(etcd_prefix, client=c) for c in (c1, c2)]
        for round_ in range(20):
            mappings[0]["k"] = {"v": str(round_), "w": "x"}
            got = _race(*[lambda m=m: m.pop("k", None) for m in mappings])
            assert sorted(got, key=repr) == [None, {"v": str(round_), "w": "x"}], got
            assert "k" not in mappings[0]


def _race(*calls: Any) -> list[Any]:
    """The results of ``calls``, each run in its own thread, all let go at once."""
    start = threading.Barrier(len(calls), timeout=10)
    got: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        got[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    return got


# -- 3. keys that are not UTF-8 -------------------------------------------------------------


@pytest.fixture
def foreign(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    """A mapping holding keys other tools wrote that are not UTF-8."""
    base = f"{etcd_prefix}/".encode()
    etcd_client.put(base + b"\xff", b"v")
    etcd_client.put(base + b"d\xfe/x", b"1")
    etcd_client.put(base + b"ok", b"fine")
    return EtcdMapping(etcd_prefix, client=etcd_client)


def test_every_name_iteration_yields_reads_back(foreign: EtcdMapping) -> None:
    names = list(foreign)
    assert sorted(names) == sorted(["\udcff", "d\udcfe", "ok"])
    for name in names:
        assert name in foreign
        assert foreign.get(name) is not None
        assert foreign[name] is not None
    assert foreign["\udcff"] == "v"
    assert foreign["d\udcfe"]["x"] == "1"
    assert foreign.to_dict() == {"\udcff": "v", "d\udcfe": {"x": "1"}, "ok": "fine"}
    plain = dict(foreign)
    assert plain["\udcff"] == "v" and plain["ok"] == "fine"
    assert plain["d\udcfe"].to_dict() == {"x": "1"}


def test_every_name_iteration_yields_can_be_deleted_and_popped(
        foreign: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    assert foreign.pop("\udcff") == "v"
    del foreign["d\udcfe"]
    assert list(foreign) == ["ok"]
    assert [kv.key for kv in etcd_client.range(f"{etcd_prefix}/", prefix=True).kvs] == [
        f"{etcd_prefix}/ok".encode()]
    foreign["\udcff"] = "again"  # and written back to the same raw key
    assert etcd_client.range(f"{etcd_prefix}/".encode() + b"\xff").kvs[0].value == b"again"


@pytest.mark.timeout(20)
def test_popitem_empties_a_mapping_of_foreign_keys_and_then_raises(
        foreign: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    popped = dict(foreign.popitem() for _ in range(3))
    assert popped == {"\udcff": "v", "d\udcfe": {"x": "1"}, "ok": "fine"}
    with pytest.raises(KeyError):
        foreign.popitem()
    assert raw(etcd_client, etcd_prefix) == []


# -- 4. whatever a codec raises is EtcdCodecError naming the key ------------------------------


class DecodeFails:
    """A custom codec whose decode divides by zero."""

    def encode(self, value: Any) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> Any:
        return 1 / 0


class EncodeFails:
    """A custom codec whose encode raises ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def encode(self, value: Any) -> bytes:
        raise self.error("cannot")

    def decode(self, data: bytes) -> Any:
        return data.decode()


def test_absurdly_nested_json_is_a_codec_error_naming_the_key(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    etcd_client.put(f"{etcd_prefix}/deep", DEEP)
    for read in (lambda: m["deep"], lambda: m.get("deep"), m.to_dict, lambda: dict(m.items())):
        with pytest.raises(EtcdCodecError) as raised:
            read()
        assert raised.value.key == f"{etcd_prefix}/deep"
        assert f"{etcd_prefix}/deep" in str(raised.value)


def test_a_custom_codec_that_cannot_decode_raises_a_codec_error_naming_the_key(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=DecodeFails())
    m["k"] = "v"
    with pytest.raises(EtcdCodecError) as raised:
        m.get("k")
    assert raised.value.key == f"{etcd_prefix}/k"
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert etcd_client.range(f"{etcd_prefix}/k").kvs[0].value == b"v"


def test_a_custom_codec_that_cannot_encode_raises_a_codec_error_and_writes_nothing(
        etcd_client: EtcdClient, etcd_prefix: str, http_log: list[str]) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=EncodeFails(RuntimeError))
    for write in (lambda: m.__setitem__("k", "v"), lambda: m.update({"a": "1", "b": "2"}),
                  lambda: m.setdefault("k", "v")):
        with pytest.raises(EtcdCodecError) as raised:
            write()
        assert raised.value.key in (f"{etcd_prefix}/k", f"{etcd_prefix}/a")
        assert isinstance(raised.value.__cause__, RuntimeError)
    assert http_log == []  # refused before anything was sent
    assert raw(etcd_client, etcd_prefix) == []


def test_a_type_error_from_a_custom_codec_passes_through_and_writes_nothing(
        etcd_client: EtcdClient, etcd_prefix: str, http_log: list[str]) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=EncodeFails(TypeError))
    with pytest.raises(TypeError) as raised:
        m["k"] = "v"
    assert type(raised.value) is TypeError and str(raised.value) == "cannot"
    with pytest.raises(TypeError):
        m.update({"a": "1"})
    assert http_log == []
    assert raw(etcd_client, etcd_prefix) == []


@pytest.mark.parametrize("bad", [DEEP.encode(), NOT_JSON], ids=["deep", "not-json"])
def test_a_bad_value_arrives_as_bytes_and_the_watch_goes_on(
        bad: bytes, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    with m.watch() as watcher:
        etcd_client.put(f"{etcd_prefix}/bad".encode(), bad)
        m["good"] = {"x": 1}
        m["after"] = [1, 2]
        events = collect(watcher, 3)
    assert [(e.key, e.value) for e in events] == [
        ("bad", bad), ("good/x", 1), ("after", [1, 2])]


def test_a_custom_codec_failure_never_ends_a_watch(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=DecodeFails())
    with m.watch() as watcher:
        m["a"] = "1"
        m["b"] = "2"
        events = collect(watcher, 2)
    assert [(e.key, e.value) for e in events] == [("a", b"1"), ("b", b"2")]


# -- 17. arguments are checked when given ------------------------------------------------


@pytest.mark.parametrize("name", ["timeout", "retry_deadline"])
@pytest.mark.parametrize(("value", "error"), [
    (float("inf"), ValueError), (float("nan"), ValueError), (-1, ValueError),
    ("5", TypeError), (True, TypeError)])
def test_client_seconds_are_checked_and_named(name: str, value: Any, error: type[Exception],
                                              etcd_endpoint: str) -> None:
    with pytest.raises(error, match=name):
        EtcdClient(etcd_endpoint, **{name: value})


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-3, ValueError),
                                              ("128", TypeError)])
def test_max_txn_ops_is_checked_and_named(value: Any, error: type[Exception],
                                          etcd_endpoint: str) -> None:
    with pytest.raises(error, match="max_txn_ops"):
        EtcdClient(etcd_endpoint, max_txn_ops=value)


@pytest.mark.parametrize(("kwargs", "error", "named"), [
    ({"sep": 1}, TypeError, "sep"),
    ({"prefix": 5}, TypeError, "prefix"),
    ({"page_size": 0}, ValueError, "page_size"),
    ({"page_size": "10"}, TypeError, "page_size"),
    ({"client": "x"}, TypeError, "client"),
    ({"codec": 5}, TypeError, "codec"),
])
def test_mapping_arguments_are_checked_and_named(kwargs: dict[str, Any], error: type[Exception],
                                                 named: str, etcd_client: EtcdClient,
                                                 http_log: list[str]) -> None:
    args: dict[str, Any] = {"prefix": "app", "client": etcd_client, **kwargs}
    with pytest.raises(error, match=named):
        EtcdMapping(args.pop("prefix"), **args)
    assert http_log == []


# -- 18. copies and pickles ----------------------------------------------------------------


@pytest.fixture
def m(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"name": "app", "db": {"host": "h", "port": "5432"}})
    return m


TREE = {"name": "app", "db": {"host": "h", "port": "5432"}}


@pytest.mark.parametrize("take", [copy.copy, copy.deepcopy, lambda m: m.copy()],
                         ids=["copy.copy", "copy.deepcopy", "m.copy"])
def test_a_copy_is_a_plain_dict_snapshot(take: Any, m: EtcdMapping) -> None:
    snap = take(m)
    assert type(snap) is dict and type(snap["db"]) is dict
    assert snap == TREE
    snap["name"] = "changed"
    snap["db"]["host"] = "changed"
    snap["new"] = "x"
    assert m.to_dict() == TREE  # changing the copy changed nothing in etcd
    m["name"] = "later"
    assert snap["name"] == "changed"  # and etcd's changes don't reach it


def test_a_pickled_mapping_is_an_equal_view_with_a_client_of_its_own(m: EtcdMapping) -> None:
    other = pickle.loads(pickle.dumps(m))
    assert isinstance(other, EtcdMapping) and other.prefix == m.prefix
    assert other == m and other.client is not m.client
    other["written"] = "there"
    assert m["written"] == "there"
    other.close()
    assert m["name"] == "app"  # closing the copy's client leaves ours open


def test_a_pickled_ttl_view_still_writes_with_a_ttl(m: EtcdMapping) -> None:
    view = pickle.loads(pickle.dumps(m.with_ttl(60)))
    view["ttl"] = "1"
    left = m.ttl("ttl")
    assert left is not None and 0 < left <= 60
    view.close()


def test_a_pickled_client_works_and_never_carries_the_password(
        etcd_endpoint: str, etcd_prefix: str) -> None:
    with EtcdClient(etcd_endpoint, timeout=3, username="someone",
                    password="password-value") as secret:
        data = pickle.dumps(secret)
        view = pickle.dumps(EtcdMapping(etcd_prefix, client=secret))
    assert b"password-value" not in data and b"password-value" not in view
    assert b"someone" not in data and b"someone" not in view
    with EtcdClient(etcd_endpoint) as plain:
        with pickle.loads(pickle.dumps(plain)) as copied:
            copied.put(f"{etcd_prefix}/k", "v")
            assert copied.timeout == plain.timeout
        assert plain.get(f"{etcd_prefix}/k").value == "v"


def _read_in_worker(mapping: EtcdMapping, key: str) -> Any:
    with mapping:
        return mapping[key]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_spawned_worker_unpickles_a_mapping_and_reads(m: EtcdMapping) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_read_in_worker, (m, "db/host")).get(timeout=60) == "h"


def test_what_cannot_be_pickled_says_what_to_do(m: EtcdMapping) -> None:
    def refused(obj: object, what: str) -> None:
        with pytest.raises(TypeError, match="cannot be pickled") as raised:
            pickle.dumps(obj)
        assert what in str(raised.value)

    with m.lease(30) as live:
        refused(live, "lease() view")
        refused(live.current_lease, "Lease")
    with m.watch() as watcher:
        refused(watcher, "Watcher")
    with m.cached() as cache:
        cache["x"] = "1"  # returns once the follower's watch delivered it
        refused(cache, "CachedMapping")


# -- 22. the rest of the dict protocol ----------------------------------------------------


def test_fromkeys_is_dicts(m: EtcdMapping) -> None:
    made = EtcdMapping.fromkeys(["a", "b"], 1)
    assert made == {"a": 1, "b": 1} and type(made) is dict
    assert EtcdMapping.fromkeys("xy") == dict.fromkeys("xy")
    assert m.to_dict() == TREE


def test_reversed_goes_backwards_through_the_keys(m: EtcdMapping) -> None:
    m["a"] = "first"
    names = ["a", "db", "name"]
    assert list(reversed(m)) == names[::-1]
    assert list(reversed(m.keys())) == names[::-1]
    assert next(reversed(m.values())) == "app"
    assert [(k, v if isinstance(v, str) else v.to_dict()) for k, v in reversed(m.items())] == [
        ("name", "app"), ("db", {"host": "h", "port": "5432"}), ("a", "first")]


@pytest.mark.parametrize("spell", [lambda m: dict(m.items()), list, sorted, lambda m: [*m],
                                   lambda m: list(m.keys()), lambda m: list(m.items()),
                                   lambda m: list(m.values())],
                         ids=["dict(m.items())", "list(m)", "sorted(m)", "[*m]",
                              "list(m.keys())", "list(m.items())", "list(m.values())"])
def test_bulk_spellings_cost_one_range(spell: Any, m: EtcdMapping, http_log: list[str]) -> None:
    result = spell(m)
    assert len(result) == 2
    assert http_log == [RANGE]
