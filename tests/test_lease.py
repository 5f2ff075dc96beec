"""``with cfg.lease(ttl) as live``: one shared lease, kept alive, revoked at the end.

Against a real etcd.  Lapses are real: a lease without keepalive, a lease
revoked behind the view's back, and a keepalive cut off from a paused server
(its own :class:`~etcdmap.testing.EtcdServer`; the session server is shared).
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import wait_until

from etcdmap import EtcdClient, EtcdLeaseExpired, EtcdMapping
from etcdmap.lease import Lease
from etcdmap.testing import EtcdServer

# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A str-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client)


def keepalive_thread(lease: Lease) -> threading.Thread:
    """The thread refreshing ``lease``."""
    (thread,) = [t for t in threading.enumerate() if t.name == f"etcdmap-lease-{lease.id:x}"]
    return thread


def keepalive_thread_alive(lease: Lease) -> bool:
    """Whether a thread is still refreshing ``lease`` (given a moment to finish)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not any(t.name == f"etcdmap-lease-{lease.id:x}" for t in threading.enumerate()):
            return False
        time.sleep(0.05)
    return True


def lease_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("etcdmap-lease-")]


class Calls:
    """An ``on_expired`` callback that records its calls."""

    def __init__(self) -> None:
        self.leases: list[Lease] = []
        self.event = threading.Event()

    def __call__(self, lease: Lease) -> None:
        self.leases.append(lease)
        self.event.set()


# -- one lease, revoked at the end ---------------------------------------------------------


def test_keys_written_through_a_lease_view_share_its_one_lease(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    with m.lease(60) as live:
        live["a"] = "1"
        live.update({"b/c": "2"})
        live.submapping("d")["e"] = "3"
        lease = live.current_lease
        assert lease is not None
        keys = etcd_client.lease_time_to_live(lease.id, keys=True).keys
    assert sorted(keys) == [f"{etcd_prefix}/{k}".encode() for k in ("a", "b/c", "d/e")]


def test_a_lease_view_reads_the_whole_prefix(m: EtcdMapping) -> None:
    m["plain"] = "x"
    with m.lease(60) as live:
        live["leased"] = "y"
        assert live.to_dict() == {"plain": "x", "leased": "y"}
        assert m.current_lease is None  # the mapping itself stays lease-free


def test_leased_keys_vanish_at_once_when_the_block_ends(m: EtcdMapping) -> None:
    m["plain"] = "stays"
    with m.lease(60) as live:
        live["a"] = "1"
        live["b/c"] = "2"
        assert m.to_dict() == {"plain": "stays", "a": "1", "b": {"c": "2"}}
    assert m.to_dict() == {"plain": "stays"}  # no waiting: revoked, not expired


def test_leased_keys_vanish_at_once_when_the_block_raises(m: EtcdMapping) -> None:
    with pytest.raises(ZeroDivisionError), m.lease(60) as live:
        live["a"] = "1"
        1 / 0  # noqa: B018
    assert m.to_dict() == {}


def test_ending_the_block_normally_does_not_call_on_expired(m: EtcdMapping) -> None:
    calls = Calls()
    with m.lease(60, on_expired=calls) as live:
        live["a"] = "1"
    assert calls.leases == []


# -- keepalive -------------------------------------------------------------------------------


def test_keepalive_keeps_a_two_second_lease_alive_well_past_its_ttl(m: EtcdMapping) -> None:
    with m.lease(2) as live:
        live["k"] = "v"
        lease = live.current_lease
        assert lease is not None and lease.ttl == 2
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert m["k"] == "v"
            time.sleep(0.25)
        live["later"] = "w"  # the lease is still good for writes
        assert not lease.expired
        assert m.to_dict() == {"k": "v", "later": "w"}


def test_the_keepalive_thread_is_a_daemon_joined_when_the_block_ends(m: EtcdMapping) -> None:
    with m.lease(30) as live:
        assert live.current_lease is not None
        thread = keepalive_thread(live.current_lease)
        assert thread.daemon and thread.is_alive()
    assert not thread.is_alive()  # joined by the exit, not merely told to stop


def test_closing_the_client_stops_its_keepalive_threads(etcd_endpoint: str) -> None:
    before = set(lease_threads())
    client = EtcdClient(etcd_endpoint)
    leases = [client.lease(30), client.lease(30)]
    threads = set(lease_threads()) - before
    assert len(threads) == 2
    started = time.monotonic()
    client.close()
    for thread in threads:
        thread.join(timeout=2)
        assert not thread.is_alive()
    assert time.monotonic() - started < 2
    with EtcdClient(etcd_endpoint) as cleanup:
        for lease in leases:
            cleanup.lease_revoke(lease.id)


# -- lapses ------------------------------------------------------------------------------------


def test_without_keepalive_the_lease_lapses_and_the_next_write_raises_lease_expired(
        m: EtcdMapping) -> None:
    calls = Calls()
    with m.lease(2, keepalive=False, on_expired=calls) as live:
        live["k"] = "v"
        wait_until(lambda: "k" not in m, timeout=8)  # etcd expired the lease
        with pytest.raises(EtcdLeaseExpired):
            live["k2"] = "w"
        with pytest.raises(EtcdLeaseExpired):
            live["k3"] = "w"
        assert calls.leases == [live.current_lease]  # exactly once
    assert m.to_dict() == {}


def test_a_lease_revoked_behind_the_views_back_makes_the_next_write_raise_lease_expired(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    calls = Calls()
    with m.lease(60, on_expired=calls) as live:
        live["k"] = "v"
        lease = live.current_lease
        assert lease is not None
        etcd_client.lease_revoke(lease.id)
        assert "k" not in m
        with pytest.raises(EtcdLeaseExpired) as info:
            live["k2"] = "w"
        assert type(info.value) is EtcdLeaseExpired  # not a raw EtcdLeaseNotFound
        assert calls.leases == [lease]
        assert lease.expired
    assert m.to_dict() == {}


def test_the_keepalive_notices_a_revoked_lease_and_calls_on_expired(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    calls = Calls()
    with m.lease(2, on_expired=calls) as live:  # refreshed every ~0.7 s
        lease = live.current_lease
        assert lease is not None
        etcd_client.lease_revoke(lease.id)
        assert calls.event.wait(3), "the keepalive did not report the revoked lease"
        assert lease.expired
        assert not keepalive_thread_alive(lease)
        with pytest.raises(EtcdLeaseExpired):
            live["k"] = "v"
    assert calls.leases == [lease]


def test_an_on_expired_callback_that_raises_does_not_hide_the_lapse(
        m: EtcdMapping, etcd_client: EtcdClient) -> None:
    def broken(lease: Lease) -> None:
        raise RuntimeError("callback bug")

    with m.lease(60, on_expired=broken) as live:
        assert live.current_lease is not None
        etcd_client.lease_revoke(live.current_lease.id)
        with pytest.raises(EtcdLeaseExpired):
            live["k"] = "v"
        with pytest.raises(EtcdLeaseExpired):
            live["k"] = "v"


def test_a_keepalive_cut_off_from_a_paused_server_reports_the_lapse() -> None:
    calls = Calls()
    with EtcdServer() as server, EtcdClient(server.endpoint, timeout=1) as client:
        m = EtcdMapping("app", client=client)
        with m.lease(2, on_expired=calls) as live:
            live["k"] = "v"
            server.pause()
            paused = time.monotonic()
            try:
                reported = calls.event.wait(6)
                after = time.monotonic() - paused
            finally:
                server.resume()
            assert reported, "no on_expired while the server was unreachable"
            assert after > 1.0  # not before the lease's last known expiry
            with pytest.raises(EtcdLeaseExpired):
                live["k2"] = "w"
            assert calls.leases == [live.current_lease]
        assert "k2" not in m
