"""The queue behind a lock or an election: etcd's lock recipe, shared by both.

Each contender puts one key, ``<prefix><lease id in hex>``, bound to a lease
of its own.  The key with the lowest create revision is first: it holds the
lock, or leads.  A contender waits for its turn by watching only its
predecessor (the key created last before its own) for deletion, so a release
wakes one waiter, not all of them (no thundering herd); the watch starts
right after the revision the predecessor was read at, so no deletion is
missed.  This is Go's ``clientv3/concurrency`` ``Mutex`` and ``Election``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from .errors import EtcdCompacted, EtcdLockLost, EtcdProtocolError
from .ops import Compare, Put, Range, prefix_end
from .records import KeyValue, RangeResponse

if TYPE_CHECKING:
    from .client import EtcdClient
    from .watch import Watcher

__all__ = ["Turn", "enqueue", "first", "predecessor", "queued"]

_PAGE = 16  # keys read at once when looking for a predecessor; grows as needed


Ahead = tuple[KeyValue | None, int, bool]  # (predecessor, revision read at, own key there)


def _newest(prefix: bytes, limit: int) -> Range:
    """The keys (only) of the ``limit`` newest contenders, newest first."""
    return Range(prefix, prefix_end(prefix), limit=limit, keys_only=True,
                 sort_order="DESCEND", sort_target="CREATE")


def _scan(page: RangeResponse, revision: int) -> tuple[KeyValue | None, bool] | None:
    """In a page of the newest keys: the predecessor of the key created at ``revision``
    (``None`` if it is first) and whether that key is there; ``None`` if the page is
    too short to tell."""
    mine = False
    for kv in page.kvs:
        if kv.create_revision == revision:
            mine = True
        elif kv.create_revision < revision:
            return kv, mine
    return None if page.more else (None, mine)


def enqueue(client: EtcdClient, prefix: bytes, key: bytes, value: bytes,
            lease: int) -> tuple[int, Ahead | None]:
    """Put ``key`` (bound to ``lease``) unless it exists: its create revision, and who is
    ahead of it (as :func:`predecessor` says; ``None`` if the queue was too long to tell).

    One transaction: put-if-absent (else read the key back), and either way
    read the newest keys, so an uncontended lock is won in this round trip, and
    a waiter knows whom to watch without another.
    """
    resp = client.txn([Compare(key, "CREATE", "==", 0)],
                      [Put(key, value, lease=lease), _newest(prefix, _PAGE)],
                      [Range(key), _newest(prefix, _PAGE)])
    *head, page = resp.responses
    if not isinstance(page, RangeResponse):
        raise EtcdProtocolError("the queue's transaction did not read the queue")
    if resp.succeeded:
        revision = resp.revision  # the put created the key at the transaction's revision
    else:
        mine = head[0] if head else None
        if not isinstance(mine, RangeResponse) or not mine.kvs:
            raise EtcdProtocolError("the queue's transaction did not read its own key")
        revision = mine.kvs[0].create_revision
    found = _scan(page, revision)
    return revision, None if found is None else (found[0], resp.revision, found[1])


def first(client: EtcdClient, prefix: bytes) -> KeyValue | None:
    """The first contender (it holds the lock, or leads), or ``None`` if there is none."""
    resp = client.range(prefix, prefix_end(prefix), limit=1, sort_order="ASCEND",
                        sort_target="CREATE")
    return resp.kvs[0] if resp.kvs else None


def queued(client: EtcdClient, prefix: bytes) -> list[KeyValue]:
    """Every contender, first first."""
    return list(client.range(prefix, prefix_end(prefix), sort_order="ASCEND",
                             sort_target="CREATE").kvs)


def predecessor(client: EtcdClient, prefix: bytes, revision: int) -> Ahead:
    """The contender created last before ``revision``, the revision read at, and whether
    the key created at ``revision`` is still there.

    etcd's ``max_create_revision`` would pick it in one read, but neither the
    gateway's JSON nor this client's requests carry it, so the newest keys
    come first (sorted by create revision, keys only), in pages that grow,
    all at one revision.
    """
    limit, pinned = _PAGE, 0
    while True:
        page = client.range(prefix, prefix_end(prefix), limit=limit, revision=pinned,
                            keys_only=True, sort_order="DESCEND", sort_target="CREATE")
        found = _scan(page, revision)
        if found is not None:
            return found[0], page.revision, found[1]
        pinned = page.revision
        limit *= 4  # etcd sorts the whole range before the limit: re-read it larger


class Turn:
    """One contender's wait for its turn; :meth:`cancel` (from any thread) ends it."""

    def __init__(self, client: EtcdClient, prefix: bytes, revision: int,
                 ahead: Ahead | None = None):
        self._client, self._prefix, self._revision = client, prefix, revision
        self._ahead = ahead  # what enqueue() read: the first look needs no request
        self._lock = threading.Lock()
        self._watcher: Watcher[bytes] | None = None
        self._cancelled: str | None = None

    def cancel(self, why: str) -> None:
        """End the wait: :meth:`wait` raises :class:`EtcdLockLost` with ``why``."""
        with self._lock:
            self._cancelled = why
            watcher = self._watcher
        if watcher is not None:
            watcher.close(wait=False)  # wakes the waiting thread at once

    def _check(self) -> None:
        if self._cancelled is not None:
            raise EtcdLockLost(self._cancelled)

    def wait(self, deadline: float | None) -> bool:
        """Block until first (True) or until ``deadline`` (``time.monotonic()``; False).

        :class:`EtcdLockLost` if the contender's own key vanished meanwhile
        (its lease lapsed), or the wait was cancelled.
        """
        while True:
            self._check()
            ahead, self._ahead = self._ahead, None
            before, revision, mine = ahead or predecessor(self._client, self._prefix,
                                                          self._revision)
            if not mine:
                raise EtcdLockLost("the contender's key was deleted while it waited")
            if before is None:
                return True
            if not self._wait_deleted(before.key, revision + 1, deadline):
                return False

    def _wait_deleted(self, key: bytes, start: int, deadline: float | None) -> bool:
        """Wait for ``key``'s deletion at ``start`` or later; False at the deadline."""
        watcher: Watcher[bytes] = self._client.watch_range(
            key, None, key_fn=bytes, value_fn=bytes, start_revision=start)
        with self._lock:
            self._watcher = watcher
        try:
            self._check()  # cancelled before the watcher could be closed by cancel()
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                try:
                    event = watcher.next_event(left)
                except EtcdCompacted:
                    return True  # history gone: read the queue again
                if event is None:
                    self._check()
                    if watcher.closed:
                        return True  # ended without a reason: read the queue again
                elif event.type == "DELETE":
                    return True
        finally:
            with self._lock:
                self._watcher = None
            watcher.close()
