"""TTLs: ``with_ttl`` views, ``ttl(key)`` and ``set(..., ttl=...)``, against a real etcd.

Expiry is real: the tests write with the server's minimum TTL (2 s) and poll,
in bounded loops, until etcd has deleted the keys.  Reads through ``raw()``
show what etcd really stores (which lease a key is attached to).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import responses
from helpers import wait_until

from etcdmap import EtcdClient, EtcdKeyError, EtcdMapping
from etcdmap.records import KeyValue

# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A str-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client)


def raw(client: EtcdClient, prefix: str, key: str) -> KeyValue:
    """The key-value etcd stores at ``prefix/key`` (with its lease id)."""
    kvs = client.range(f"{prefix}/{key}").kvs
    assert kvs, f"{key!r} is not stored"
    return kvs[0]


# -- with_ttl -------------------------------------------------------------------------


def test_a_key_written_through_a_ttl_view_is_there_at_once_and_gone_after_its_ttl(
        m: EtcdMapping) -> None:
    m.with_ttl(2)["session"] = "alive"
    assert m["session"] == "alive"
    gone_after = wait_until(lambda: "session" not in m, timeout=8)
    assert gone_after > 1.5  # etcd expired it, not something sooner
    assert m.to_dict() == {}


def test_a_ttl_view_reads_the_whole_prefix_and_plain_writes_keep_no_lease(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["plain"] = "forever"
    view = m.with_ttl(30)
    view["leased"] = "for a while"
    assert view.to_dict() == {"plain": "forever", "leased": "for a while"}
    assert view["plain"] == "forever" and len(view) == 2
    assert m["leased"] == "for a while"
    assert raw(etcd_client, etcd_prefix, "plain").lease == 0
    assert raw(etcd_client, etcd_prefix, "leased").lease != 0


def test_a_ttl_view_attaches_a_lease_of_its_ttl_to_every_key_of_a_write(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m.with_ttl(30)["cfg"] = {"a": "1", "b": {"c": "2"}}
    leases = {raw(etcd_client, etcd_prefix, k).lease for k in ("cfg/a", "cfg/b/c")}
    (lease,) = leases  # one write, one lease
    info = etcd_client.lease_time_to_live(lease, keys=True)
    assert info.granted_ttl == 30
    assert sorted(info.keys) == [f"{etcd_prefix}/cfg/a".encode(), f"{etcd_prefix}/cfg/b/c".encode()]


def test_each_write_through_a_ttl_view_gets_a_fresh_lease(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    view = m.with_ttl(30)
    view["a"] = "1"
    view.update({"b": "2"})
    first, second = (raw(etcd_client, etcd_prefix, k).lease for k in "ab")
    assert first and second and first != second


def test_rewriting_a_ttl_key_restarts_its_ttl(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    view = m.with_ttl(3)
    view["k"] = "v1"
    first_lease = raw(etcd_client, etcd_prefix, "k").lease
    time.sleep(1.5)
    view["k"] = "v2"  # a new lease, expiring 3 s from now
    # Once the server has forgotten the first lease, the key is still there.
    wait_until(lambda: etcd_client.lease_time_to_live(first_lease).granted_ttl == 0, timeout=5)
    assert m["k"] == "v2"


def test_a_ttl_view_of_a_submapping_expires_only_its_own_writes(m: EtcdMapping) -> None:
    m["keep"] = "1"
    sessions = m.submapping("sessions").with_ttl(2)
    sessions["a"] = "x"
    sessions["b/c"] = "y"
    assert m.to_dict() == {"keep": "1", "sessions": {"a": "x", "b": {"c": "y"}}}
    wait_until(lambda: "sessions" not in m, timeout=8)
    assert m.to_dict() == {"keep": "1"}


def test_a_submapping_of_a_ttl_view_writes_with_the_same_ttl(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m.with_ttl(30).submapping("sessions")["a"] = "x"
    lease = raw(etcd_client, etcd_prefix, "sessions/a").lease
    assert lease and etcd_client.lease_time_to_live(lease).granted_ttl == 30


@pytest.mark.parametrize(("seconds", "error"), [
    (0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError),
    (None, TypeError),
])
def test_with_ttl_takes_a_positive_int_of_seconds(m: EtcdMapping, seconds: object,
                                                  error: type[Exception]) -> None:
    with pytest.raises(error, match="ttl"):
        m.with_ttl(seconds)  # type: ignore[arg-type]


# -- ttl(key) -----------------------------------------------------------------------------


def test_ttl_of_a_key_without_a_lease_is_none(m: EtcdMapping) -> None:
    m["plain"] = "x"
    assert m.ttl("plain") is None


def test_ttl_of_a_key_written_through_a_ttl_view_is_its_remaining_seconds(
        m: EtcdMapping) -> None:
    m.with_ttl(30)["k"] = "v"
    left = m.ttl("k")
    assert left is not None and 0 < left <= 30


def test_ttl_of_a_key_written_through_a_lease_view_is_the_leases_remaining_seconds(
        m: EtcdMapping) -> None:
    with m.lease(20) as live:
        live["k"] = "v"
        left = m.ttl("k")
        assert left is not None and 0 < left <= 20


def test_ttl_counts_down_within_the_granted_seconds_until_the_key_is_gone(
        m: EtcdMapping) -> None:
    # Every answer is in [0, 2] and never rises; KeyError comes only once the
    # key is really gone (not in the lease's last second, while it is still there).
    m.with_ttl(2)["k"] = "v"
    answers: list[int] = []

    def gone() -> bool:
        try:
            left = m.ttl("k")
        except KeyError:
            assert "k" not in m, f"ttl() raised KeyError while the key is there ({answers})"
            return True
        assert left is not None and 0 <= left <= 2, left
        assert not answers or left <= answers[-1], (answers, left)
        answers.append(left)
        return False

    wait_until(gone, timeout=8, what="expired")
    assert answers


@pytest.mark.http_only  # the gateway's JSON omits the zero TTL; protobuf reads it as 0
def test_ttl_in_the_last_second_of_a_lease_is_zero_not_key_error(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_endpoint: str, etcd_prefix: str) -> None:
    # In a lease's last second the gateway omits the zero "TTL" and sends only
    # "grantedTTL" (a gone lease says "TTL": "-1").  No test can hit that second
    # on purpose, so this one reply is the real server's reply with "TTL" taken
    # out, served by ``responses``; every other request goes to the real etcd.
    m.with_ttl(60)["k"] = "v"
    lease = raw(etcd_client, etcd_prefix, "k").lease
    url = f"{etcd_endpoint}/v3/lease/timetolive"
    body = requests.post(url, json={"ID": lease}, timeout=5).json()
    assert body["ID"] == str(lease) and int(body["TTL"]) > 0  # the real shape
    del body["TTL"]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.add_passthru(etcd_endpoint)
        mock.post(url, json=body)
        assert m.ttl("k") == 0
        assert [call.request.url for call in mock.calls][-1] == url  # the served reply


def test_ttl_of_a_missing_key_raises_key_error(m: EtcdMapping) -> None:
    with pytest.raises(EtcdKeyError):
        m.ttl("missing")


# -- the client's set(ttl=...) ------------------------------------------------------------


def test_set_with_a_ttl_reports_when_the_key_expires_and_it_does(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    before = datetime.now(timezone.utc)
    result = etcd_client.set(key, "v", ttl=2)
    after = datetime.now(timezone.utc)
    assert result.expiration is not None and result.expiration.utcoffset() == timedelta(0)
    assert before + timedelta(seconds=2) <= result.expiration <= after + timedelta(seconds=2)
    event = etcd_client.watch(key, timeout=8)
    assert event is not None and event.type == "DELETE"
    assert datetime.now(timezone.utc) >= result.expiration - timedelta(seconds=0.5)


def test_set_with_a_ttl_below_the_servers_minimum_reports_the_real_expiration(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    before = datetime.now(timezone.utc)
    result = etcd_client.set(key, "v", ttl=1)  # etcd rounds it up to its minimum, 2 s
    lease = etcd_client.get(key).lease
    granted = etcd_client.lease_time_to_live(lease).granted_ttl
    assert granted >= 2
    assert result.expiration is not None
    assert result.expiration >= before + timedelta(seconds=granted)


def test_set_without_a_ttl_has_no_expiration_and_no_lease(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    assert etcd_client.set(key, "v").expiration is None
    assert etcd_client.get(key).lease == 0
