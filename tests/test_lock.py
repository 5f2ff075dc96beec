"""Distributed locks (issue 13): ``threading.Lock``'s surface over etcd's lock recipe.

Every wait is bounded and every ordering is shown by events or by what
etcd holds, never by timing: a waiter is "waiting" once its key is in the
queue, and it "watches its predecessor" when the watch it opened says so.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until

from etcdmap import (
    EtcdClient,
    EtcdLockLost,
    EtcdLockTimeout,
    EtcdMapping,
    Lock,
)
from etcdmap._fence import Fence
from etcdmap._queue import predecessor

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: threads

WAIT = 10.0  # seconds any one step may take


@pytest.fixture
def m(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    return EtcdMapping(etcd_prefix, client=etcd_client)


@pytest.fixture
def queue_of(etcd_client: EtcdClient, etcd_prefix: str) -> Callable[[str], list[Any]]:
    """``queue_of(name)``: the keys of lock ``name`` as etcd holds them, first first."""
    def keys(name: str) -> list[Any]:
        return list(etcd_client.range(f"{etcd_prefix}/{name}/", prefix=True,
                                      sort_order="ASCEND", sort_target="CREATE").kvs)
    return keys


class Contender:
    """A thread that takes ``lock`` (blocking), says so, and releases it when told."""

    def __init__(self, lock: Lock) -> None:
        self.lock = lock
        self.holding = threading.Event()
        self.go = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"contender-{lock.identifier}")
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.lock:
                self.holding.set()
                self.go.wait(WAIT)
        except BaseException as exc:
            self.error = exc

    def release(self) -> None:
        self.go.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def contenders() -> Iterator[list[Contender]]:
    made: list[Contender] = []
    yield made
    for contender in made:  # a failed test must not leave a thread waiting
        contender.go.set()
        contender.thread.join(WAIT)


# -- the threading.Lock surface -------------------------------------------------------------


def test_with_takes_and_releases_the_lock(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    lock = m.lock("jobs/cleanup", identifier="worker-1")
    assert not lock.is_held and lock.revision is None and not lock.locked()
    with lock as held:
        assert held is lock
        assert lock.is_held and lock.locked()
        [kv] = queue_of("jobs/cleanup")
        assert kv.value == b"worker-1"
        assert lock.revision == kv.create_revision  # the fencing token
        assert lock.contenders() == ["worker-1"]
        lease = kv.lease
        assert etcd_client.lease_time_to_live(lease).ttl > 0
    assert not lock.is_held and lock.revision is None and not lock.locked()
    assert queue_of("jobs/cleanup") == []
    assert etcd_client.lease_time_to_live(lease).ttl == -1  # revoked, not left to lapse


def test_the_default_identifier_names_host_process_and_thread(m: EtcdMapping) -> None:
    with m.lock("job") as lock:
        host, pid, thread = lock.contenders()[0].rsplit(":", 2)
        assert host and int(pid) == os.getpid() and int(thread) == threading.get_ident()


def test_a_lock_held_elsewhere_is_not_taken_without_blocking(
        m: EtcdMapping, queue_of: Callable[[str], list[Any]]) -> None:
    with m.lock("job", identifier="holder"):
        other = m.lock("job", identifier="other")
        assert other.acquire(blocking=False) is False
        assert not other.is_held
        assert [kv.value for kv in queue_of("job")] == [b"holder"]  # it left no key
        with pytest.raises(ValueError, match="non-blocking"):
            other.acquire(blocking=False, timeout=1)
    assert other.acquire(blocking=False) is True
    other.release()


def test_a_timeout_raises_and_leaves_no_key_behind(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    with m.lock("job", identifier="holder"):
        waiter = m.lock("job", identifier="waiter", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(EtcdLockTimeout) as info, waiter:
            pytest.fail("the lock is held elsewhere")
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started >= 0.3
        assert waiter.acquire(timeout=0) is False
        assert [kv.value for kv in queue_of("job")] == [b"holder"]
    assert queue_of("job") == []


def test_release_on_an_exception_deletes_the_key_and_revokes_the_lease(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    lock = m.lock("job")
    leases = []
    with pytest.raises(ZeroDivisionError), lock:
        leases.append(queue_of("job")[0].lease)
        1 / 0  # noqa: B018
    assert not lock.is_held
    assert queue_of("job") == []
    assert etcd_client.lease_time_to_live(leases[0]).ttl == -1


def test_reentrant_for_its_thread_and_waited_for_by_others(
        m: EtcdMapping, queue_of: Callable[[str], list[Any]]) -> None:
    lock = m.lock("job")
    with lock:
        revision = lock.revision
        with lock:
            assert lock.revision == revision  # the same holding, not a second key
            assert len(queue_of("job")) == 1
        assert lock.is_held  # the inner release only counted down

        # Another thread using the same object waits here, not in etcd's queue.
        results: list[bool] = []
        tried = threading.Thread(target=lambda: results.append(lock.acquire(timeout=0.2)))
        tried.start()
        tried.join(WAIT)
        assert results == [False] and len(queue_of("job")) == 1
        with pytest.raises(RuntimeError, match="un-acquired"):
            threading_release(lock)

        taken = threading.Event()
        done = threading.Event()

        def other() -> None:
            with lock:
                taken.set()
                done.wait(WAIT)

        thread = threading.Thread(target=other)
        thread.start()
    assert taken.wait(WAIT)  # it gets the lock once this thread released it
    assert lock.is_held  # held by the object (for the other thread)
    done.set()
    thread.join(WAIT)
    assert not lock.is_held and queue_of("job") == []
    with pytest.raises(RuntimeError, match="un-acquired"):
        lock.release()


def threading_release(lock: Lock) -> None:
    """``lock.release()`` from another thread; what it raised, re-raised here."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    if errors:
        raise errors[0]


def test_arguments_are_checked(m: EtcdMapping) -> None:
    for ttl in (0, -1):
        with pytest.raises(ValueError, match="ttl"):
            m.lock("job", ttl=ttl)
    for ttl in (1.5, True, None, "10"):
        with pytest.raises(TypeError, match="ttl"):
            m.lock("job", ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        m.lock("")
    with pytest.raises(TypeError, match="name"):
        m.lock(1)  # type: ignore[arg-type]
    for bad in (-2, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            m.lock("job").acquire(timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            m.lock("job", timeout=bad)
    for wrong in ("1", [1]):
        with pytest.raises(TypeError, match="timeout"):
            m.lock("job").acquire(timeout=wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="timeout"):
            m.lock("job", timeout=wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_lost"):
        m.lock("job", on_lost=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(m.lock("job"))
    assert repr(m.lock("job")) == "<Lock 'job' unheld>"  # no I/O


# -- the queue --------------------------------------------------------------------------------


def test_contenders_are_listed_in_queue_order_and_served_in_it(
        m: EtcdMapping, contenders: list[Contender]) -> None:
    holder = m.lock("job", identifier="a")
    holder.acquire()
    for name in ("b", "c"):  # each one queued before the next starts
        contenders.append(Contender(m.lock("job", identifier=name)))
        wait_until(lambda: len(holder.contenders()) == len(contenders) + 1, WAIT,
                   f"{name} queued")
    assert holder.contenders() == ["a", "b", "c"]
    holder.release()
    b, c = contenders
    assert b.holding.wait(WAIT)
    assert not c.holding.is_set()  # b holds, so c cannot: it is behind b in the queue
    assert holder.contenders() == ["b", "c"]
    b.release()
    assert c.holding.wait(WAIT)
    c.release()
    assert holder.contenders() == []


def spy(client: EtcdClient) -> tuple[list[bytes], list[int]]:
    """The keys ``client`` watches, and the revisions of its predecessor reads (a read of
    the queue, newest first, is how a waiter looks again for the key before its own)."""
    watched: list[bytes] = []
    reads: list[int] = []
    watch_range, range_ = client.watch_range, client.range

    def watching(key: bytes, *args: Any, **kwargs: Any) -> Any:
        watched.append(key)
        return watch_range(key, *args, **kwargs)

    def reading(*args: Any, **kwargs: Any) -> Any:
        resp = range_(*args, **kwargs)
        if kwargs.get("sort_order") == "DESCEND":
            reads.append(resp.revision)
        return resp

    client.watch_range = watching  # type: ignore[method-assign]
    client.range = reading  # type: ignore[method-assign]
    return watched, reads


def test_each_waiter_watches_only_its_predecessor(
        m: EtcdMapping, etcd_endpoint: str, etcd_prefix: str,
        queue_of: Callable[[str], list[Any]], contenders: list[Contender]) -> None:
    holder = m.lock("job", identifier="a")
    holder.acquire()
    with EtcdClient(etcd_endpoint) as for_b, EtcdClient(etcd_endpoint) as for_c:
        spies: dict[str, tuple[list[bytes], list[int]]] = {}
        for name, client in (("b", for_b), ("c", for_c)):
            watched, _ = spies[name] = spy(client)
            lock = EtcdMapping(etcd_prefix, client=client).lock("job", identifier=name)
            contenders.append(Contender(lock))
            wait_until(lambda: len(watched) == 1, WAIT, f"{name} watching")  # noqa: B023
        a_key, b_key, c_key = (kv.key for kv in queue_of("job"))
        # No herd: b waits for a, and c waits for b, not for the holder.
        assert spies["b"][0] == [a_key] and spies["c"][0] == [b_key]
        assert spies["b"][1] == spies["c"][1] == []  # whom to watch came with the enqueue

        holder.release()
        b, c = contenders
        assert b.holding.wait(WAIT)
        assert spies["c"] == ([b_key], [])  # a's release did not wake c
        b.release()
        assert c.holding.wait(WAIT)
        c.release()
    # a's release woke b alone: c read the queue only once b had left.  Each watched
    # its predecessor, then (holding) its own key, and nothing else.
    assert spies["b"][0] == [a_key, b_key] and len(spies["b"][1]) == 1
    assert spies["c"][0] == [b_key, c_key] and len(spies["c"][1]) == 1


def test_a_waiter_behind_a_long_queue_finds_its_predecessor(
        m: EtcdMapping, etcd_endpoint: str, etcd_prefix: str,
        queue_of: Callable[[str], list[Any]]) -> None:
    """More contenders than one read takes (16): the pages grow, at one revision."""
    prefix = f"{etcd_prefix}/job/".encode()
    with EtcdClient(etcd_endpoint) as client:
        # Names in the reverse of their creation order: the queue's order is by creation.
        created = [client.put(prefix + b"%02d" % (99 - i), b"old-%d" % i).revision
                   for i in range(40)]
        before, _, mine = predecessor(client, prefix, created[10])
        assert before is not None and before.key == prefix + b"90" and mine
        assert predecessor(client, prefix, created[0])[0] is None
        watched, _ = spy(client)
        late = EtcdMapping(etcd_prefix, client=client).lock("job", identifier="late")
        assert late.acquire(timeout=0.2) is False
        assert watched == [prefix + b"60"]  # the newest before its own: the 40th
    assert [kv.value for kv in queue_of("job")] == [b"old-%d" % i for i in range(40)]
    assert late.contenders()[:2] == ["old-0", "old-1"] and "late" not in late.contenders()


# -- a lost lock --------------------------------------------------------------------------------


def test_a_revoked_lease_loses_the_lock_at_once_and_fences_its_writes(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    told: list[Lock] = []
    lost = threading.Event()

    def on_lost(lock: Lock) -> None:
        told.append(lock)
        lost.set()

    lock = m.lock("job", on_lost=on_lost)
    with lock:
        guarded = lock.guard(m.submapping("data"))
        guarded["before"] = "landed"
        etcd_client.lease_revoke(queue_of("job")[0].lease)  # as if it lapsed
        assert lost.wait(WAIT)
        assert told == [lock]
        assert not lock.is_held and lock.revision is None
        with pytest.raises(EtcdLockLost):
            guarded["after"] = "must not land"
        with pytest.raises(EtcdLockLost):
            del guarded["before"]
        with pytest.raises(EtcdLockLost):
            guarded.clear()
        with pytest.raises(EtcdLockLost):
            lock.fence()
        with pytest.raises(EtcdLockLost):
            lock.acquire()  # re-entering a lost lock: the holder must know
    assert told == [lock]  # once
    assert m.submapping("data").to_dict() == {"before": "landed"}
    assert not lock.locked()


def test_etcd_itself_refuses_a_guarded_write_of_a_lost_holder(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    """The fence is a compare in the write's own transaction, so it holds even when
    this process does not know yet that the lock was lost."""
    told: list[Lock] = []
    with m.lock("job", on_lost=told.append) as lock:
        fence = lock.fence()
        unaware = type("Unaware", (), {"fence": lambda self: Fence(fence.compares, fence.lost)})
        guarded = m.submapping("data").guarded(unaware())
        guarded["before"] = "landed"
        etcd_client.delete_range(queue_of("job")[0].key)  # not the lease: the key alone
        with pytest.raises(EtcdLockLost):
            guarded["after"] = "must not land"
        wait_until(lambda: told == [lock], WAIT, "on_lost called")
        assert not lock.is_held
    assert m.submapping("data").to_dict() == {"before": "landed"}


def test_a_guard_of_an_earlier_holding_refuses_writes(m: EtcdMapping) -> None:
    lock = m.lock("job")
    with lock:
        old = lock.guard(m)
    with lock:
        with pytest.raises(EtcdLockLost, match="released"):
            old["k"] = "stale"  # the token of the first holding, not this one
        lock.guard(m)["k"] = "fresh"
    assert m["k"] == "fresh"
    with pytest.raises(EtcdLockLost, match="not held"):
        lock.guard(m)


# -- processes and resources --------------------------------------------------------------------


def test_a_forked_child_does_not_hold_or_release_the_parents_lock(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    with m.lock("job") as lock:
        [kv] = queue_of("job")
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            with contextlib.suppress(BaseException):
                ok = not lock.is_held and lock.revision is None
                lock.__exit__(None, None, None)  # the end of the inherited `with` block
                code = 0 if ok else 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.is_held
        assert queue_of("job") == [kv]  # the parent's key is still there, with its lease
        assert etcd_client.lease_time_to_live(kv.lease).ttl > 0
    assert queue_of("job") == []


def test_a_dropped_held_lock_stops_its_threads_with_a_resource_warning(
        m: EtcdMapping, etcd_client: EtcdClient, queue_of: Callable[[str], list[Any]]) -> None:
    def seat_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("etcdmap-seat")}

    before = seat_threads()
    lock = m.lock("job", ttl=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock.acquire()
        assert seat_threads() - before
        del lock
        gc.collect()
        wait_until(lambda: not seat_threads() - before, WAIT, "the lock's thread ended")
    found = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(found) == 1 and "unreleased" in found[0], found
    # No longer kept alive: the key lapses with its lease.
    wait_until(lambda: queue_of("job") == [], WAIT, "the key lapsed")
