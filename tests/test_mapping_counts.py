"""Round trips: every ``EtcdMapping`` method is one HTTP request, scans page.

``http_log`` records the URL path of every request the client's transport
adapter sends (the real adapter still sends it to the real etcd), so each
test states exactly which requests an operation makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from etcdmap import EtcdClient, EtcdMapping
from etcdmap.ops import Put

RANGE = "/v3/kv/range"
TXN = "/v3/kv/txn"
DELETE = "/v3/kv/deleterange"


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A small subtree: two leaves and two directories."""
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"name": "app", "db/host": "h", "db/port": "5432", "tags/a": "1"})
    assert etcd_client.txn_reads in (True, False)  # asked once per member: not counted below
    return m


def lookup(client: EtcdClient, *, leaf: bool) -> list[str]:
    """The requests of one m[k]: one read-only txn (the leaf and a probe of the subtree).

    etcd 3.5.0-3.5.6 crash when a client abandons a read-only txn
    (etcd-io/etcd#14110): there the leaf is read first, and the subtree only
    if there is no leaf.
    """
    if client.txn_reads:
        return [TXN]
    return [RANGE] if leaf else [RANGE, RANGE]


def bulk_put(client: EtcdClient, items: dict[str, str]) -> None:
    """Store many keys with the raw client, max_txn_ops puts per transaction."""
    puts = [Put(k.encode(), v.encode()) for k, v in items.items()]
    for i in range(0, len(puts), client.max_txn_ops):
        client.txn(success=puts[i:i + client.max_txn_ops])


# -- one request each ----------------------------------------------------------------

LOOKUPS: dict[str, tuple[Callable[[EtcdMapping], Any], bool]] = {
    "m[leaf]": (lambda m: m["name"], True),
    "m[directory]": (lambda m: m["db"], False),
    "m[missing]": (lambda m: m.get("nope"), False),
    "m.get(leaf)": (lambda m: m.get("name"), True),
    "m.get(directory)": (lambda m: m.get("db"), False),
    "leaf in m": (lambda m: "name" in m, True),
    "directory in m": (lambda m: "db" in m, False),
    "k not in m": (lambda m: "nope" in m, False),
}


@pytest.mark.parametrize(("op", "leaf"), list(LOOKUPS.values()), ids=list(LOOKUPS))
def test_a_lookup_is_one_request_or_two_on_etcd_3_5_0_to_3_5_6(
        m: EtcdMapping, http_log: list[str], op: Callable[[EtcdMapping], Any],
        leaf: bool) -> None:
    http_log.clear()
    op(m)
    assert http_log == lookup(m.client, leaf=leaf)


ONE_REQUEST: dict[str, tuple[Callable[[EtcdMapping], Any], str]] = {
    "m[k] = scalar": (lambda m: m.__setitem__("name", "x"), TXN),
    "m[k] = scalar over a subtree": (lambda m: m.__setitem__("db", "x"), TXN),
    "m[path] = scalar": (lambda m: m.__setitem__("db/opts/ssl", "on"), TXN),
    "m[k] = nested dict": (lambda m: m.__setitem__("db", {"host": "h2", "opts": {"ssl": "on"}}),
                           TXN),
    "m[k] = {}": (lambda m: m.__setitem__("db", {}), TXN),
    # etcd takes requests up to 1.5 MiB; a 600 kB value still fits in one.
    "m[k] = 600 kB value": (lambda m: m.__setitem__("db", "x" * 600_000), TXN),
    "del m[leaf]": (lambda m: m.__delitem__("name"), TXN),
    "del m[directory]": (lambda m: m.__delitem__("db"), TXN),
    "m.setdefault(absent)": (lambda m: m.setdefault("new", "v"), TXN),
    "m.setdefault(present)": (lambda m: m.setdefault("name", "v"), TXN),
    "m.setdefault(absent, dict)": (lambda m: m.setdefault("new", {"a": "1"}), TXN),
    "m.replace(hit)": (lambda m: m.replace("name", "app", "x"), TXN),
    "m.replace(miss)": (lambda m: m.replace("name", "other", "x"), TXN),
    "m.clear()": (lambda m: m.clear(), DELETE),
    "m.update(20 keys)": (lambda m: m.update({f"k/{i:02}": str(i) for i in range(20)}), TXN),
    "len(m)": (lambda m: len(m), RANGE),
    "for k in m": (lambda m: [k for k in m], RANGE),
    "list(iter(m))": (lambda m: list(iter(m)), RANGE),
    "for k, v in m.items()": (lambda m: [(k, v) for k, v in m.items()], RANGE),
    "for v in m.values()": (lambda m: [v for v in m.values()], RANGE),
    "m.to_dict()": (lambda m: m.to_dict(), RANGE),
    "m == dict": (lambda m: m == {"name": "app", "db": {"host": "h", "port": "5432"}}, RANGE),
    "m | dict": (lambda m: m | {"x": "1"}, RANGE),
    "bool(m)": (lambda m: bool(m), RANGE),
    # list() and sorted() ask for len() right after iter(): the iterator's first
    # page answers it when it holds the whole subtree.
    "list(m)": (list, RANGE),
    "sorted(m)": (sorted, RANGE),
    "tuple(m)": (tuple, RANGE),
    "list(m.keys())": (lambda m: list(m.keys()), RANGE),
    "list(m.items())": (lambda m: list(m.items()), RANGE),
    "list(m.values())": (lambda m: list(m.values()), RANGE),
    "dict(m.items())": (lambda m: dict(m.items()), RANGE),
    "reversed(m)": (lambda m: list(reversed(m)), RANGE),
    "m.copy()": (lambda m: m.copy(), RANGE),
}


@pytest.mark.parametrize(("op", "path"), list(ONE_REQUEST.values()), ids=list(ONE_REQUEST))
def test_one_request(m: EtcdMapping, http_log: list[str], op: Callable[[EtcdMapping], Any],
                     path: str) -> None:
    http_log.clear()
    op(m)
    assert http_log == [path]


def test_a_sub_mapping_read_then_write_is_two_requests(m: EtcdMapping,
                                                      http_log: list[str]) -> None:
    http_log.clear()
    m["db"]["port"] = "1"  # the lookup of m["db"], then the put
    assert http_log == [*lookup(m.client, leaf=False), TXN]


# pop reads (and decodes) first, then deletes only what it read, if unchanged:
# a value the codec cannot read is never deleted.
@pytest.mark.parametrize("key", ["name", "db"], ids=["leaf", "directory"])
def test_pop_is_a_read_then_a_conditional_delete(m: EtcdMapping, http_log: list[str],
                                                 key: str) -> None:
    http_log.clear()
    m.pop(key)
    assert http_log == [*lookup(m.client, leaf=key == "name"), TXN]


def test_pop_of_a_missing_key_is_the_read_only(m: EtcdMapping, http_log: list[str]) -> None:
    http_log.clear()
    assert m.pop("nope", None) is None
    assert http_log == lookup(m.client, leaf=False)


def test_popitem_finds_a_name_then_pops_it(m: EtcdMapping, http_log: list[str]) -> None:
    http_log.clear()
    assert m.popitem()[0] == "db"
    assert http_log == [RANGE, *lookup(m.client, leaf=False), TXN]


def test_dict_of_a_mapping_reads_the_names_then_each_value(m: EtcdMapping,
                                                          http_log: list[str]) -> None:
    # dict(m) and {**m} call m.keys(), then m[k] for each name: 1 + n requests
    # (the README says so, and points to to_dict(), dict(m.items()) and cached()).
    http_log.clear()
    dict(m)
    assert http_log == [RANGE, *lookup(m.client, leaf=False), *lookup(m.client, leaf=True),
                        *lookup(m.client, leaf=False)]  # db, name, tags


def test_len_after_a_moved_iterator_reads_again(m: EtcdMapping, http_log: list[str]) -> None:
    http_log.clear()
    names = iter(m)
    next(names)
    assert len(m) == 3  # the iterator moved on: its page no longer answers for len()
    assert http_log == [RANGE, RANGE]


def test_len_of_a_large_mapping_after_iter_reads_again(etcd_client: EtcdClient,
                                                      etcd_prefix: str,
                                                      http_log: list[str]) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, page_size=2)
    bulk_put(etcd_client, {f"{etcd_prefix}/{i}": "v" for i in range(5)})
    http_log.clear()
    assert len(list(m)) == 5  # the first page did not hold everything
    assert http_log.count(RANGE) > 2


# -- no requests -----------------------------------------------------------------------


NO_REQUEST: dict[str, Callable[[EtcdMapping], Any]] = {
    "repr(m)": repr,
    "repr(sub-mapping)": lambda m: repr(m.submapping("db")),
    "m.submapping(k)": lambda m: m.submapping("db/opts"),
    "m.prefix": lambda m: m.prefix,
    "m.keys()": lambda m: m.keys(),
    "m.items()": lambda m: m.items(),
    "m.values()": lambda m: m.values(),
    "m.update({})": lambda m: m.update({}),
    "m[bad key]": lambda m: m.get("a//b"),
    "bad key in m": lambda m: "" in m,
    "m[bad key] = v": lambda m: set_rejected(m, "a/", "v", ValueError),
    "m[k] = bad value": lambda m: set_rejected(m, "k", 1, TypeError),
}


def set_rejected(m: EtcdMapping, key: Any, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        m[key] = value


@pytest.mark.parametrize("op", list(NO_REQUEST.values()), ids=list(NO_REQUEST))
def test_no_request(m: EtcdMapping, http_log: list[str],
                    op: Callable[[EtcdMapping], Any]) -> None:
    http_log.clear()
    op(m)
    assert http_log == []


# -- writes as large as one transaction holds --------------------------------------------


def test_an_update_of_max_txn_ops_new_leaves_is_one_transaction(
        etcd_prefix: str, etcd_client: EtcdClient, http_log: list[str]) -> None:
    # Each new name would need a delete of its subtree beside its put (2 ops a
    # leaf, 64 leaves at most); guards in the compare list cost no op.
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    http_log.clear()
    m.update({f"k{i:03}": str(i) for i in range(etcd_client.max_txn_ops)})
    assert http_log == [TXN]
    assert m.to_dict() == {f"k{i:03}": str(i) for i in range(etcd_client.max_txn_ops)}


def test_an_update_that_replaces_subtrees_is_still_one_transaction(
        etcd_prefix: str, etcd_client: EtcdClient, http_log: list[str]) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"k007/old": "x", "k099/old": "x", "k050": {"deep": {"er": "x"}}})
    http_log.clear()
    m.update({f"k{i:03}": str(i) for i in range(100)})
    # The guarded attempt finds three subtrees; the second attempt deletes them
    # and writes the 100 leaves, in one transaction.
    assert http_log == [TXN, TXN]
    assert m.to_dict() == {f"k{i:03}": str(i) for i in range(100)}


def test_an_update_is_all_or_nothing_for_a_concurrent_reader(
        etcd_prefix: str, etcd_client: EtcdClient) -> None:
    # Every revision etcd kept holds either none or all of the update.
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"k003/old": "x"})
    before = etcd_client.range(etcd_prefix, prefix=True).revision
    m.update({f"k{i:03}": "new" for i in range(100)})
    after = etcd_client.range(etcd_prefix, prefix=True).revision
    assert after - before == 1  # one revision for the whole update
    assert EtcdMapping(etcd_prefix, client=etcd_client).to_dict() == {
        f"k{i:03}": "new" for i in range(100)}


# -- more than one request ------------------------------------------------------------------


def test_update_of_300_keys_reads_once_then_one_txn_per_128_ops(
        etcd_prefix: str, etcd_client: EtcdClient, http_log: list[str]) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    # Each flat scalar key is a put plus a delete of its subtree "k/".."k0":
    # 600 ops, more than one txn, so the write is chunked (not atomic) and a
    # keys-only read first drops the deletes that match nothing.  Two keys
    # have a subtree: 300 puts + 2 deletes = 302 ops: ceil(302 / 128) = 3 txns.
    etcd_client.put(f"{etcd_prefix}/k007/old", "x")
    etcd_client.put(f"{etcd_prefix}/k123/old", "x")
    http_log.clear()
    m.update({f"k{i:03}": "v" for i in range(300)})
    assert http_log == [RANGE] + [TXN] * math.ceil(302 / etcd_client.max_txn_ops)
    assert len(http_log) == 4
    assert m.to_dict() == {f"k{i:03}": "v" for i in range(300)}


@pytest.fixture
def flat_2500(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    bulk_put(etcd_client, {f"{etcd_prefix}/k{i:04}": "v" for i in range(2500)})
    return EtcdMapping(etcd_prefix, client=etcd_client)


def test_len_of_2500_keys_pages_from_1000_doubling(flat_2500: EtcdMapping,
                                                   http_log: list[str]) -> None:
    # Pages of 1,000 then 2,000 keys cover 2,500.
    http_log.clear()
    assert len(flat_2500) == 2500
    assert http_log == [RANGE] * 2


def test_to_dict_of_2500_keys_is_one_page(flat_2500: EtcdMapping,
                                          http_log: list[str]) -> None:
    # It keeps every key anyway: pages start at the largest size (8,000 keys).
    http_log.clear()
    assert len(flat_2500.to_dict()) == 2500
    assert http_log == [RANGE]


def test_page_size_sets_the_page(etcd_prefix: str, etcd_client: EtcdClient,
                                 http_log: list[str]) -> None:
    bulk_put(etcd_client, {f"{etcd_prefix}/k{i:03}": "v" for i in range(250)})
    m = EtcdMapping(etcd_prefix, client=etcd_client, page_size=100)
    http_log.clear()
    assert sum(1 for _ in m.items()) == 250
    assert http_log == [RANGE] * 2  # 100, then 200 keys


def test_iteration_jumps_over_a_directory_it_has_already_yielded(
        etcd_prefix: str, etcd_client: EtcdClient, http_log: list[str]) -> None:
    # Five directories of 250 keys each (1,250 keys), then one leaf; pages of
    # 100 keys doubling.  Paging through every key at 100 would take 13 pages.
    # Instead each page yields the directories it reaches and jumps past the
    # one it ends in: page 1 (100) sees d0 and jumps to d1/; page 2 (200) sees
    # d1; page 3 (400) sees d2 and d3; page 4 (800) sees d4 and "e", the end.
    items = {f"{etcd_prefix}/d{d}/k{i:03}": "v" for d in range(5) for i in range(250)}
    items[f"{etcd_prefix}/e"] = "leaf"
    bulk_put(etcd_client, items)
    m = EtcdMapping(etcd_prefix, client=etcd_client, page_size=100)
    http_log.clear()
    assert list(iter(m)) == ["d0", "d1", "d2", "d3", "d4", "e"]
    assert http_log == [RANGE] * 4
    assert math.ceil(len(items) / 100) == 13


def test_len_jumps_over_directories_at_the_default_page_size(
        etcd_prefix: str, etcd_client: EtcdClient, http_log: list[str]) -> None:
    # Three directories of 1,500 keys: 4,500 keys would be 5 pages of 1,000.
    # Page 1 (1,000) holds d0/0..999: yields d0, jumps to d1/.  Page 2 (2,000)
    # holds all of d1 and d2/0..499: yields d1 and d2, jumps past d2/; the
    # third page is empty.  So 3 ranges.
    bulk_put(etcd_client, {f"{etcd_prefix}/d{d}/k{i:04}": "v"
                           for d in range(3) for i in range(1500)})
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    http_log.clear()
    assert len(m) == 3
    assert http_log == [RANGE] * 3
