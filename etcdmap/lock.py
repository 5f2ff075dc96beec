"""Distributed locks with ``threading.Lock``'s surface: ``with cfg.lock("jobs/cleanup"):``.

etcd's lock recipe (see :mod:`etcdmap._queue`): each contender's key lives
under the lock's name, bound to a lease of its own that is kept alive while
the lock is held or awaited; the key with the lowest create revision holds
the lock; each waiter watches only its predecessor.  Releasing revokes the
lease, which deletes the key.

A lock can be lost while held: its lease lapsed (the process was paused past
the TTL, the network split) or its key was deleted.  Then :attr:`Lock.is_held`
turns False at once, ``on_lost`` is called, and writes through
:meth:`Lock.guard` raise :class:`~etcdmap.errors.EtcdLockLost` instead of
landing: each carries the compare "my key still has create revision
:attr:`Lock.revision`" (the fencing token).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._queue import queued
from ._seat import Seat, queue_of
from ._settings import check_wait
from .errors import EtcdError, EtcdLockLost, EtcdLockTimeout
from .ops import prefix_end

if TYPE_CHECKING:
    from ._fence import Fence
    from .mapping import EtcdMapping

__all__ = ["Lock"]

log = logging.getLogger(__name__)


def _tell(ref: weakref.ref[Lock]) -> None:
    lock = ref()
    if lock is not None and lock.on_lost is not None:
        lock.on_lost(lock)


class Lock:
    """A distributed lock named ``name`` under ``mapping``'s prefix.

    ``ttl`` is its lease's, in seconds; ``timeout`` bounds ``with`` and
    :meth:`acquire` (``None``: wait forever); ``identifier`` is what its key
    holds (by default ``host:pid:thread``), as :meth:`contenders` lists it;
    ``on_lost(lock)`` is called once if the lock is lost while held.
    Re-entrant for the thread that holds it; other threads using the same
    object wait for it locally.  Not shared with a forked child: there it is
    not held, and releasing it leaves the parent's lock alone.
    """

    def __init__(self, mapping: EtcdMapping, name: str, *, ttl: int = 10,
                 timeout: float | None = None, identifier: str | None = None,
                 on_lost: Callable[[Lock], None] | None = None):
        self._prefix, self.ttl = queue_of(mapping, name, ttl, "a lock")
        self._client = mapping._client
        self.name = name
        self.timeout = check_wait("timeout", timeout)
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be callable, not {type(on_lost).__name__}")
        self.on_lost = on_lost
        self._identifier = identifier
        self._local = threading.Lock()  # held by the thread that holds (or seeks) the lock
        self._owner: int | None = None
        self._count = 0
        self._inherited = 0  # a forked child's count of the parent's holding (never released)
        self._seat: Seat | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        seat = self._seat if self._pid == os.getpid() else None
        state = "unheld" if seat is None else "lost" if seat.lost else \
            f"held at revision {seat.revision}"
        return f"<Lock {self.name!r} {state}>"

    def __reduce__(self) -> Any:
        raise TypeError("a Lock is held by this process and cannot be pickled; pass the "
                        "mapping and the lock's name, and make the lock where it is used")

    def _check_fork(self) -> None:
        if self._pid == os.getpid():
            return
        # A forked child: the parent holds (or waits for) the lock, not this process.
        # Forget the parent's seat without touching its lease or key.
        self._pid = os.getpid()
        self._inherited = self._count if self._owner == threading.get_ident() else 0
        self._local = threading.Lock()
        self._owner, self._count, self._seat = None, 0, None

    @property
    def identifier(self) -> str:
        """What this lock's key holds: the ``identifier`` given, else ``host:pid:thread``."""
        return self._identifier or \
            f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    # -- threading.Lock's surface -------------------------------------------------

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Take the lock; whether it was taken.

        ``timeout`` (seconds) bounds the wait; ``-1`` means the lock's own
        ``timeout`` and ``None`` forever.  Without ``blocking`` it is taken only
        if free now.  Waiting leaves no trace: a contender that gives up
        revokes its lease.  :class:`~etcdmap.errors.EtcdLockLost` if the
        contender's lease lapsed while it waited, or, for the thread that
        holds it, if it was lost.
        """
        self._check_fork()
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout == -1:
            timeout = self.timeout
        timeout = check_wait("timeout", timeout)
        me = threading.get_ident()
        if self._owner == me and self._seat is not None:
            self._seat.check()
            self._count += 1
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._local.acquire(blocking, -1 if timeout is None or not blocking else timeout):
            return False
        try:
            seat = self._join(blocking, deadline)
        except BaseException:
            self._local.release()
            raise
        if seat is None:
            self._local.release()
            return False
        self._seat, self._owner, self._count = seat, me, 1
        return True

    def _join(self, blocking: bool, deadline: float | None) -> Seat | None:
        """Queue up and wait (if ``blocking``) until ``deadline``; the seat if it was won."""
        seat = Seat(self._client, self._prefix, self.identifier.encode(), self.ttl,
                    on_lost=functools.partial(_tell, weakref.ref(self)),
                    what=f"lock {self.name!r}")
        try:
            won = seat.first or (blocking and seat.wait(deadline))
            if won:
                seat.take()
        except BaseException:
            try:
                seat.close()
            except EtcdError:
                log.warning("%r: leaving the queue failed; its key lapses within %d s",
                            self, self.ttl)
            raise
        if not won:
            seat.close()
            return None
        return seat

    def release(self) -> None:
        """Release the lock (once per :meth:`acquire` of its thread).

        The last release revokes the lease, deleting the key, also after the
        lock was lost.  Errors of that revocation are raised (the lease is no
        longer kept alive, so the key lapses within ``ttl`` anyway).
        """
        self._check_fork()
        if self._owner != threading.get_ident():
            if self._inherited:  # the parent's holding, in a forked child: not ours to end
                self._inherited -= 1
                return
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count:
            return
        seat, self._seat, self._owner = self._seat, None, None
        try:
            if seat is not None:
                seat.close()
        finally:
            self._local.release()

    def locked(self) -> bool:
        """Whether anyone holds the lock (one request)."""
        self._check_fork()
        return self._client.range(self._prefix, prefix_end(self._prefix),
                                  count_only=True).count > 0

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise EtcdLockTimeout(f"lock {self.name!r} not acquired within {self.timeout} s")
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.release()
        except EtcdError:
            if exc is None:
                raise
            # The block's own error is the one to see; the key lapses within the TTL.
            log.warning("%r: releasing after an error failed too", self)

    # -- what etcd adds --------------------------------------------------------------

    @property
    def is_held(self) -> bool:
        """Whether this object holds the lock, as far as this process knows: taken, not
        released, its lease not lapsed and its key not deleted."""
        self._check_fork()
        seat = self._seat
        return seat is not None and not seat.lost

    @property
    def revision(self) -> int | None:
        """The fencing token while held: the create revision of the lock's key."""
        self._check_fork()
        seat = self._seat
        return None if seat is None or seat.lost else seat.revision

    def contenders(self) -> list[str]:
        """The identifiers of the holder and the waiters, in queue order (holder first)."""
        self._check_fork()
        return [kv.value.decode("utf-8", "replace") for kv in queued(self._client, self._prefix)]

    def fence(self) -> Fence:
        """The condition that this holding still stands, for guarded writes and transactions.

        :class:`~etcdmap.errors.EtcdLockLost` if the lock is not held now.
        """
        self._check_fork()
        seat = self._seat
        if seat is None:
            raise EtcdLockLost(f"lock {self.name!r} is not held")
        seat.check()
        return seat.fence()

    def guard(self, mapping: EtcdMapping) -> EtcdMapping:
        """``mapping``, writing only while this holding stands (``mapping.guarded(self)``).

        A write after the lock was lost raises
        :class:`~etcdmap.errors.EtcdLockLost` and writes nothing.
        """
        return mapping.guarded(self)
