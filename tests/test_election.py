"""Leader elections (issue 13): campaign, leader, proclaim, resign, observe, and a lost
leadership that says so; then five processes whose leaders are killed one by one.

Orderings are shown by events, by what etcd holds and by the processes'
reports (stamped with the one monotonic clock of the machine), never by
sleeping.
"""

from __future__ import annotations

import gc
import itertools
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from coordination_workers import WAIT, Worker, workers
from helpers import wait_until

from etcdmap import Election, EtcdClient, EtcdLockLost, EtcdLockTimeout, EtcdMapping


@pytest.fixture
def m(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    return EtcdMapping(etcd_prefix, client=etcd_client)


@pytest.fixture
def candidates(etcd_client: EtcdClient, etcd_prefix: str) -> Callable[[], list[Any]]:
    """The candidates' keys as etcd holds them, the leader first."""
    def keys() -> list[Any]:
        return list(etcd_client.range(f"{etcd_prefix}/leader/", prefix=True,
                                      sort_order="ASCEND", sort_target="CREATE").kvs)
    return keys


def campaign_in_thread(election: Election, value: str) -> tuple[threading.Thread, list[Any]]:
    """A thread campaigning; its outcome (None, or what it raised) in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            election.campaign(value, timeout=WAIT)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"campaign-{value}")
    thread.start()
    return thread, outcome


def test_campaign_proclaim_and_resign(
        m: EtcdMapping, etcd_client: EtcdClient, candidates: Callable[[], list[Any]]) -> None:
    election = m.election("leader")
    assert election.leader() is None and not election.is_leader and election.revision is None
    election.campaign("node-1")
    assert election.is_leader and election.leader() == "node-1"
    [kv] = candidates()
    assert kv.value == b"node-1" and election.revision == kv.create_revision
    election.proclaim("node-1 at v2")
    assert election.leader() == "node-1 at v2"
    assert candidates()[0].create_revision == kv.create_revision  # the same leadership
    election.campaign("again")  # already leading: a proclamation
    assert election.leader() == "again" and len(candidates()) == 1
    election.resign()
    assert not election.is_leader and election.leader() is None and candidates() == []
    assert etcd_client.lease_time_to_live(kv.lease).ttl == -1
    with pytest.raises(EtcdLockLost, match="not leading"):
        election.proclaim("too late")
    election.resign()  # twice: nothing to do


def test_the_next_candidate_leads_once_the_leader_resigns(
        m: EtcdMapping, candidates: Callable[[], list[Any]]) -> None:
    first, second = m.election("leader"), m.election("leader")
    first.campaign("first")
    with pytest.raises(EtcdLockTimeout):
        second.campaign("second", timeout=0.3)
    assert [kv.value for kv in candidates()] == [b"first"]  # the timed-out one left no key
    thread, outcome = campaign_in_thread(second, "second")
    wait_until(lambda: len(candidates()) == 2, WAIT, "second queued")
    assert second.leader() == "first" and not second.is_leader
    first.resign()
    thread.join(WAIT)
    assert outcome == [None]
    assert second.is_leader and first.leader() == "second"
    assert second.run("second", lambda x: x * 2, 21) == 42  # kazoo's run(): then resigns
    assert not second.is_leader and candidates() == []


def test_observe_sees_every_leader_and_value_in_order(
        m: EtcdMapping, candidates: Callable[[], list[Any]]) -> None:
    a, b, c = (m.election("leader") for _ in range(3))
    a.campaign("a")
    with a.observe() as seen:
        assert seen.next_leader(WAIT) == "a"  # the current leader, first
        a.proclaim("a2")
        assert seen.next_leader(WAIT) == "a2"
        thread, outcome = campaign_in_thread(b, "b")
        wait_until(lambda: len(candidates()) == 2, WAIT, "b queued")
        a.resign()  # b takes over in the same revision
        assert seen.next_leader(WAIT) == "b"
        thread.join(WAIT)
        assert outcome == [None]
        b.resign()
        c.campaign("c")  # after a moment without a leader
        assert seen.next_leader(WAIT) == "c"
        c.resign()
    assert seen.closed and seen.next_leader(WAIT) is None


def test_closing_an_observer_ends_an_iteration_in_another_thread(m: EtcdMapping) -> None:
    election = m.election("leader")
    election.campaign("only")
    observer = election.observe()
    got: queue.Queue[str | None] = queue.Queue()

    def follow() -> None:
        for value in observer:
            got.put(value)
        got.put(None)  # the iteration ended

    thread = threading.Thread(target=follow)
    thread.start()
    assert got.get(timeout=WAIT) == "only"
    observer.close()  # the thread is blocked waiting for the next change
    assert got.get(timeout=WAIT) is None
    thread.join(WAIT)
    assert not thread.is_alive()
    election.resign()


def test_a_lost_leadership_says_so_and_fences_its_writes(
        m: EtcdMapping, etcd_client: EtcdClient, candidates: Callable[[], list[Any]]) -> None:
    told: list[Election] = []
    lost = threading.Event()

    def on_lost(election: Election) -> None:
        told.append(election)
        lost.set()

    election = m.election("leader", on_lost=on_lost)
    election.campaign("me")
    guarded = m.submapping("data").guarded(election)
    guarded["term"] = "mine"
    etcd_client.lease_revoke(candidates()[0].lease)  # as if it lapsed
    assert lost.wait(WAIT)
    assert told == [election] and not election.is_leader and election.revision is None
    with pytest.raises(EtcdLockLost):
        guarded["term"] = "stale"
    with pytest.raises(EtcdLockLost):
        election.proclaim("stale")
    assert m.submapping("data").to_dict() == {"term": "mine"}
    election.campaign("me again", timeout=WAIT)  # a lost candidate may run again
    assert election.is_leader and election.leader() == "me again"
    election.resign()
    assert told == [election]  # resigning is no loss


def test_a_dropped_observer_closes_itself_with_a_resource_warning(m: EtcdMapping) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.election("leader").observe()  # dropped at once
        gc.collect()
    found = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(found) == 1 and "Observer" in found[0], found


# -- five processes, leaders killed ------------------------------------------------------------


PROCESSES = 5


def test_one_leader_at_a_time_while_leaders_are_killed(
        etcd_endpoint: str, etcd_prefix: str, m: EtcdMapping) -> None:
    """Each process campaigns (TTL 2 s); the test kills each leader in turn (SIGKILL: its
    lease lapses on the server), until the last one resigns."""
    leaders: list[Worker] = []
    with m.election("leader").observe() as seen, workers() as (inbox, started):
        for i in range(PROCESSES):
            started.append(Worker(inbox, "campaign", etcd_endpoint, etcd_prefix, f"p{i}", "2"))
        for turn in range(PROCESSES):
            while True:  # the next leader's report (others say they campaign)
                worker, report = inbox.get(timeout=WAIT * 2)
                if report["what"] == "lead":
                    break
            leaders.append(worker)
            assert seen.next_leader(WAIT) == worker.name  # observe() saw the same change
            worker.expect("wrote")  # its guarded write as leader landed
            assert m["term"] == worker.name
            if turn < PROCESSES - 1:
                worker.kill()
        last = leaders[-1]
        assert last.finish() == 0  # end of input: it resigns
        assert [r["what"] for r in last.reports][-1] == "resigned"
        assert seen.next_leader(0.5) is None  # and no other leader came meanwhile
    names = [w.name for w in leaders]
    assert sorted(names) == [f"p{i}" for i in range(PROCESSES)]
    # One at a time: each led only after the one before it was dead, by one clock.
    for before, after in itertools.pairwise(leaders):
        led = next(r["at"] for r in after.reports if r["what"] == "lead")
        assert before.died_at is not None and led > before.died_at, (before, after)
    revisions = [next(r["revision"] for r in w.reports if r["what"] == "lead") for w in leaders]
    assert revisions == sorted(revisions)  # fencing tokens only grow
    assert not any(r["what"] == "lost" for w in started for r in w.reports)  # none lapsed


def test_bad_arguments_are_refused_at_once(m: EtcdMapping) -> None:
    election = m.election("checked")
    for value in (None, 123, b"x"):
        with pytest.raises(TypeError, match="value must be a str"):
            election.campaign(value)  # type: ignore[arg-type]
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            election.campaign("x", timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        election.campaign("x", timeout="1")  # type: ignore[arg-type]
    assert election.leader() is None  # nothing was put
    election.campaign("x")
    try:
        with pytest.raises(TypeError, match="value must be a str"):
            election.proclaim(5)  # type: ignore[arg-type]
        assert election.leader() == "x"
    finally:
        election.resign()
    with pytest.raises(TypeError, match="str name"):
        m.election(7)  # type: ignore[arg-type]
