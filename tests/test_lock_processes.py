"""Locks across real processes (issue 13): mutual exclusion, also through a leader's
death, and a holder that lost its lock while paused is fenced off.

The workers are separate Python processes (``coordination_workers.py``) that
report what they did on stdout; every wait for them is bounded, and what the
test does next depends on their reports and on what etcd holds, never on
timing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from coordination_workers import Flock, Worker, workers
from helpers import wait_until

from etcdmap import EtcdClient, EtcdMapping
from etcdmap.launcher.server import _binary_version, find_etcd_binary
from etcdmap.testing import EtcdCluster

PROCESSES = 8
CYCLES = 50
CLUSTER_CYCLES = 20  # on the cluster: enough on both sides of the kill, in half the time
RUN = 60.0  # seconds all workers together may take


def run_counters(endpoints: list[str], prefix: str, cycles: int = CYCLES,
                 midway: Callable[[], None] | None = None) -> tuple[int, list[dict[str, Any]]]:
    """``PROCESSES`` workers each do ``cycles`` locked read-increment-writes of one
    plain key; ``midway()`` runs once half of them are done.  The final count, and
    each worker's report."""
    with workers() as (inbox, started), EtcdClient(endpoints, timeout=2,
                                                   retry_deadline=15) as client:
        m = EtcdMapping(prefix, client=client)
        flock = Flock(inbox, PROCESSES, "count", ",".join(endpoints), prefix, "p",
                      str(cycles), "5")
        started.append(flock)
        if midway is not None:
            half = PROCESSES * cycles // 2
            wait_until(lambda: int(m.get("counter", "0")) >= half, RUN, "half the cycles done")
            midway()
        finished = [w.expect("finished", RUN) for w in flock.members]
        assert flock.finish() == 0, flock.members
        assert len({r["pid"] for r in finished}) == PROCESSES  # one process each
        return int(m["counter"]), finished


def test_eight_processes_count_exactly_under_the_lock(
        etcd_endpoint: str, etcd_prefix: str) -> None:
    count, reports = run_counters([etcd_endpoint], etcd_prefix)
    assert [r["done"] for r in reports] == [CYCLES] * PROCESSES, reports
    assert count == PROCESSES * CYCLES == 400


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    # Members are killed, never the machine: what the OS has is not lost, so etcd
    # 3.5+ may skip fsync (the cycles take a quarter less time on a small machine).
    version = tuple(int(n) for n in _binary_version(find_etcd_binary(None)).split(".")[:2])
    with EtcdCluster(3, extra_args=["--unsafe-no-fsync"] if version >= (3, 5) else []) as c:
        yield c


def heal(cluster: EtcdCluster) -> None:
    """Every member running and healthy again, and a leader."""
    for member in cluster.members:
        if member.paused:
            member.resume()
        if not member.running:
            member.start(wait=False)  # all first: one alone has no quorum to be healthy
    for member in cluster.members:
        member.wait_healthy(30)
    cluster.wait_for_leader(timeout=30)


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_the_count_stays_exact_when_the_leader_dies_midway(
        cluster: EtcdCluster, etcd_prefix: str) -> None:
    killed: list[int] = []

    def kill_the_leader() -> None:
        killed.append(cluster.leader_index())
        cluster.kill(killed[0])

    try:
        count, reports = run_counters(cluster.endpoints, etcd_prefix, CLUSTER_CYCLES,
                                      kill_the_leader)
    finally:
        heal(cluster)
    assert killed
    assert [r["unknown"] for r in reports] == [0] * PROCESSES, reports
    # A cycle that raised before its write landed is not counted, by the one who ran it.
    assert count == sum(r["done"] for r in reports), reports
    assert count > PROCESSES * CLUSTER_CYCLES // 2


def test_a_holder_paused_past_its_ttl_is_fenced_off(
        etcd_endpoint: str, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    with workers() as (inbox, started):
        a = Worker(inbox, "hold", etcd_endpoint, etcd_prefix, "A", "2")
        started.append(a)
        held = a.expect("held")
        a.signal(signal.SIGSTOP)
        try:
            # The server lets the paused holder's lease lapse, and deletes its key.
            wait_until(lambda: etcd_client.lease_time_to_live(held["lease"]).ttl == -1,
                       15, "A's lease gone")
            b = Worker(inbox, "hold", etcd_endpoint, etcd_prefix, "B", "10")
            started.append(b)
            b_held = b.expect("held")
            assert b_held["revision"] > held["revision"]  # a newer fencing token
            b.tell()
            b.expect("wrote")
        finally:
            a.signal(signal.SIGCONT)
        a.tell()  # A, resumed, still believes in its lock until it looks
        refused = a.expect("refused")
        assert refused["is_held"] is False and refused["told"] is True
        assert m["value"] == "B"  # nothing A wrote after losing the lock landed
        for worker in (a, b):
            worker.tell()
            worker.expect("released")
            assert worker.finish() == 0
    # A was told once, by whichever noticed first: its watch of its key, or its keepalive.
    assert [r["what"] for r in a.reports].count("on_lost") == 1, a.reports
    assert m["value"] == "B"
    assert "lock" not in m  # both released: no key left
