"""Worker processes for the lock and election tests: ``python coordination_workers.py JOB ...``.

Each worker prints one JSON object a line on stdout: what it did, who (``name``,
``pid``) and when (``at``: ``time.monotonic()``, one clock for every process
of the machine), so a test can order the workers' reports and its own
actions.  A worker that waits for the test reads a line from stdin; end of
input means "finish".  ``flock N JOB ...`` forks N workers of JOB.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from etcdmap import EtcdClient, EtcdError, EtcdLockLost, EtcdMapping, Lock

_say_lock = threading.Lock()
WAIT = 15.0  # seconds the test waits for any one report


# -- the test's side -------------------------------------------------------------------------


class Reports:
    """One worker's reports as they come: :attr:`reports`, and the next by :meth:`expect`."""

    def __init__(self, name: str, inbox: queue.Queue[tuple[Reports, dict[str, Any]]]) -> None:
        self.name = name
        self.inbox = inbox
        self.reports: list[dict[str, Any]] = []
        self.mine: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []

    def __repr__(self) -> str:
        return f"<{self.name} {self.reports} stderr={''.join(self.stderr)[-2000:]!r}>"

    def deliver(self, report: dict[str, Any] | None) -> None:
        if report is not None:
            self.reports.append(report)
            self.inbox.put((self, report))
        self.mine.put(report)  # None: the end of its output

    def expect(self, what: str, timeout: float = WAIT) -> dict[str, Any]:
        """This worker's next report ``what`` (its other reports stay in :attr:`reports`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.mine.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no {what!r} within {timeout} s from {self!r}") from None
            if report is None:
                raise AssertionError(f"{self!r} ended without {what!r}")
            if report["what"] == what:
                return report


def _start(args: list[str], into: Callable[[dict[str, Any] | None], None],
           stderr: list[str]) -> subprocess.Popen[str]:
    """Run this file with ``args``; hand each report line to ``into`` as it comes."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            into(json.loads(line))
        into(None)

    def errors() -> None:
        assert proc.stderr is not None
        stderr.extend(proc.stderr)  # read as it comes: a full pipe would block the worker

    threading.Thread(target=read, daemon=True).start()
    threading.Thread(target=errors, daemon=True).start()
    return proc


class Worker(Reports):
    """A worker process of its own, which reads "go" (a line) on stdin when told."""

    def __init__(self, inbox: queue.Queue[tuple[Reports, dict[str, Any]]], job: str,
                 *args: str) -> None:
        super().__init__(args[2], inbox)
        self.died_at: float | None = None
        self.proc = _start([job, *args], self.deliver, self.stderr)

    def tell(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = WAIT) -> int:
        """Close its input and wait for it to exit; its exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return self.proc.wait(timeout)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL it and wait until it is gone; :attr:`died_at` says when."""
        self.proc.kill()
        self.proc.wait(WAIT)
        self.died_at = time.monotonic()


class Flock:
    """``n`` workers forked by one process that imported etcdmap once (``name0`` ...):
    real processes, without paying each interpreter's start-up on a small machine."""

    def __init__(self, inbox: queue.Queue[tuple[Reports, dict[str, Any]]], n: int, job: str,
                 endpoints: str, prefix: str, name: str, *args: str) -> None:
        self.members = [Reports(f"{name}{i}", inbox) for i in range(n)]
        self._by_name = {member.name: member for member in self.members}
        self.stderr: list[str] = []
        self.proc = _start(["flock", str(n), job, endpoints, prefix, name, *args],
                           self._deliver, self.stderr)

    def _deliver(self, report: dict[str, Any] | None) -> None:
        if report is None:
            for member in self.members:
                member.stderr = self.stderr
                member.deliver(None)
        else:
            self._by_name[report["name"]].deliver(report)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for every worker to exit; the worst exit status."""
        return self.proc.wait(timeout)


@contextlib.contextmanager
def workers() -> Iterator[tuple[queue.Queue[tuple[Reports, dict[str, Any]]],
                               list[Worker | Flock]]]:
    """A shared inbox and a list to start workers into; each is killed at the end."""
    inbox: queue.Queue[tuple[Reports, dict[str, Any]]] = queue.Queue()
    started: list[Worker | Flock] = []
    try:
        yield inbox, started
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                if isinstance(worker, Flock):  # its workers first: it only waits for them
                    for report in (r for m in worker.members for r in m.reports[:1]):
                        with contextlib.suppress(OSError):
                            os.kill(report["pid"], signal.SIGKILL)
                worker.proc.kill()
            worker.proc.wait(WAIT)
            for pipe in (worker.proc.stdin, worker.proc.stdout, worker.proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


# -- the workers' side -----------------------------------------------------------------------


NAME = ""  # this worker's name, in a flock's worker


def say(what: str, **fields: Any) -> None:
    """One report line (from any thread), written at once in one piece: a flock's
    workers share one pipe, and lines shorter than ``PIPE_BUF`` never interleave."""
    line = json.dumps({"what": what, "at": time.monotonic(), "name": NAME,
                       "pid": os.getpid(), **fields})
    with _say_lock:
        os.write(1, (line + "\n").encode())


def mapping(endpoints: str, prefix: str) -> EtcdMapping:
    client = EtcdClient(endpoints.split(","), timeout=2, retry_deadline=10)
    return EtcdMapping(prefix, client=client)


def count(endpoints: str, prefix: str, name: str, cycles: str, ttl: str) -> None:
    """``cycles`` times, under the lock: read the plain key ``counter``, write it + 1.

    A cycle counts if its write is known to have landed: acknowledged, or, when
    the write raised (a failover may leave that unknown), read back while the
    lock is still ours, as nobody else writes under it.  Reports ``done``.
    """
    m = mapping(endpoints, prefix)
    lock = m.lock("lock", ttl=int(ttl), timeout=60, identifier=name)
    done, unknown, errors = 0, 0, Counter[str]()
    for _ in range(int(cycles)):
        try:
            with lock:
                value = int(m.get("counter", "0"))
                try:
                    m["counter"] = str(value + 1)
                except EtcdError as exc:
                    errors[f"write: {type(exc).__name__}"] += 1
                    landed = read_back(m, lock, str(value + 1))
                    if landed is None:
                        unknown += 1
                    done += landed is True
                else:
                    done += 1
        except EtcdError as exc:
            errors[type(exc).__name__] += 1
    say("finished", done=done, unknown=unknown, errors=errors)


def read_back(m: EtcdMapping, lock: Lock, expected: str) -> bool | None:
    """Whether the counter holds ``expected`` while the lock is provably still ours
    (its key still first in the queue); ``None`` if that cannot be known."""
    for _ in range(5):
        try:
            landed = bool(m.get("counter") == expected)
            if lock.is_held and lock.contenders()[:1] == [lock.identifier]:
                return landed
            return None
        except EtcdError:
            continue
    return None


def hold(endpoints: str, prefix: str, name: str, ttl: str) -> None:
    """Take the lock, report it, and on "go" write ``value`` through its guard."""
    m = mapping(endpoints, prefix)
    told = threading.Event()

    def on_lost(_: object) -> None:
        say("on_lost")
        told.set()

    lock = m.lock("lock", ttl=int(ttl), identifier=name, on_lost=on_lost)
    lock.acquire()
    [kv] = [kv for kv in m.client.range(f"{prefix}/lock/", prefix=True).kvs
            if kv.value == name.encode()]
    guarded = lock.guard(m)  # before saying so: the test may pause it right after
    say("held", lease=kv.lease, revision=lock.revision)
    if sys.stdin.readline():
        try:
            guarded["value"] = name
            say("wrote")
        except EtcdLockLost as exc:
            # on_lost runs on the thread that noticed first: let it finish its report
            say("refused", error=str(exc), is_held=lock.is_held, told=told.wait(WAIT))
        sys.stdin.readline()
    lock.release()
    say("released")


def campaign(endpoints: str, prefix: str, name: str, ttl: str) -> None:
    """Campaign until leading, report it, write ``term`` as leader; resign at end of input."""
    m = mapping(endpoints, prefix)
    election = m.election("leader", ttl=int(ttl), on_lost=lambda _: say("lost"))
    say("campaigning")
    election.campaign(name)
    say("lead", revision=election.revision)
    m.guarded(election)["term"] = name
    say("wrote")
    sys.stdin.readline()
    election.resign()
    say("resigned")


JOBS: dict[str, Callable[..., None]] = {"count": count, "hold": hold, "campaign": campaign}


def flock(n: str, job: str, endpoints: str, prefix: str, name: str, *args: str) -> None:
    """Fork ``n`` workers of ``job`` (no thread runs yet, so forking is safe); wait for
    them; exit with the worst status."""
    global NAME
    children = []
    for i in range(int(n)):
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                NAME = f"{name}{i}"
                say("started")
                JOBS[job](endpoints, prefix, NAME, *args)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))


if __name__ == "__main__":
    if sys.argv[1] == "flock":
        flock(*sys.argv[2:])
    else:
        NAME = sys.argv[4]
        say("started")
        JOBS[sys.argv[1]](*sys.argv[2:])
