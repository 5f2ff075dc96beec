"""Fork safety without user action (issue 10, item 2), with a real ``os.fork()``.

gunicorn, uwsgi, celery and ``multiprocessing`` (fork) build their clients in
the parent and fork workers that use them.  Each test forks a child that
runs a check and leaves with ``os._exit(code)`` (it never returns into
pytest), while the parent keeps using the same objects.  Every wait is
bounded, and a child that outlives the test is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import CountingRelay, wait_until

from etcdmap import EtcdClient, EtcdMapping, Watcher

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: threads

WAIT = 30.0  # seconds a child may take
READS = 300
CRASHED = 70  # the child raised: its traceback is on stderr


class Child:
    """A forked child running ``work()``; its exit status is what ``work`` returned."""

    def __init__(self, work: Callable[[], int]) -> None:
        self.code: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: never return into pytest
            code = CRASHED
            try:
                code = work()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)

    def running(self) -> bool:
        if self.code is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code is None

    def wait(self, timeout: float = WAIT) -> int:
        wait_until(lambda: not self.running(), timeout, "the child done (it hangs)")
        assert self.code is not None
        return self.code

    def kill(self) -> None:
        if self.running():
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)


@contextlib.contextmanager
def forked(work: Callable[[], int]) -> Iterator[Child]:
    """Fork a child running ``work``; kill it if the test fails before it ends."""
    child = Child(work)
    try:
        yield child
    finally:
        child.kill()


def _own_reads(read: Callable[[], Any], expected: Any, count: int) -> int:
    """How many of ``count`` reads did not answer ``expected`` (errors included)."""
    wrong = 0
    for _ in range(count):
        try:
            if read() != expected:
                wrong += 1
        except Exception:
            wrong += 1
    return wrong


# -- (a) a mapping shared across fork ------------------------------------------------------


ROUNDS = 5  # each fork shares the parent's pooled connection anew


def test_parent_and_child_each_get_their_own_answers(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update({"parent": "the parent's", "child": "the child's"})
    for _ in range(ROUNDS):
        assert m["parent"] == "the parent's"  # the keep-alive connection is open now
        go_read, go_write = os.pipe()

        def in_the_child(go_read: int = go_read) -> int:
            os.read(go_read, 1)  # start together with the parent
            return min(_own_reads(lambda: m["child"], "the child's", READS), 1)

        with forked(in_the_child) as child:
            os.write(go_write, b"!")
            wrong, done = 0, 0
            deadline = time.monotonic() + WAIT
            # Read as long as the child does (at least READS times), so the two overlap.
            while (done < READS or child.running()) and time.monotonic() < deadline:
                wrong += _own_reads(lambda: m["parent"], "the parent's", 10)
                done += 10
            code = child.wait()
        os.close(go_read)
        os.close(go_write)
        assert wrong == 0, f"{wrong} of the parent's {done} reads got another answer"
        assert code == 0, "the child got another process's answers" if code == 1 else code
    assert m.to_dict() == {"parent": "the parent's", "child": "the child's"}


def test_a_forked_child_opens_connections_of_its_own(
        etcd_endpoint: str, etcd_prefix: str) -> None:
    relay = CountingRelay(etcd_endpoint)
    try:
        with EtcdClient(relay.endpoint) as client:
            m = EtcdMapping(etcd_prefix, client=client)
            m["k"] = "v"
            assert m["k"] == "v"
            opened = relay.connections  # kept alive in the pool
            with forked(lambda: 0 if m["k"] == "v" else 1) as child:
                assert child.wait() == 0
            assert relay.connections == opened + 1, "the child used the parent's connection"
            assert m["k"] == "v"
            assert relay.connections == opened + 1  # and the parent still uses its own
    finally:
        relay.close()


def test_a_client_used_by_threads_in_a_forked_child(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(f"{etcd_prefix}/parent", "p")
    assert etcd_client.get(f"{etcd_prefix}/parent").value == "p"  # a pooled connection

    def in_the_child() -> int:
        wrong = [0] * 4

        def work(i: int) -> None:
            key = f"{etcd_prefix}/child{i}"
            for n in range(40):
                try:
                    etcd_client.put(key, f"{i}-{n}")
                    if etcd_client.get(key).value != f"{i}-{n}":
                        wrong[i] += 1
                except Exception:
                    wrong[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        return 2 if any(t.is_alive() for t in threads) else min(sum(wrong), 1)

    with forked(in_the_child) as child:
        wrong, done = 0, 0
        deadline = time.monotonic() + WAIT
        while (done < 200 or child.running()) and time.monotonic() < deadline:
            wrong += _own_reads(lambda: etcd_client.get(f"{etcd_prefix}/parent").value, "p", 10)
            done += 10
        code = child.wait()
    assert wrong == 0, f"{wrong} of the parent's {done} reads got another answer"
    assert code == 0, {1: "the child's threads got wrong answers",
                       2: "the child's threads hang"}.get(code, code)
    assert {kv.key.decode(): kv.value.decode()
            for kv in etcd_client.range(f"{etcd_prefix}/child", prefix=True).kvs} == {
        f"{etcd_prefix}/child{i}": f"{i}-39" for i in range(4)}


# -- (b) a watcher created before the fork --------------------------------------------------


def _next_keys(watcher: Watcher[Any], wanted: set[str], timeout: float) -> set[str]:
    """The keys of events until all of ``wanted`` were seen (or ``timeout`` passed)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen and (left := deadline - time.monotonic()) > 0:
        event = watcher.next_event(left)
        if event is not None:
            seen.add(event.key)
    return seen


def test_a_watcher_goes_on_in_the_child_and_in_the_parent(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    used = m.watch()
    untouched = m.watch()  # the child closes this one without ever reading it
    try:
        m["before"] = "0"
        assert _next_keys(used, {"before"}, 10) == {"before"}
        assert _next_keys(untouched, {"before"}, 10) == {"before"}

        def in_the_child() -> int:
            m["child"] = "c"  # written after the fork: only a stream of its own brings it
            seen = _next_keys(used, {"child"}, 10)
            used.close()
            untouched.close()  # must not shut down the parent's socket
            return 0 if "child" in seen else 1

        with forked(in_the_child) as child:
            code = child.wait()
        assert code == 0, "the child's watcher never delivered" if code == 1 else code
        m["after"] = "1"  # the parent's watchers still work after the child closed its copies
        assert _next_keys(used, {"child", "after"}, 10) == {"child", "after"}
        assert _next_keys(untouched, {"child", "after"}, 10) == {"child", "after"}
    finally:
        used.close()
        untouched.close()


# -- (c) a lease view across the fork ------------------------------------------------------

TTL = 3


def test_a_lease_view_writes_in_the_child_and_stays_alive_in_the_parent(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    with m.lease(TTL) as live:
        lease = live.current_lease
        assert lease is not None
        live["parent"] = "p"

        def in_the_child() -> int:
            for n in range(30):
                live[f"child{n}"] = "c"
            if m.get("child29") != "c":
                return 1
            # Its keepalive restarted (lazily) in this process.
            keepalive = f"etcdmap-lease-{lease.id:x}"
            return 0 if any(t.name == keepalive for t in threading.enumerate()) else 2

        with forked(in_the_child) as child:
            wrong, done = 0, 0
            deadline = time.monotonic() + WAIT
            while (done < 100 or child.running()) and time.monotonic() < deadline:
                wrong += _own_reads(lambda: live["parent"], "p", 10)
                done += 10
            code = child.wait()
        assert wrong == 0, f"{wrong} of the parent's {done} reads got another answer"
        assert code == 0, {1: "the child's writes were lost",
                           2: "the child has no keepalive"}.get(code, code)
        # The parent keeps its lease alive past a whole TTL after the child left.
        gone = time.monotonic()
        while time.monotonic() - gone < TTL + 1:
            assert not lease.expired and lease.time_to_live() > 0
            assert m.get("child29") == "c" and m.get("parent") == "p"
            time.sleep(0.25)
    assert m.to_dict() == {}  # revoked when the block ended
