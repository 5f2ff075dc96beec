"""Leader elections: ``cfg.election("leader").campaign("me")`` blocks until "me" leads.

The same queue as a lock (see :mod:`etcdmap._queue`): each candidate's key,
bound to a lease of its own, holds its value; the candidate whose key was
created first leads, the others wait for their predecessor to go.  Leading
ends with :meth:`Election.resign`, or when the lease lapses or the key is
deleted: then :attr:`Election.is_leader` turns False at once, ``on_lost`` is
called, and writes guarded by the leadership (``cfg.guarded(election)``)
raise :class:`~etcdmap.errors.EtcdLockLost`.  :meth:`Election.observe`
follows the leader with a watch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ._queue import first
from ._seat import Seat, queue_of
from ._settings import check_wait
from .errors import EtcdError, EtcdLockLost, EtcdLockTimeout
from .ops import Compare, Put, prefix_end
from .records import KeyValue

if TYPE_CHECKING:
    from ._fence import Fence
    from .client import EtcdClient
    from .mapping import EtcdMapping

__all__ = ["Election", "Observer"]

R = TypeVar("R")


def _tell(ref: weakref.ref[Election]) -> None:
    election = ref()
    if election is not None and election.on_lost is not None:
        election.on_lost(election)


def _value(value: object) -> bytes:
    """A leader's value as stored: UTF-8 text, or the ``TypeError`` that says so."""
    if not isinstance(value, str):
        raise TypeError(f"an election's value must be a str, not {type(value).__name__}")
    return value.encode("utf-8")


class Election:
    """A leader election named ``name`` under ``mapping``'s prefix.

    ``ttl`` is the lease of each campaign, in seconds; ``on_lost(election)``
    is called once if leadership is lost (not resigned).  One object is one
    candidate; a forked child inherits no leadership.
    """

    def __init__(self, mapping: EtcdMapping, name: str, *, ttl: int = 10,
                 on_lost: Callable[[Election], None] | None = None):
        self._prefix, self.ttl = queue_of(mapping, name, ttl, "an election")
        self._client = mapping._client
        self.name = name
        self.on_lost = on_lost
        self._campaigning = threading.Lock()  # one campaign of this candidate at a time
        self._seat: Seat | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        seat = self._seat if self._pid == os.getpid() else None
        state = "not leading" if seat is None or seat.lost else \
            f"leading at revision {seat.revision}"
        return f"<Election {self.name!r} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("an Election is a candidacy of this process and cannot be pickled; "
                        "pass the mapping and the election's name")

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # the parent campaigns, not this child: forget it
            self._pid = os.getpid()
            self._campaigning = threading.Lock()
            self._seat = None

    def campaign(self, value: str, timeout: float | None = None) -> None:
        """Block until this candidate leads, with ``value``; already leading, proclaim it.

        :class:`~etcdmap.errors.EtcdLockTimeout` after ``timeout`` seconds
        (``None``: wait forever); a candidate that gives up leaves no trace.
        :class:`~etcdmap.errors.EtcdLockLost` if its lease lapsed while it waited.
        """
        self._check_fork()
        data = _value(value)
        timeout = check_wait("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._campaigning.acquire(timeout=-1 if timeout is None else timeout):
            raise EtcdLockTimeout(f"election {self.name!r} not won within {timeout} s")
        try:
            if self._seat is not None:
                if not self._seat.lost:
                    self.proclaim(value)
                    return
                with contextlib.suppress(EtcdError):  # lost: at worst, it lapses by itself
                    self.resign()
            seat = Seat(self._client, self._prefix, data, self.ttl,
                        on_lost=functools.partial(_tell, weakref.ref(self)),
                        what=f"leadership of {self.name!r}")
            try:
                won = seat.wait(deadline)
                if won:
                    seat.take()
            except BaseException:
                with contextlib.suppress(EtcdError):  # its key lapses within the TTL
                    seat.close()
                raise
            if not won:
                seat.close()
                raise EtcdLockTimeout(f"election {self.name!r} not won within {timeout} s")
            self._seat = seat
        finally:
            self._campaigning.release()

    def _leading(self) -> Seat:
        self._check_fork()
        seat = self._seat
        if seat is None:
            raise EtcdLockLost(f"not leading election {self.name!r}")
        seat.check()
        return seat

    def proclaim(self, value: str) -> None:
        """Change the leader's value; :class:`~etcdmap.errors.EtcdLockLost` if not leading."""
        data = _value(value)
        seat = self._leading()
        resp = self._client.txn([Compare(seat.key, "CREATE", "==", seat.revision)],
                                [Put(seat.key, data, lease=seat.lease.id)], [])
        if not resp.succeeded:
            raise seat.refused()

    def resign(self) -> None:
        """Stop leading (or campaigning): revoke the lease, deleting the key."""
        self._check_fork()
        seat, self._seat = self._seat, None
        if seat is not None:
            seat.close()

    def run(self, value: str, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Campaign with ``value``, run ``func(*args, **kwargs)`` as leader, then resign."""
        self.campaign(value)
        try:
            return func(*args, **kwargs)
        finally:
            self.resign()

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads, as far as this process knows."""
        self._check_fork()
        seat = self._seat
        return seat is not None and not seat.lost

    @property
    def revision(self) -> int | None:
        """The fencing token while leading: the create revision of the leader's key."""
        return self._seat.revision if self.is_leader and self._seat is not None else None

    def fence(self) -> Fence:
        """The condition that this leadership still stands, for guarded writes."""
        return self._leading().fence()

    def leader(self) -> str | None:
        """The current leader's value, or ``None`` (one request)."""
        kv = first(self._client, self._prefix)
        return None if kv is None else kv.value.decode("utf-8", "replace")

    def observe(self) -> Observer:
        """The leaders' values as they change, the current one first (see :class:`Observer`)."""
        return Observer(self._client, self._prefix)


class Observer:
    """An iterator (and context manager) of an election's leaders, by their values.

    It starts with the current leader, if any, then follows every change of
    leader, and of the leader's value, in order, with one watch of the
    candidates (no polling).  Iteration ends once :meth:`close` is called
    (from any thread).  Dropped unclosed, it closes itself with a
    ``ResourceWarning``.
    """

    def __init__(self, client: EtcdClient, prefix: bytes):
        end = prefix_end(prefix)
        resp = client.range(prefix, end)
        # Every candidate by key: a deletion does not say which create revision went.
        self._candidates: dict[bytes, KeyValue] = {kv.key: kv for kv in resp.kvs}
        self._last: tuple[bytes, bytes] | None = None
        self._watcher = client.watch_range(prefix, end, key_fn=bytes, value_fn=bytes,
                                           start_revision=resp.revision + 1)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<Observer {'closed' if self.closed else 'open'}>"

    def next_leader(self, timeout: float | None = None) -> str | None:
        """The next leader's value; ``None`` after ``timeout`` seconds, or once closed."""
        timeout = check_wait("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            leader = min(self._candidates.values(), key=lambda kv: kv.create_revision,
                         default=None)
            if leader is not None and (leader.key, leader.value) != self._last:
                self._last = (leader.key, leader.value)
                return leader.value.decode("utf-8", "replace")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            batch = self._watcher.next_batch(left)  # one revision: one change of the queue
            if not batch and self._watcher.closed:
                return None
            for event in batch:
                if event.type == "DELETE":
                    self._candidates.pop(event.kv.key, None)
                else:
                    self._candidates[event.kv.key] = event.kv

    def __next__(self) -> str:
        value = self.next_leader(None)
        if value is None:
            raise StopIteration
        return value

    def __iter__(self) -> Iterator[str]:
        # A generator, so that leaving a for loop (break, exception) closes the watch.
        try:
            while (value := self.next_leader(None)) is not None:
                yield value
        finally:
            self.close()

    @property
    def closed(self) -> bool:
        """Whether it was closed (or its watch ended with an error)."""
        return self._watcher.closed

    def close(self) -> None:
        """End the watch; a thread waiting for the next leader gets none."""
        self._watcher.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is None or watcher.closed:
            return
        if self._pid == os.getpid():
            warnings.warn(f"unclosed {self!r}; use it with `with` or call close()",
                          ResourceWarning, source=self, stacklevel=2)
        watcher.close(wait=False)
