"""A contender's place in a lock's or an election's queue, from joining to leaving.

A :class:`Seat` is one key bound to one lease of its own, kept alive while
the seat exists.  Once its turn came (:meth:`Seat.take`), a daemon thread
watches the key: if it is deleted, or the lease lapses, the seat is marked
lost at once and its owner told (once).  Leaving (:meth:`Seat.close`)
revokes the lease, which deletes the key.

The watching thread holds the seat only weakly: a seat dropped without
:meth:`~Seat.close` stops its thread and its keepalive (with a
``ResourceWarning``), and its key lapses after the TTL.  A forked child
never touches the parent's seat (see the owners' ``_check_fork``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._fence import Fence
from ._queue import Turn, enqueue
from ._settings import check_ttl
from .errors import EtcdError, EtcdLockLost
from .ops import Compare

if TYPE_CHECKING:
    from .client import EtcdClient
    from .lease import Lease
    from .mapping import EtcdMapping
    from .watch import Watcher

__all__ = ["Seat", "queue_of"]

log = logging.getLogger(__name__)
_RETRY = 1.0  # seconds between attempts to re-establish a failed watch of the own key


def queue_of(mapping: EtcdMapping, name: str, ttl: int, what: str) -> tuple[bytes, int]:
    """The key prefix of the queue at ``name`` (a lock's or an election's) and ``ttl``,
    or the ``TypeError``/``ValueError`` that names what is wrong."""
    if not isinstance(name, str):
        raise TypeError(f"{what} needs a str name, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} needs a name, not {name!r}")
    prefix = mapping._full(name, write=True) + mapping._bsep
    return prefix, check_ttl(ttl)


class _Watch:
    """What the watching thread shares with its seat: the current watcher, and the stop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.watcher: Watcher[bytes] | None = None

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            watcher = self.watcher
        if watcher is not None:
            watcher.close(wait=False)


def _watch_own(ref: weakref.ref[Seat], state: _Watch, client: EtcdClient, key: bytes,
               revision: int) -> None:
    """Mark the seat lost when its key is deleted (or re-created: another create revision)."""
    start = revision + 1  # every change since the key was created
    while not state.stopped.is_set():
        try:
            with state.lock:
                if state.stopped.is_set():
                    return
                watcher = state.watcher = client.watch_range(
                    key, None, key_fn=bytes, value_fn=bytes, start_revision=start)
            for event in watcher:  # the iterator closes the watcher when it ends
                if event.type == "DELETE" or event.kv.create_revision != revision:
                    _lost(ref, "its key was deleted")
                    return
            return  # closed: the seat was left
        except EtcdError as exc:  # e.g. compacted: read the key, and watch again after it
            log.warning("watching %r failed: %s", key, type(exc).__name__)
            try:
                resp = client.range(key)
            except EtcdError:
                state.stopped.wait(_RETRY)
                continue
            if not resp.kvs or resp.kvs[0].create_revision != revision:
                _lost(ref, "its key was deleted")
                return
            start = resp.revision + 1


def _lost(ref: weakref.ref[Seat], why: str) -> None:
    seat = ref()
    if seat is not None:
        seat.mark_lost(why)


class Seat:
    """One contender: its key under ``prefix``, bound to a lease of its own."""

    def __init__(self, client: EtcdClient, prefix: bytes, value: bytes, ttl: int, *,
                 on_lost: Callable[[], None], what: str):
        self._client, self._what, self._on_lost = client, what, on_lost
        self._lost_lock = threading.Lock()
        self._lost: str | None = None
        self._holding = False
        self._closed = False
        self._pid = os.getpid()
        self._watch = _Watch()
        self._turn: Turn | None = None
        ref = weakref.ref(self)
        self.lease: Lease = client.lease(ttl, on_expired=lambda _: _lost(ref, "its lease lapsed"))
        self.key = prefix + f"{self.lease.id:x}".encode()
        try:
            self.revision, ahead = enqueue(client, prefix, self.key, value, self.lease.id)
        except BaseException:
            with contextlib.suppress(EtcdError):  # the first error is the one to see
                self.close()  # revoking the lease deletes the key, if the put landed
            raise
        self.first = ahead is not None and ahead[0] is None and ahead[2]
        self._turn = Turn(client, prefix, self.revision, ahead)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "held" if self._holding else "waiting"
        return f"<{self._what} {self.key!r} {state}>"

    def wait(self, deadline: float | None) -> bool:
        """Wait for the turn (see :meth:`~etcdmap._queue.Turn.wait`); whether it came."""
        if self.first:
            return True
        assert self._turn is not None  # made with the seat
        if self._lost is not None:  # lapsed before the wait began: cancel() came too early
            raise EtcdLockLost(f"{self._what}: {self._lost} while it waited")
        return self._turn.wait(deadline)

    def take(self) -> None:
        """The turn came: watch the key from now on; :class:`EtcdLockLost` if it is gone."""
        self._holding = True
        self.check()  # lost between the turn and now: the owner was not told
        thread = threading.Thread(
            target=_watch_own, daemon=True, name=f"etcdmap-seat-{self.lease.id:x}",
            args=(weakref.ref(self), self._watch, self._client, self.key, self.revision))
        thread.start()

    @property
    def lost(self) -> bool:
        """Whether the key is known to be gone (deleted, or its lease lapsed), or left."""
        return self._closed or self._lost is not None or self.lease.expired

    def mark_lost(self, why: str) -> None:
        """Record the loss (once); a waiter stops waiting, a holder's owner is told."""
        with self._lost_lock:
            if self._lost is not None or self._closed:
                return
            self._lost = why
        if not self._holding:
            if self._turn is not None:
                self._turn.cancel(f"{self._what}: {why} while it waited")
            return
        log.warning("%s lost: %s", self._what, why)
        try:
            self._on_lost()
        except Exception:  # the callback's failure must not kill the watching thread
            log.exception("on_lost callback failed")

    def check(self) -> None:
        """:class:`EtcdLockLost` unless the seat is still held, as far as is known here."""
        if self._closed:
            raise EtcdLockLost(f"{self._what} was released")
        if self.lost:
            raise EtcdLockLost(f"{self._what} was lost: {self._lost or 'its lease lapsed'}")

    def refused(self) -> EtcdLockLost:
        """A write guarded by the key was refused: the key is gone, so the seat is lost."""
        self.mark_lost("a guarded write found its key gone")
        return EtcdLockLost(f"{self._what} was lost: its key is gone")

    def fence(self) -> Fence:
        """Writes guarded by this fence land only while the key has this create revision."""
        return Fence([Compare(self.key, "CREATE", "==", self.revision)], self.refused,
                     self.check)

    def close(self) -> None:
        """Leave: stop watching, revoke the lease (its key goes with it).

        Errors of the revocation are raised; the lease is no longer kept
        alive then, so the key lapses within the TTL anyway.
        """
        if self._closed:
            return
        self._closed = True  # from here on, the key's deletion is no loss
        try:
            self.lease.revoke()  # its keepalive stops first: no refresh races the revocation
        finally:
            self._watch.stop()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or getattr(self, "_pid", None) != os.getpid():
            return  # left, never fully made, or the parent's (after a fork)
        self._closed = True
        if self._holding:
            warnings.warn(f"unreleased {self!r} is no longer kept alive; its key lapses "
                          "after the TTL: release it, or use it with `with`",
                          ResourceWarning, source=self, stacklevel=2)
        self._watch.stop()
        lease = getattr(self, "lease", None)
        if lease is not None:
            lease.close()
