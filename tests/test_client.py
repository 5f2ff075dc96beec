"""EtcdClient against a real etcd: the v3 calls, then the classic etcd-py calls.

Every key lives under the test's own ``etcd_prefix``.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import assert_reads, once_watching, reads_in_txns

from etcdmap import (
    EtcdClient,
    EtcdCompacted,
    EtcdCompareFailed,
    EtcdConnectionError,
    EtcdKeyError,
    EtcdLeaseNotFound,
    EtcdMapping,
    EtcdOutOfRange,
)
from etcdmap.ops import Compare, Delete, Put, Range, prefix_end
from etcdmap.records import DeleteRangeResponse, KeyValue, PutResponse, RangeResponse


def put_all(client: EtcdClient, base: str, **items: str) -> None:
    for name, value in items.items():
        client.put(f"{base}/{name}", value)


def names(resp: RangeResponse, base: str) -> list[str]:
    return [kv.key.decode()[len(base) + 1:] for kv in resp.kvs]


# -- range -----------------------------------------------------------------------


def test_range_of_one_key(etcd_client, etcd_prefix) -> None:
    etcd_client.put(f"{etcd_prefix}/a", "1")
    resp = etcd_client.range(f"{etcd_prefix}/a")
    assert [(kv.key, kv.value, kv.version) for kv in resp.kvs] == [
        (f"{etcd_prefix}/a".encode(), b"1", 1),
    ]
    assert resp.count == 1 and resp.more is False


def test_range_of_an_absent_key_is_empty(etcd_client, etcd_prefix) -> None:
    resp = etcd_client.range(f"{etcd_prefix}/absent")
    assert resp.kvs == () and resp.count == 0 and resp.revision > 0


def test_range_with_prefix_returns_only_keys_under_it(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, b="2", a="1", c="3")
    etcd_client.put(f"{etcd_prefix}x", "sibling")  # shares the string prefix, not the "/"
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True)
    assert names(resp, etcd_prefix) == ["a", "b", "c"]


def test_range_with_limit_says_more_and_counts_all(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", b="2", c="3")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, limit=2)
    assert names(resp, etcd_prefix) == ["a", "b"]
    assert resp.more is True and resp.count == 3


def test_range_at_a_past_revision_sees_the_old_value(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    first = etcd_client.put(key, "old").revision
    etcd_client.put(key, "new")
    assert etcd_client.range(key, revision=first).kvs[0].value == b"old"
    assert etcd_client.range(key).kvs[0].value == b"new"


def test_range_keys_only_has_no_values(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", b="2")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, keys_only=True)
    assert names(resp, etcd_prefix) == ["a", "b"]
    assert {kv.value for kv in resp.kvs} == {b""}


def test_range_count_only_has_a_count_and_no_kvs(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", b="2", c="3")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, count_only=True)
    assert resp.kvs == () and resp.count == 3


def test_range_sorted_descending_by_key(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", c="3", b="2")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, sort_order="DESCEND")
    assert names(resp, etcd_prefix) == ["c", "b", "a"]


def test_range_sorted_ascending_by_value(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="3", b="1", c="2")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, sort_order="ASCEND",
                             sort_target="VALUE")
    assert names(resp, etcd_prefix) == ["b", "c", "a"]


def test_range_with_only_a_sort_target_sorts_ascending_by_it(etcd_client, etcd_prefix) -> None:
    # etcd itself sorts ASCEND when a target other than KEY comes with order NONE.
    put_all(etcd_client, etcd_prefix, b="1", a="2")
    resp = etcd_client.range(f"{etcd_prefix}/", prefix=True, sort_target="CREATE")
    assert names(resp, etcd_prefix) == ["b", "a"]


# -- range_iter and pages ------------------------------------------------------------


def test_range_iter_with_page_size_2_yields_all_5_keys(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, e="5", a="1", d="4", b="2", c="3")
    kvs = list(etcd_client.range_iter(f"{etcd_prefix}/", prefix=True, page_size=2))
    assert [kv.value for kv in kvs] == [b"1", b"2", b"3", b"4", b"5"]


def test_pages_are_read_at_the_first_pages_revision(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", b="2", c="3", d="4", e="5")
    start = f"{etcd_prefix}/".encode()
    pages = etcd_client.pages(start, prefix_end(start), page_size=2)
    first = next(pages)
    etcd_client.put(f"{etcd_prefix}/f", "written between pages")
    etcd_client.delete_range(f"{etcd_prefix}/e")
    etcd_client.put(f"{etcd_prefix}/c", "changed between pages")
    rest = list(pages)
    seen = [kv for page in [first, *rest] for kv in page.kvs]
    assert [kv.value for kv in seen] == [b"1", b"2", b"3", b"4", b"5"]
    assert {page.revision for page in rest} == {first.revision}
    # Pages double from page_size (2, then 4): the 3 keys left fit the second page.
    assert [len(page.kvs) for page in [first, *rest]] == [2, 3]


def test_pages_grow_from_page_size_up_to_the_ceiling(etcd_client, etcd_prefix) -> None:
    etcd_client.txn(success=[Put(f"{etcd_prefix}/{i:03}".encode(), b"v") for i in range(100)])
    start = f"{etcd_prefix}/".encode()
    sizes = [len(p.kvs) for p in etcd_client.pages(start, prefix_end(start), page_size=3)]
    assert sizes == [3, 6, 12, 24, 48, 7]


def _pages_held_while_reading_the_next(client: EtcdClient, read: Callable[[], object]) -> list[int]:
    """Run ``read``; for each page after the first, how many earlier pages were still alive."""
    seen: list[tuple[KeyValue, ...]] = []
    held: list[int] = []
    real = client.range

    def spy(*args: Any, **kwargs: Any) -> RangeResponse:
        gc.collect()
        # A page is alive while anything but ``seen`` refers to its tuple of keys.
        held.append(sum(1 for kvs in seen if any(r is not seen for r in gc.get_referrers(kvs))))
        resp = real(*args, **kwargs)
        seen.append(resp.kvs)
        return resp

    client.range = spy  # type: ignore[method-assign]
    try:
        read()
    finally:
        del client.range
    return held[1:]


@pytest.mark.parametrize("how", ["range_iter", "items", "keys", "values", "iter"])
def test_a_page_is_let_go_before_the_next_is_read(etcd_client, etcd_prefix, how) -> None:
    etcd_client.txn(success=[Put(f"{etcd_prefix}/{i:03}".encode(), b"v") for i in range(40)])
    m = EtcdMapping(etcd_prefix, client=etcd_client, page_size=3)
    read = {
        "range_iter": lambda: [kv.key for kv in etcd_client.range_iter(
            f"{etcd_prefix}/", prefix=True, page_size=3)],
        "items": lambda: [k for k, _ in m.items()],
        "keys": lambda: [k for k in m.keys()],  # noqa: SIM118 (the view, not the mapping)
        "values": lambda: [v for v in m.values()],
        "iter": lambda: [k for k in m],
    }[how]
    held = _pages_held_while_reading_the_next(etcd_client, read)
    assert len(held) == 3  # pages of 3, 6, 12 and 19 keys: 3 reads after the first
    assert held == [0, 0, 0]


# -- put and delete_range ---------------------------------------------------------------


def test_put_returns_the_previous_kv_when_asked(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    created = etcd_client.put(key, "1", prev_kv=True)
    replaced = etcd_client.put(key, "2", prev_kv=True)
    assert created.prev_kv is None
    assert replaced.prev_kv is not None and replaced.prev_kv.value == b"1"
    assert replaced.revision > created.revision


def test_put_without_prev_kv_returns_only_the_revision(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.put(key, "1")
    resp = etcd_client.put(key, "2")
    assert resp == PutResponse(revision=resp.revision) and resp.revision > 0


def test_delete_range_of_one_key_returns_its_prev_kv(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.put(key, "v")
    resp = etcd_client.delete_range(key, prev_kv=True)
    assert resp.deleted == 1
    assert [(kv.key, kv.value) for kv in resp.prev_kvs] == [(key.encode(), b"v")]
    assert etcd_client.range(key).kvs == ()


def test_delete_range_with_prefix_deletes_only_under_it(etcd_client, etcd_prefix) -> None:
    put_all(etcd_client, etcd_prefix, a="1", b="2", c="3")
    etcd_client.put(f"{etcd_prefix}x", "sibling")
    resp = etcd_client.delete_range(f"{etcd_prefix}/", prefix=True)
    assert resp.deleted == 3 and resp.prev_kvs == ()
    assert etcd_client.range(f"{etcd_prefix}x").kvs[0].value == b"sibling"


def test_delete_range_of_nothing_deletes_zero(etcd_client, etcd_prefix) -> None:
    resp = etcd_client.delete_range(f"{etcd_prefix}/absent")
    assert resp == DeleteRangeResponse(revision=resp.revision, deleted=0)


# -- txn ---------------------------------------------------------------------------------


def test_txn_runs_success_when_the_compare_holds(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k".encode()
    etcd_client.put(key, b"old")
    resp = etcd_client.txn([Compare(key, "VALUE", "==", b"old")],
                           [Put(key, b"new")], [Range(key)])
    assert resp.succeeded is True
    assert [type(r) for r in resp.responses] == [PutResponse]
    assert etcd_client.range(key).kvs[0].value == b"new"


def test_txn_runs_failure_when_the_compare_fails(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k".encode()
    etcd_client.put(key, b"current")
    resp = etcd_client.txn([Compare(key, "VALUE", "==", b"expected")],
                           [Put(key, b"new")], [Range(key)])
    assert resp.succeeded is False
    (current,) = resp.responses
    assert isinstance(current, RangeResponse) and current.kvs[0].value == b"current"


def test_txn_version_zero_compare_means_the_key_is_absent(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/lock".encode()
    absent = [Compare(key, "VERSION", "==", 0)]
    first = etcd_client.txn(absent, [Put(key, b"me")])
    second = etcd_client.txn(absent, [Put(key, b"you")])
    assert (first.succeeded, second.succeeded) == (True, False)
    assert etcd_client.range(key).kvs[0].value == b"me"


@pytest.mark.parametrize(("result", "holds"), [
    ("<", [False, False, True]), (">", [True, False, False]),
    ("==", [False, True, False]), ("!=", [True, False, True]),
    ("LESS", [False, False, True]), ("GREATER", [True, False, False]),
])
def test_txn_compare_results_mean_what_they_say_to_etcd(etcd_client, etcd_prefix, result,
                                                          holds) -> None:
    # The key is at version 2: compared with 1, 2 and 3 (a "<" sent as GREATER fails here).
    key = f"{etcd_prefix}/k".encode()
    etcd_client.put(key, b"1")
    etcd_client.put(key, b"2")
    got = [etcd_client.txn([Compare(key, "VERSION", result, n)]).succeeded for n in (1, 2, 3)]
    assert got == holds


def test_txn_can_delete_and_put_atomically(etcd_client, etcd_prefix) -> None:
    a, b = f"{etcd_prefix}/a".encode(), f"{etcd_prefix}/b".encode()
    etcd_client.put(a, b"1")
    resp = etcd_client.txn([Compare(a, "CREATE", ">", 0)], [Delete(a), Put(b, b"2")])
    assert resp.succeeded is True
    deleted, _ = resp.responses
    assert isinstance(deleted, DeleteRangeResponse) and deleted.deleted == 1
    assert etcd_client.range(a).kvs == ()
    assert etcd_client.range(b).kvs[0].value == b"2"


# -- compact -----------------------------------------------------------------------------


def test_reading_a_compacted_revision_raises_etcd_compacted(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    old = etcd_client.put(key, "1").revision
    new = etcd_client.put(key, "2").revision
    etcd_client.compact(new)
    with pytest.raises(EtcdCompacted):
        etcd_client.range(key, revision=old)
    assert etcd_client.range(key, revision=new).kvs[0].value == b"2"


def test_reading_a_future_revision_raises_out_of_range(etcd_client, etcd_prefix) -> None:
    current = etcd_client.put(f"{etcd_prefix}/k", "v").revision
    with pytest.raises(EtcdOutOfRange) as info:
        etcd_client.range(f"{etcd_prefix}/k", revision=current + 1000)
    assert not isinstance(info.value, EtcdCompacted)


def test_compacting_an_already_compacted_revision_raises_etcd_compacted(
    etcd_client, etcd_prefix
) -> None:
    old = etcd_client.put(f"{etcd_prefix}/k", "1").revision
    etcd_client.compact(etcd_client.put(f"{etcd_prefix}/k", "2").revision)
    with pytest.raises(EtcdCompacted):
        etcd_client.compact(old)


# -- leases ------------------------------------------------------------------------------


def test_lease_grant_and_time_to_live(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/leased"
    lease = etcd_client.lease_grant(30)
    etcd_client.put(key, "v", lease=lease.id)
    info = etcd_client.lease_time_to_live(lease.id, keys=True)
    assert lease.id > 0 and lease.ttl == 30
    assert 0 < info.ttl <= 30 and info.granted_ttl == 30
    assert info.keys == (key.encode(),)
    assert etcd_client.range(key).kvs[0].lease == lease.id
    etcd_client.lease_revoke(lease.id)


def test_lease_keepalive_once_returns_the_ttl(etcd_client) -> None:
    lease = etcd_client.lease_grant(30)
    assert etcd_client.lease_keepalive_once(lease.id) == 30
    etcd_client.lease_revoke(lease.id)


def test_lease_revoke_deletes_its_keys_at_once(etcd_client, etcd_prefix) -> None:
    lease = etcd_client.lease_grant(30)
    etcd_client.put(f"{etcd_prefix}/a", "1", lease=lease.id)
    etcd_client.put(f"{etcd_prefix}/b", "2", lease=lease.id)
    etcd_client.lease_revoke(lease.id)
    assert etcd_client.range(f"{etcd_prefix}/", prefix=True).kvs == ()


@pytest.mark.parametrize(("ttl", "error"), [(0, ValueError), (-5, ValueError),
                                            (1.5, TypeError), (True, TypeError)])
def test_lease_grant_rejects_a_ttl_that_is_not_a_positive_int(ttl, error) -> None:
    client = EtcdClient("http://127.0.0.1:1")  # never contacted
    with pytest.raises(error, match="ttl"):
        client.lease_grant(ttl)


def test_a_revoked_lease_is_gone(etcd_client) -> None:
    lease = etcd_client.lease_grant(30)
    etcd_client.lease_revoke(lease.id)
    assert etcd_client.lease_time_to_live(lease.id).ttl == -1
    assert etcd_client.lease_keepalive_once(lease.id) == 0
    with pytest.raises(EtcdLeaseNotFound):
        etcd_client.lease_revoke(lease.id)


# -- cluster -----------------------------------------------------------------------------


def test_status_names_a_leader_among_the_members(etcd_client) -> None:
    status = etcd_client.status()
    assert status.version.startswith("3.")
    assert status.revision > 0 and status.raft_term > 0 and status.errors == ()
    assert status.leader in {m.id for m in etcd_client.members()}


def test_members_of_the_single_node_cluster(etcd_client, etcd_endpoint) -> None:
    (member,) = etcd_client.members()
    assert member.client_urls == (etcd_endpoint,)
    assert member.id == etcd_client.status().member_id


def test_version_names_the_server_and_cluster_versions(etcd_client) -> None:
    version = etcd_client.version()
    assert version["etcdserver"].startswith("3.")
    assert version["etcdcluster"].startswith("3.")


def test_machines_and_leader_are_client_urls(etcd_client, etcd_endpoint) -> None:
    assert etcd_client.machines() == [etcd_endpoint]
    assert etcd_client.leader() == etcd_endpoint


# -- classic calls: set, get, delete -------------------------------------------------------


def test_set_then_get_a_str(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    created = etcd_client.set(key, "värde")
    got = etcd_client.get(key)
    assert created.new_key is True and created.prev_value is None
    assert got.value == "värde" and isinstance(got.value, str) and got.key == key
    assert got.revision == created.revision and got.version == 1


def test_set_then_get_bytes(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k".encode()
    etcd_client.set(key, b"\xff\x00binary")
    got = etcd_client.get(key)
    assert got.value == b"\xff\x00binary" and isinstance(got.value, bytes)


def test_set_over_an_existing_key_returns_its_prev_value(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.set(key, "1")
    result = etcd_client.set(key, "2")
    assert (result.new_key, result.prev_value, result.value) == (False, "1", "2")


def test_get_of_an_absent_key_raises_key_error(etcd_client, etcd_prefix) -> None:
    with pytest.raises(EtcdKeyError) as info:
        etcd_client.get(f"{etcd_prefix}/absent")
    assert isinstance(info.value, KeyError)
    assert info.value.args == (f"{etcd_prefix}/absent",)


def test_delete_returns_the_prev_value_then_the_key_is_gone(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k".encode()
    etcd_client.set(key, b"v")
    assert etcd_client.delete(key).prev_value == b"v"
    with pytest.raises(EtcdKeyError):
        etcd_client.get(key)


def test_delete_of_an_absent_key_raises_key_error(etcd_client, etcd_prefix) -> None:
    with pytest.raises(KeyError):
        etcd_client.delete(f"{etcd_prefix}/absent")


def test_set_with_ttl_expires_the_key(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/ephemeral"
    result = etcd_client.set(key, "v", ttl=2)
    assert result.expiration is not None
    expected = datetime.now(timezone.utc) + timedelta(seconds=2)
    assert abs(result.expiration - expected) < timedelta(seconds=1)
    event = etcd_client.watch(key, timeout=10)
    assert event is not None and event.type == "DELETE" and event.key == key
    with pytest.raises(EtcdKeyError):
        etcd_client.get(key)


# -- classic calls: testandset, list, get_recursive ------------------------------------------


def test_testandset_replaces_the_expected_value(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.set(key, "old")
    result = etcd_client.testandset(key, "old", "new")
    assert (result.prev_value, result.value) == ("old", "new")
    assert etcd_client.get(key).value == "new"


def test_testandset_refuses_an_unexpected_value(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.set(key, "actual")
    with pytest.raises(EtcdCompareFailed):
        etcd_client.testandset(key, "expected", "new")
    assert etcd_client.get(key).value == "actual"


def test_testandset_of_an_absent_key_raises_key_error(etcd_client, etcd_prefix) -> None:
    key = f"{etcd_prefix}/absent"
    with pytest.raises(EtcdKeyError):
        etcd_client.testandset(key, "expected", "new")
    assert etcd_client.range(key).kvs == ()


def test_list_returns_each_immediate_child_once_as_a_record(etcd_client, etcd_prefix) -> None:
    base = f"{etcd_prefix}/dir"
    for name in ("a", "b/c", "b/d", "b/e/f", "g"):
        etcd_client.set(f"{base}/{name}", name.upper())
    etcd_client.set(f"{base}x/other", "v")
    listed = etcd_client.list(base)
    read_at = etcd_client.range(base).revision
    assert [(n.key, n.value, n.dir) for n in listed] == [
        (f"{base}/a", "A", False), (f"{base}/b", None, True), (f"{base}/g", "G", False)]
    assert listed[0].revision == etcd_client.get(f"{base}/a").revision
    assert listed[1].revision == read_at  # a directory: the revision of the listing
    assert etcd_client.list(base + "/") == listed


def test_list_names_a_child_once_when_names_sort_between_a_leaf_and_its_subtree(
        etcd_client, etcd_prefix) -> None:
    # "a" < "a-b" < "a/x": the leaf and the directory "a" are not adjacent in etcd.
    base = f"{etcd_prefix}/dir"
    for name in ("a", "a-b", "a/x"):
        etcd_client.set(f"{base}/{name}", "v")
    assert [(n.key, n.dir) for n in etcd_client.list(base)] == [
        (f"{base}/a", False), (f"{base}/a-b", False)]  # the leaf wins, as in a mapping


def test_list_keeps_the_seeds_loop_working(etcd_client, etcd_prefix) -> None:
    # etcd-py's README: for key in e.list("path"): print(key) -- now with the values.
    etcd_client.set(f"{etcd_prefix}/message1", "Hello")
    etcd_client.set(f"{etcd_prefix}/message2", 1)
    printed = [f"{node.key}={node.value}" for node in etcd_client.list(etcd_prefix)]
    assert printed == [f"{etcd_prefix}/message1=Hello", f"{etcd_prefix}/message2=1"]


def test_list_of_bytes_returns_bytes(etcd_client, etcd_prefix) -> None:
    base = f"{etcd_prefix}/dir".encode()
    etcd_client.set(base + b"/a/b", b"v")
    etcd_client.set(base + b"/c", b"w")
    assert [(n.key, n.value, n.dir) for n in etcd_client.list(base)] == [
        (base + b"/a", None, True), (base + b"/c", b"w", False)]


def test_list_pages_through_many_children(etcd_client, etcd_prefix) -> None:
    base = f"{etcd_prefix}/many"
    puts = [Put(f"{base}/{i:04}/x/{j}".encode(), b"v") for i in range(60) for j in range(2)]
    for i in range(0, len(puts), 100):
        etcd_client.txn(success=puts[i:i + 100])
    listed = etcd_client.list(base)
    assert [n.key for n in listed] == [f"{base}/{i:04}" for i in range(60)]
    assert all(n.dir for n in listed)


@pytest.mark.parametrize(("value", "stored"), [(1, "1"), (2.5, "2.5"), (True, "True")])
def test_set_stores_a_number_as_its_str_like_etcd_py(etcd_client, etcd_prefix, value,
                                                      stored) -> None:
    key = f"{etcd_prefix}/n"
    assert etcd_client.set(key, value).value == stored
    assert etcd_client.get(key).value == stored
    assert etcd_client.set(key.encode(), value).value == stored.encode()
    assert etcd_client.testandset(key, value, value * 2).value == str(value * 2)


def test_set_refuses_other_value_types(etcd_client, etcd_prefix) -> None:
    with pytest.raises(TypeError, match="value must be str, bytes, int or float"):
        etcd_client.set(f"{etcd_prefix}/n", [1])
    assert etcd_client.range(f"{etcd_prefix}/n").kvs == ()


def test_get_recursive_returns_a_flat_dict(etcd_client, etcd_prefix) -> None:
    base = f"{etcd_prefix}/dir"
    etcd_client.set(f"{base}/a", "1")
    etcd_client.set(f"{base}/b/c", "2")
    assert etcd_client.get_recursive(base + "/") == {f"{base}/a": "1", f"{base}/b/c": "2"}


def test_get_recursive_does_not_include_a_sibling_directory(etcd_client, etcd_prefix) -> None:
    # Like list(): "under dir" means under "dir/", so "dirx/..." is not included.
    base = f"{etcd_prefix}/dir"
    etcd_client.set(f"{base}/a", "1")
    etcd_client.set(f"{base}x/other", "2")
    assert etcd_client.get_recursive(base) == {f"{base}/a": "1"}


# -- classic calls: get_many ----------------------------------------------------------------


def test_get_many_returns_the_present_keys_as_str_or_bytes(etcd_client, etcd_prefix,
                                                           http_log) -> None:
    base = f"{etcd_prefix}/many"
    put_all(etcd_client, base, a="1", b="2", c="")
    keys = [f"{base}/a", f"{base}/missing", f"{base}/c", f"{base}/b", f"{base}"]
    in_txns = reads_in_txns(etcd_client)
    http_log.clear()
    assert etcd_client.get_many(keys) == {f"{base}/a": "1", f"{base}/b": "2", f"{base}/c": ""}
    assert_reads(http_log, etcd_client, in_txns=in_txns, keys=len(keys), per_key=1)
    http_log.clear()
    assert etcd_client.get_many([k.encode() for k in keys]) == {
        f"{base}/a".encode(): b"1", f"{base}/b".encode(): b"2", f"{base}/c".encode(): b""}
    assert_reads(http_log, etcd_client, in_txns=in_txns, keys=len(keys), per_key=1)
    http_log.clear()
    assert etcd_client.get_many([]) == {}
    assert http_log == []


def test_get_many_of_more_keys_than_one_transaction_holds(etcd_client, etcd_prefix,
                                                          http_log) -> None:
    limit = etcd_client.max_txn_ops
    present = {f"{etcd_prefix}/k{i:03}": str(i) for i in range(limit + 20)}
    for i in range(0, len(present), limit):
        etcd_client.txn(success=[Put(k.encode(), v.encode())
                                 for k, v in list(present.items())[i:i + limit]])
    wanted = [*present, *(f"{etcd_prefix}/gone{i}" for i in range(5))]
    in_txns = reads_in_txns(etcd_client)
    http_log.clear()
    assert etcd_client.get_many(wanted) == present
    assert_reads(http_log, etcd_client, in_txns=in_txns, keys=len(wanted), per_key=1)


# -- classic calls: watch ------------------------------------------------------------------


def test_watch_returns_the_next_put_from_another_thread(etcd_client, etcd_prefix,
                                                       monkeypatch) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.set(key, "before")
    # The other thread puts once the watch is established: the put can neither
    # come before the watch nor be missed by it.
    writer = once_watching(etcd_client, monkeypatch, lambda: etcd_client.put(key, "after"))
    event = etcd_client.watch(key, timeout=10)
    writer.join()
    assert event is not None
    assert (event.type, event.key, event.value, event.prev_value) == (
        "PUT", key, "after", "before",
    )


def test_watch_returns_none_after_the_timeout(etcd_client, etcd_prefix) -> None:
    started = time.monotonic()
    assert etcd_client.watch(f"{etcd_prefix}/quiet", timeout=0.5) is None
    assert 0.4 < time.monotonic() - started < 3


# -- construction ----------------------------------------------------------------------------


def test_client_reads_etcdctl_endpoints(monkeypatch) -> None:
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "http://10.0.0.1:2379,10.0.0.2:2379")
    assert EtcdClient().endpoints == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]


@pytest.mark.no_transport
@pytest.mark.parametrize(("endpoints", "error", "fragment"), [
    ("http://127.0.0.1:notaport", ValueError, "invalid port"),
    ("http://127.0.0.1:99999", ValueError, "invalid port"),
    ("127.0.0.1:0", ValueError, "invalid port"),
    ("http://127.0.0.1:", ValueError, "invalid port"),
    ("ftp://127.0.0.1:2379", ValueError, "invalid etcd endpoint"),
    ("http://alice:pw@127.0.0.1:2379", ValueError, "username=/password="),
    (" , ", ValueError, "no etcd endpoint"),
    (5, TypeError, "endpoints must be"),
    (b"http://127.0.0.1:2379", TypeError, "endpoints must be"),
    ([5], TypeError, "str URLs"),
])
def test_a_malformed_endpoint_is_refused_at_once(endpoints: object, error: type[Exception],
                                                 fragment: str) -> None:
    with pytest.raises(error, match=fragment) as caught:
        EtcdClient(endpoints)  # type: ignore[arg-type]
    assert "pw" not in str(caught.value)


@pytest.mark.no_transport
def test_endpoints_in_any_of_their_usual_spellings() -> None:
    assert EtcdClient(["127.0.0.1:2379", "https://[::1]:2379/"]).endpoints == [
        "http://127.0.0.1:2379", "https://[::1]:2379"]
    assert EtcdClient(("localhost",)).endpoints == ["http://localhost"]


def test_client_defaults_to_localhost_2379(monkeypatch) -> None:
    monkeypatch.delenv("ETCDCTL_ENDPOINTS", raising=False)
    assert EtcdClient().endpoints == ["http://127.0.0.1:2379"]


def test_repr_does_not_show_the_password() -> None:
    client = EtcdClient("http://127.0.0.1:2379", username="alice", password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(client)
    assert "127.0.0.1:2379" in repr(client)


def test_client_is_a_context_manager(etcd_endpoint, etcd_prefix) -> None:
    with EtcdClient(etcd_endpoint) as client:
        client.put(f"{etcd_prefix}/k", "v")
        assert client.get(f"{etcd_prefix}/k").value == "v"
    with pytest.raises(RuntimeError), EtcdClient(etcd_endpoint):
        raise RuntimeError("not swallowed")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_raises_connection_error_within_the_timeout() -> None:
    started = time.monotonic()
    with EtcdClient(f"http://127.0.0.1:{closed_port()}", timeout=0.5) as client, \
            pytest.raises(EtcdConnectionError) as info:
        client.range("k")
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 3
