"""Leases on a real 3-member cluster: a stalled member must not cost a lease.

The member the client talks to is frozen (SIGSTOP: it accepts connections but
never answers) for longer than the lease's TTL.  Two healthy members could
refresh the lease all along, so it must survive: each refresh attempt is
bounded by the time the lease has left, and the next member is asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from etcdmap import EtcdClient, EtcdMapping, Lease
from etcdmap.testing import EtcdCluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        yield c


@pytest.mark.timeout(90)
@pytest.mark.parametrize("timeout", [5.0, 10.0])
def test_a_lease_survives_a_stall_of_its_member_longer_than_its_ttl(
        cluster: EtcdCluster, timeout: float) -> None:
    leader = cluster.leader_index()
    first = (leader + 1) % 3  # a follower: the cluster keeps its leader
    order = cluster.endpoints[first:] + cluster.endpoints[:first]
    expired: list[Lease] = []
    with EtcdClient(order, timeout=timeout) as client:  # the default 5 s, and longer
        m = EtcdMapping(f"stall-{timeout}", client=client)
        with m.lease(4, on_expired=expired.append) as live:
            live["member"] = "up"
            lease = live.current_lease
            assert lease is not None and client.endpoints[0] == order[0]
            cluster.pause(first)
            try:
                time.sleep(8)  # the fault: twice the lease's TTL (not a synchronisation)
            finally:
                cluster.resume(first)
            assert expired == [], "the lease expired though two members could refresh it"
            assert not lease.expired
            with EtcdClient(cluster.endpoints[leader]) as other:
                assert other.get(f"stall-{timeout}/member").value == "up"
                assert other.lease_time_to_live(lease.id).ttl > 0
        assert "member" not in m  # revoked at the end of the block
