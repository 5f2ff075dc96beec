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
    return m


def bulk_put(client: EtcdClient, items: dict[str, str]) -> None:
    """Store many keys with the raw client, max_txn_ops puts per transaction."""
    puts = [Put(k.encode(), v.encode()) for k, v in items.items()]
    for i in range(0, len(puts), client.max_txn_ops):
        client.txn(success=puts[i:i + client.max_txn_ops])


# -- one request each ----------------------------------------------------------------

ONE_REQUEST: dict[str, tuple[Callable[[EtcdMapping], Any], str]] = {
    "m[leaf]": (lambda m: m["name"], TXN),
    "m[directory]": (lambda m: m["db"], TXN),
    "m[missing]": (lambda m: m.get("nope"), TXN),
    "m.get(leaf)": (lambda m: m.get("name"), TXN),
    "m.get(directory)": (lambda m: m.get("db"), TXN),
    "k in m": (lambda m: "db" in m, TXN),
    "k not in m": (lambda m: "nope" in m, TXN),
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
    "m.pop(leaf)": (lambda m: m.pop("name"), TXN),
    "m.pop(directory)": (lambda m: m.pop("db"), TXN),
    "m.pop(missing, default)": (lambda m: m.pop("nope", None), TXN),
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
    assert http_log == [TXN, TXN]


# list() (and tuple(), sorted(), [*m]) first calls len() on its argument to
# size the result; for a mapping len() is itself a scan.  So list(m) is two
# scans, len's and the iteration's.  Iterating directly, or list(iter(m)),
# is one.
TWO_SCANS: dict[str, Callable[[EtcdMapping], Any]] = {
    "list(m)": list,
    "sorted(m)": sorted,
    "list(m.items())": lambda m: list(m.items()),
    "list(m.values())": lambda m: list(m.values()),
}


@pytest.mark.parametrize("op", list(TWO_SCANS.values()), ids=list(TWO_SCANS))
def test_list_of_a_mapping_or_view_asks_len_first(m: EtcdMapping, http_log: list[str],
                                                  op: Callable[[EtcdMapping], Any]) -> None:
    http_log.clear()
    op(m)
    assert http_log == [RANGE, RANGE]


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


# -- more than one request ------------------------------------------------------------------


def test_popitem_is_a_one_key_range_then_a_pop(m: EtcdMapping, http_log: list[str]) -> None:
    # Which key to pop is not known until read, so popitem cannot be one txn.
    http_log.clear()
    m.popitem()
    assert http_log == [RANGE, TXN]


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


def test_to_dict_of_2500_keys_pages_from_1000_doubling(flat_2500: EtcdMapping,
                                                       http_log: list[str]) -> None:
    http_log.clear()
    assert len(flat_2500.to_dict()) == 2500
    assert http_log == [RANGE] * 2


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
