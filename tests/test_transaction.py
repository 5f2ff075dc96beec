"""``cfg.transaction()`` and ``cfg.atomic()``: the contract, against a real etcd.

A transaction reads one snapshot (pinned by its first read), sees its own
buffered writes, and commits them in one etcd transaction only if nothing
it read has changed since (else :class:`EtcdConflict`, nothing written).
"Another client" is a second :class:`EtcdClient` over the same prefix; each
of its writes is made between two steps of the transaction, in program
order, so every conflict here is deterministic.  ``http_log`` shows what the
transaction's own client sent (the other client's requests are not in it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import call_log_of

from etcdmap import (
    EtcdClient,
    EtcdClosed,
    EtcdConflict,
    EtcdKeyError,
    EtcdMapping,
    EtcdRequestTooLarge,
    Transaction,
)

RANGE = "/v3/kv/range"
TXN = "/v3/kv/txn"
GRANT = "/v3/lease/grant"

START = {"a": "1", "b": "2", "db": {"host": "h", "port": "5432"}, "tags": {"x": "1"}}


@pytest.fixture
def cfg(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """The mapping under test, holding ``START``."""
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update(START)
    return m


@pytest.fixture
def other(etcd_endpoint: str, etcd_prefix: str) -> Iterator[EtcdMapping]:
    """Another client's mapping over the same prefix: the concurrent writer."""
    with EtcdClient(etcd_endpoint) as client:
        yield EtcdMapping(etcd_prefix, client=client)


# -- one snapshot ------------------------------------------------------------------


def test_the_snapshot_is_pinned_by_the_first_read(cfg: EtcdMapping,
                                                  other: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        assert tx.revision == 0
        other["a"] = "before the first read"  # the snapshot is not taken yet
        assert tx["a"] == "before the first read"
        pinned = tx.revision
        assert pinned > 0
        other["b"] = "after"
        other["db/host"] = "after"
        other["new"] = "after"
        del other["tags"]
        assert tx["b"] == "2"  # never read before, still the snapshot's
        assert tx["db"]["host"] == "h"
        assert "new" not in tx and tx.get("new") is None
        assert tx["tags/x"] == "1"
        assert tx.to_dict() == {**START, "a": "before the first read"}
        assert tx.revision == pinned
    # A read-only transaction commits nothing and raises nothing.
    assert cfg.to_dict() == {"a": "before the first read", "b": "after",
                             "db": {"host": "after", "port": "5432"}, "new": "after"}


@pytest.mark.parametrize("change", ["modified", "deleted", "rewritten with the same value"])
def test_a_key_read_and_changed_meanwhile_is_a_conflict_and_nothing_is_written(
        cfg: EtcdMapping, other: EtcdMapping, change: str) -> None:
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        assert tx["a"] == "1"
        if change == "modified":
            other["a"] = "changed"
        elif change == "deleted":
            del other["a"]
        else:
            other["a"] = "1"
        tx["b"] = "written by the transaction"
        tx["fresh"] = "also"
        del tx["db"]
    expected = {**START, "a": "changed"} if change == "modified" else dict(START)
    if change == "deleted":
        del expected["a"]
    assert cfg.to_dict() == expected


def test_writes_to_keys_it_did_not_read_are_no_conflict(cfg: EtcdMapping,
                                                        other: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        assert tx["a"] == "1"
        other["b"] = "other"  # unread; the transaction overwrites it blindly
        other["elsewhere"] = "other"  # unread and not written by the transaction
        other["db/port"] = "other"
        tx["b"] = "tx"
        tx["a"] = "tx"
        tx["c"] = "tx"
    assert cfg.to_dict() == {**START, "a": "tx", "b": "tx", "c": "tx", "elsewhere": "other",
                             "db": {"host": "h", "port": "other"}}


def test_a_transaction_that_only_writes_never_conflicts(cfg: EtcdMapping,
                                                        other: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        tx["a"] = "tx"
        other["a"] = "other"
        other["b"] = "other"
        tx["db"] = {"user": "tx"}
        assert tx.revision == 0  # nothing was read: no snapshot
    assert cfg.to_dict() == {**START, "a": "tx", "b": "other", "db": {"user": "tx"}}


def getitem_raises(tx: Transaction) -> None:
    with pytest.raises(KeyError):
        tx["k"]


READS_OF_AN_ABSENT_KEY: dict[str, Callable[[Transaction], object]] = {
    "tx.get(k)": lambda tx: tx.get("k"),
    "k in tx": lambda tx: "k" in tx,
    "tx[k]": getitem_raises,
    "tx.setdefault(k)": lambda tx: tx.setdefault("k", "tx"),
    "tx.pop(k, None)": lambda tx: tx.pop("k", None),
}


@pytest.mark.parametrize("read", READS_OF_AN_ABSENT_KEY)
@pytest.mark.parametrize("created", ["k", "k/below"])
def test_an_absent_key_read_and_created_meanwhile_is_a_conflict(
        cfg: EtcdMapping, other: EtcdMapping, read: str, created: str) -> None:
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        READS_OF_AN_ABSENT_KEY[read](tx)
        other[created] = "other"
        tx["a"] = "tx"
    assert cfg.to_dict() == {**START, "k": "other" if created == "k" else {"below": "other"}}


@pytest.mark.parametrize("read", ["tx.get(k)", "tx.to_dict()"])
def test_an_absent_key_created_and_deleted_again_meanwhile_is_no_conflict(
        cfg: EtcdMapping, other: EtcdMapping, read: str) -> None:
    # What it read (no such key) still holds at commit: nothing to redo.
    with cfg.transaction() as tx:
        assert tx.get("k") is None if read == "tx.get(k)" else "k" not in tx.to_dict()
        other["k"] = "other"
        del other["k"]
        tx["written"] = "tx"
    assert cfg["written"] == "tx"


def test_a_key_changed_and_changed_back_meanwhile_is_a_conflict(
        cfg: EtcdMapping, other: EtcdMapping) -> None:
    # Its value is back, but not the version read: compares are on mod revisions.
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        assert tx["a"] == "1"
        other["a"] = "other"
        other["a"] = "1"
        tx["written"] = "tx"
    assert "written" not in cfg


LISTINGS: dict[str, Callable[[Transaction], object]] = {
    "len(tx[db])": lambda tx: len(tx["db"]),
    "list(tx[db])": lambda tx: list(tx["db"]),
    "tx[db].to_dict()": lambda tx: tx["db"].to_dict(),
    "tx[db].items()": lambda tx: list(tx["db"].items()),
    "db in tx": lambda tx: "db" in tx,
    "tx.to_dict()": lambda tx: tx.to_dict(),
    "len(tx)": lambda tx: len(tx),
    "sorted(tx)": lambda tx: sorted(tx),
}
CHANGES_IN_DB: dict[str, Callable[[EtcdMapping], None]] = {
    "added": lambda m: m.__setitem__("db/user", "other"),
    "deleted": lambda m: m.__delitem__("db/port"),
    "modified": lambda m: m.__setitem__("db/host", "other"),
}


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("change", CHANGES_IN_DB)
def test_a_listed_subtree_changed_meanwhile_is_a_conflict(
        cfg: EtcdMapping, other: EtcdMapping, listing: str, change: str) -> None:
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        LISTINGS[listing](tx)
        CHANGES_IN_DB[change](other)
        tx["written"] = "tx"
    assert "written" not in cfg
    assert cfg["db"] == other["db"] != START["db"]


@pytest.mark.parametrize("listing", [k for k in LISTINGS if "db" in k])
def test_a_change_beside_a_listed_subtree_is_no_conflict(
        cfg: EtcdMapping, other: EtcdMapping, listing: str) -> None:
    with cfg.transaction() as tx:
        LISTINGS[listing](tx)
        other["tags/y"] = "other"
        other["a"] = "other"
        other["db0"] = "other"  # the end of the range "db/...": next to it, not in it
        tx["written"] = "tx"
    assert cfg["written"] == "tx" and cfg["tags/y"] == "other"


def test_a_read_only_transaction_never_conflicts(cfg: EtcdMapping, other: EtcdMapping,
                                                 http_log: list[str]) -> None:
    with cfg.transaction() as tx:
        assert tx.to_dict() == START
        other["a"] = "other"
        assert tx["a"] == "1"
    assert TXN not in http_log
    assert cfg["a"] == "other"


# -- the transaction's own writes ------------------------------------------------------


def test_reads_see_the_transactions_own_writes(cfg: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        tx["a"] = "tx"
        tx["db/user"] = "u"
        tx["new"] = "n"
        assert tx["a"] == "tx" and tx["db/user"] == "u" and tx["db"]["user"] == "u"
        assert "new" in tx and tx.get("new") == "n" and tx.get("nope", "d") == "d"
        assert len(tx) == 5 and sorted(tx) == ["a", "b", "db", "new", "tags"]
        assert len(tx["db"]) == 3 and sorted(tx["db"]) == ["host", "port", "user"]
        assert tx.to_dict() == {**START, "a": "tx", "new": "n",
                                "db": {"host": "h", "port": "5432", "user": "u"}}
        assert dict(tx.items())["a"] == "tx" and "n" in tx.values()
        assert tx == {**START, "a": "tx", "new": "n",
                      "db": {"host": "h", "port": "5432", "user": "u"}}
        assert cfg.to_dict() == START  # nothing is sent before the block ends
    assert cfg.to_dict() == {**START, "a": "tx", "new": "n",
                             "db": {"host": "h", "port": "5432", "user": "u"}}


def test_sub_views_are_views_of_the_same_transaction(cfg: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        db = tx["db"]
        assert isinstance(db, Transaction) and db.prefix == cfg.prefix + "db/"
        db["port"] = "6543"
        db["auth/user"] = "u"
        assert tx["db/port"] == "6543" and tx["db/auth/user"] == "u"
        assert db["auth"].to_dict() == {"user": "u"}
        tx["db/host"] = "h2"
        assert db["host"] == "h2"
        fresh = tx.submapping("fresh")  # a view where nothing is stored yet
        assert "fresh" not in tx and len(fresh) == 0
        fresh["x"] = "1"
        assert tx["fresh"].to_dict() == {"x": "1"}
        del db["auth"]
        assert "auth" not in db and "db/auth/user" not in tx
        db.clear()
        assert "db" not in tx and len(db) == 0
        db["only"] = "o"
        assert tx["db"] == {"only": "o"}
        assert tx.revision == db.revision > 0
    assert cfg.to_dict() == {**START, "db": {"only": "o"}, "fresh": {"x": "1"}}


def test_deletes_are_seen_and_applied(cfg: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        del tx["a"]
        del tx["db/host"]
        del tx["tags"]
        assert "a" not in tx and tx.get("a") is None
        with pytest.raises(KeyError):
            tx["a"]
        assert "tags" not in tx and "tags/x" not in tx
        assert tx["db"].to_dict() == {"port": "5432"}
        assert sorted(tx) == ["b", "db"] and len(tx) == 2
        for missing in ["a", "tags", "tags/x", "nope", "b/below"]:
            with pytest.raises(EtcdKeyError):
                del tx[missing]
        tx["a"] = "back"  # a write after a delete wins
        assert tx["a"] == "back"
    assert cfg.to_dict() == {"a": "back", "b": "2", "db": {"port": "5432"}}


def test_clear_removes_everything_and_later_writes_refill(cfg: EtcdMapping,
                                                          other: EtcdMapping) -> None:
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        assert tx["a"] == "1"
        tx.clear()
        assert len(tx) == 0 and tx.to_dict() == {} and "a" not in tx and list(tx) == []
        other["a"] = "other"  # it was read before the clear: a conflict
        tx["z"] = "1"
        assert tx.to_dict() == {"z": "1"}
    assert cfg.to_dict() == {**START, "a": "other"}
    with cfg.transaction() as tx:
        tx.clear()  # blind: a clear needs no read
        tx["z"] = "1"
        assert tx.revision == 0
    assert cfg.to_dict() == {"z": "1"}


def test_nested_dict_values_behave_as_in_the_mapping(cfg: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        tx["db"] = {"user": "u", "opts": {"ssl": "on"}}  # replaces the whole subtree
        assert tx["db"].to_dict() == {"user": "u", "opts": {"ssl": "on"}}
        assert tx["db/opts/ssl"] == "on" and "db/host" not in tx
        tx["a/b"] = "x"  # a path through the leaf "a" replaces it by a dict
        assert tx["a"].to_dict() == {"b": "x"}
        tx["tags"] = "scalar"  # a scalar replaces a subtree
        assert tx["tags"] == "scalar" and "tags/x" not in tx
        tx["empty"] = {}  # stores nothing
        assert "empty" not in tx
        tx["b"] = {"c": {}}
        assert "b" not in tx
    assert cfg.to_dict() == {"a": {"b": "x"}, "db": {"user": "u", "opts": {"ssl": "on"}},
                             "tags": "scalar"}


def test_the_mixin_methods_work_inside_the_transaction(cfg: EtcdMapping) -> None:
    with cfg.transaction() as tx:
        assert tx.pop("a") == "1" and "a" not in tx
        assert tx.pop("a", "gone") == "gone"
        with pytest.raises(KeyError):
            tx.pop("a")
        assert tx.popitem() == ("b", "2")  # the first name in key order
        assert tx.setdefault("tags/x", "no") == "1"
        assert tx.setdefault("s", "yes") == "yes" and tx["s"] == "yes"
        tx.update({"u1": "1"}, u2="2")
        tx.update([("u3", "3")])
        assert tx.get("u2") == "2" and tx.get("u9") is None and tx.get("u9", 0) == 0
        assert sorted(tx) == ["db", "s", "tags", "u1", "u2", "u3"]
        assert len(tx) == 6 and bool(tx)
        assert "db/host" in tx and "db/nope" not in tx
        assert tx.keys() == {"db", "s", "tags", "u1", "u2", "u3"}
    assert cfg.to_dict() == {"db": START["db"], "tags": {"x": "1"}, "s": "yes", "u1": "1",
                             "u2": "2", "u3": "3"}


def test_pop_and_popitem_of_a_subtree_return_its_contents(cfg: EtcdMapping) -> None:
    # As from the mapping: a plain dict, not a view that the removal empties.
    with cfg.transaction() as tx:
        assert tx.pop("db") == {"host": "h", "port": "5432"}
        del tx["a"], tx["b"]
        assert tx.popitem() == ("tags", {"x": "1"})
        assert len(tx) == 0
        with pytest.raises(KeyError):
            tx.popitem()
    assert cfg.to_dict() == {}


# -- nothing written unless it commits ------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_in_the_block_writes_nothing(cfg: EtcdMapping,
                                                  http_log: list[str]) -> None:
    with pytest.raises(Boom), cfg.transaction() as tx:
        assert tx["a"] == "1"
        tx["a"] = "tx"
        tx.clear()
        tx["new"] = "tx"
        raise Boom
    assert set(http_log) == {RANGE}
    assert cfg.to_dict() == START


@pytest.mark.parametrize("end", ["commit", "read-only", "exception", "conflict"])
def test_the_view_and_its_sub_views_are_closed_after_the_block(
        cfg: EtcdMapping, other: EtcdMapping, end: str) -> None:
    with pytest.raises((Boom, EtcdConflict)) if end in ("exception", "conflict") \
            else contextlib.nullcontext(), cfg.transaction() as tx:
        db = tx["db"]
        if end != "read-only":
            tx["x"] = "1"
        if end == "conflict":
            other["db/host"] = "other"
        if end == "exception":
            raise Boom
    uses: list[Callable[[], object]] = [
        lambda: tx["a"], lambda: "a" in tx, lambda: tx.get("a"), lambda: len(tx),
        lambda: list(tx), lambda: tx.to_dict(), lambda: tx.__setitem__("a", "2"),
        lambda: tx.__delitem__("a"), lambda: tx.clear(), lambda: tx.commit(),
        lambda: db["host"], lambda: db.__setitem__("host", "2"), lambda: len(db),
        lambda: tx.submapping("x"),
    ]
    for use in uses:
        with pytest.raises(EtcdClosed):
            use()
    assert "ended" in repr(tx)


# -- one transaction -------------------------------------------------------------------


def test_the_commit_is_exactly_one_transaction(cfg: EtcdMapping, other: EtcdMapping,
                                               http_log: list[str]) -> None:
    with cfg.transaction() as tx:
        tx["a"] = str(int(tx["a"]) + 1)
        tx["db"]["port"] = "6543"
        del tx["tags"]
        tx["new"] = {"deep": {"er": "1"}}
        tx.update({f"k{i}": str(i) for i in range(10)})
        assert tx.to_dict()["k9"] == "9"
        assert set(http_log) == {RANGE}  # reads only, while in the block
        http_log.clear()
    assert http_log == [TXN]
    assert cfg["a"] == "2" and cfg["db/port"] == "6543" and "tags" not in cfg
    assert cfg["new/deep/er"] == "1" and len(cfg) == 14


def test_each_read_goes_to_etcd_once(cfg: EtcdMapping, http_log: list[str]) -> None:
    with cfg.transaction() as tx:
        for _ in range(3):
            assert tx["a"] == "1"
            assert tx["db"].to_dict() == START["db"]
            assert tx["db/host"] == "h"  # inside a listed subtree
        assert http_log == [RANGE, RANGE, RANGE]  # a, db (a leaf: absent), db/...
        tx["x"] = "1"
        assert tx["x"] == "1" and "x" in tx  # its own write: no read
        del tx["b"]
        assert "b" not in tx
        assert http_log == [RANGE] * 5  # b, read by ``del``; then "b/...", listed by ``in``


def test_a_read_only_transaction_sends_no_transaction(cfg: EtcdMapping,
                                                      http_log: list[str]) -> None:
    with cfg.transaction() as tx:
        assert tx.to_dict() == START and tx["a"] == "1"
    assert set(http_log) == {RANGE}


def test_a_write_only_transaction_sends_one_request_in_all(cfg: EtcdMapping,
                                                           http_log: list[str]) -> None:
    with cfg.transaction() as tx:
        tx["a"] = "tx"
        tx["db"] = {"only": "o"}
        tx.clear()
        tx["b"] = "tx"
    assert http_log == [TXN]
    assert cfg.to_dict() == {"b": "tx"}


def test_a_conflict_is_one_transaction_that_writes_nothing(cfg: EtcdMapping,
                                                           other: EtcdMapping,
                                                           http_log: list[str]) -> None:
    with pytest.raises(EtcdConflict), cfg.transaction() as tx:
        tx["b"] = tx["a"]
        other["a"] = "other"
        http_log.clear()
    assert http_log == [TXN]
    assert cfg.to_dict() == {**START, "a": "other"}


# -- too large for one transaction ------------------------------------------------------


@pytest.fixture
def small(etcd_endpoint: str, etcd_prefix: str) -> Iterator[EtcdMapping]:
    """The test's prefix through a client whose transactions take at most 4 ops each."""
    with EtcdClient(etcd_endpoint, max_txn_ops=4) as client:
        m = EtcdMapping(etcd_prefix, client=client)
        m.update({f"k{i}": str(i) for i in range(6)})
        yield m


@pytest.mark.parametrize("reads", [4, 5])
def test_more_reads_than_one_transaction_compares_raise_before_sending(
        small: EtcdMapping, monkeypatch: pytest.MonkeyPatch, reads: int) -> None:
    log = call_log_of(small.client, monkeypatch, full=False)
    with pytest.raises(EtcdRequestTooLarge) if reads > 4 else contextlib.nullcontext(), \
            small.transaction() as tx:
        for i in range(reads):  # each present leaf read is one compare
            assert tx[f"k{i}"] == str(i)
        tx["k5"] = "tx"  # one put and one delete (of what could be below k5)
    if reads > 4:
        assert TXN not in log and small["k5"] == "5"
    else:
        assert log[-1] == TXN and small["k5"] == "tx"


@pytest.mark.parametrize("writes", [2, 3])
def test_more_writes_than_one_transaction_takes_raise_before_sending(
        small: EtcdMapping, monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    log = call_log_of(small.client, monkeypatch, full=False)
    # A scalar write is two ops: the put, and the delete of a subtree below it.
    with pytest.raises(EtcdRequestTooLarge) if writes > 2 else contextlib.nullcontext(), \
            small.transaction() as tx:
        for i in range(writes):
            tx[f"k{i}"] = "tx"
    assert log == ([] if writes > 2 else [TXN])
    assert small["k0"] == ("0" if writes > 2 else "tx")


def test_too_many_writes_at_the_default_limit_raise_and_write_nothing(
        cfg: EtcdMapping, http_log: list[str]) -> None:
    limit = cfg.client.max_txn_ops
    with pytest.raises(EtcdRequestTooLarge, match="nothing was written"), \
            cfg.transaction() as tx:
        tx.update({f"k{i}": str(i) for i in range(limit + 1)})
    assert http_log == []
    assert cfg.to_dict() == START


def test_a_request_too_large_for_the_server_is_refused_before_sending(
        cfg: EtcdMapping, http_log: list[str]) -> None:
    with pytest.raises(EtcdRequestTooLarge, match="nothing was written"), \
            cfg.transaction() as tx:
        tx["a"] = tx["b"]
        tx["big"] = "v" * 2_000_000  # etcd takes 1.5 MiB requests by default
    assert "/v3/kv/txn" not in http_log  # the read went out, the commit never did
    assert cfg.to_dict() == START


# -- a snapshot compacted away ----------------------------------------------------------


def test_a_snapshot_compacted_away_is_a_conflict_that_atomic_runs_again(
        cfg: EtcdMapping, other: EtcdMapping, etcd_client: EtcdClient) -> None:
    runs: list[int] = []

    def copy_b_to_a(tx: Transaction) -> str:
        runs.append(tx.revision)
        assert tx["a"] == "1"  # pins the snapshot
        if len(runs) == 1:
            other["b"] = "other"
            etcd_client.compact(etcd_client.range(cfg.prefix + "b").revision)
        tx["a"] = tx["b"]  # the first run's snapshot is gone: EtcdConflict
        return str(tx["a"])

    assert cfg.atomic(copy_b_to_a) == "other"
    assert runs == [0, 0] and cfg["a"] == "other"


# -- codecs and keys ----------------------------------------------------------------------


def test_the_mappings_codec_reads_and_writes(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    js = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    js["n"] = 1
    with js.transaction() as tx:
        tx["n"] = tx["n"] + 1
        tx["list"] = [1, "two", None]
        tx["cfg"] = {"on": True, "ratio": 0.5}  # a dict is a subtree, its leaves JSON
        with pytest.raises(TypeError):
            tx["bad"] = object()
        assert tx["list"] == [1, "two", None] and tx["cfg/on"] is True
        assert "bad" not in tx
    assert js.to_dict() == {"n": 2, "list": [1, "two", None], "cfg": {"on": True, "ratio": 0.5}}
    assert json.loads(etcd_client.range(f"{etcd_prefix}/list").kvs[0].value) == [1, "two", None]
    with EtcdMapping(etcd_prefix, client=etcd_client).transaction() as tx:
        with pytest.raises(TypeError):
            tx["n"] = 3  # the str codec stores str
        assert tx["n"] == "2"


BAD_KEYS: list[Any] = [1, None, b"a", ("a",), "", "a//b", "/a", "a/", "\ud800"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_raise_what_the_mapping_raises(cfg: EtcdMapping, key: Any,
                                                http_log: list[str]) -> None:
    expected = TypeError if not isinstance(key, str) else ValueError
    with cfg.transaction() as tx:
        with pytest.raises(KeyError):
            tx[key]
        with pytest.raises(KeyError):
            del tx[key]
        assert key not in tx
        assert tx.get(key, "default") == "default"
        assert tx.pop(key, "default") == "default"
        with pytest.raises(expected):
            tx[key] = "v"
        with pytest.raises(expected):
            tx.submapping(key)
        with pytest.raises(expected):
            tx.update({key: "v"})
        with pytest.raises(expected):
            tx["ok"] = {key: "v"}
        assert "ok" not in tx
    assert TXN not in http_log
    assert cfg.to_dict() == START


# -- atomic ------------------------------------------------------------------------------


def test_atomic_returns_what_the_function_returns(cfg: EtcdMapping) -> None:
    def move(tx: Transaction) -> tuple[str, str]:
        tx["b"], tx["a"] = tx["a"], tx["b"]
        return tx["a"], tx["b"]

    assert cfg.atomic(move) == ("2", "1")
    assert cfg["a"] == "2" and cfg["b"] == "1"
    assert cfg.atomic(lambda tx: None) is None


def test_atomic_runs_the_function_again_after_a_conflict(cfg: EtcdMapping,
                                                         other: EtcdMapping) -> None:
    runs: list[str] = []

    def increment(tx: Transaction) -> int:
        value = int(tx["a"])
        runs.append(tx["a"])
        if len(runs) == 1:
            other["a"] = "10"  # a plain write to a key this run read: it must re-run
        tx["a"] = str(value + 1)
        return value + 1

    assert cfg.atomic(increment) == 11
    assert runs == ["1", "10"]
    assert cfg["a"] == "11"


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_atomic_gives_up_after_retries_conflicts(cfg: EtcdMapping, other: EtcdMapping,
                                                 retries: int) -> None:
    runs = 0

    def always_loses(tx: Transaction) -> None:
        nonlocal runs
        runs += 1
        other["a"] = str(int(tx["a"]) + 100)
        tx["b"] = "tx"

    with pytest.raises(EtcdConflict):
        cfg.atomic(always_loses, retries=retries)
    assert runs == retries + 1
    assert cfg["b"] == "2" and cfg["a"] == str(1 + 100 * runs)


def test_atomic_does_not_retry_other_errors(cfg: EtcdMapping) -> None:
    runs = 0

    def fails(tx: Transaction) -> None:
        nonlocal runs
        runs += 1
        tx["a"] = "tx"
        raise Boom

    with pytest.raises(Boom):
        cfg.atomic(fails)
    assert runs == 1 and cfg["a"] == "1"


def test_atomic_as_a_decorator(cfg: EtcdMapping, other: EtcdMapping) -> None:
    runs = 0

    @cfg.atomic()
    def transfer(tx: Transaction, src: str, dst: str, *, amount: int) -> bool:
        nonlocal runs
        runs += 1
        have = int(tx[src])
        if runs == 1:
            other[src] = str(have)  # a rewrite of a key it read: conflict once
        if have < amount:
            return False
        tx[src] = str(have - amount)
        tx[dst] = str(int(tx[dst]) + amount)
        return True

    assert transfer.__name__ == "transfer"
    assert transfer("b", "a", amount=2) is True
    assert runs == 2 and cfg["a"] == "3" and cfg["b"] == "0"
    assert transfer("b", "a", amount=1) is False

    @cfg.atomic(retries=2)
    def never(tx: Transaction) -> None:
        other["a"] = tx["a"]
        tx["b"] = "tx"

    with pytest.raises(EtcdConflict):
        never()


@pytest.mark.parametrize("retries", [-1, True, 1.5, "3", None])
def test_atomic_rejects_a_bad_retries_at_once(cfg: EtcdMapping, retries: Any) -> None:
    runs: list[Transaction] = []
    error = ValueError if retries == -1 else TypeError
    with pytest.raises(error, match="retries"):
        cfg.atomic(runs.append, retries=retries)
    with pytest.raises(error, match="retries"):
        cfg.atomic(retries=retries)  # as a decorator: before anything is decorated
    assert runs == []


# -- views ----------------------------------------------------------------------------------


def test_a_ttl_views_transaction_puts_with_a_lease(cfg: EtcdMapping,
                                                   http_log: list[str]) -> None:
    with cfg.with_ttl(30).transaction() as tx:
        tx["leased"] = {"x": "1", "y": "2"}
        tx["b"] = tx["a"]
    assert http_log[-2:] == [GRANT, TXN]
    for key in ["leased/x", "leased/y", "b"]:
        ttl = cfg.ttl(key)
        assert ttl is not None and 0 < ttl <= 30, key
    assert cfg.ttl("a") is None  # read, not written: untouched
    with cfg.transaction() as tx:
        tx["b"] = "plain"
    assert cfg.ttl("b") is None


def test_a_sub_mappings_transaction_is_over_its_prefix(cfg: EtcdMapping,
                                                       other: EtcdMapping) -> None:
    with cfg["db"].transaction() as tx:
        assert tx.prefix == cfg.prefix + "db/"
        assert tx.to_dict() == START["db"]
        tx["host"] = "h2"
        tx.clear()
        tx["port"] = "1"
    assert cfg.to_dict() == {**START, "db": {"port": "1"}}
    with pytest.raises(EtcdConflict), cfg.submapping("db").transaction() as tx:
        assert len(tx) == 1
        other["db/added"] = "other"
        tx["port"] = "2"
    with cfg.submapping("db").transaction() as tx:
        assert len(tx) == 2
        other["a"] = "outside its prefix"
        tx["port"] = "2"
    assert cfg["db"].to_dict() == {"port": "2", "added": "other"}
