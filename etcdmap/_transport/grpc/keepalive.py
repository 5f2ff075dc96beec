"""Lease keepalives over gRPC: one ``LeaseKeepAlive`` stream per member for every lease.

etcd answers each keepalive request on the stream in order, with the lease's
ID, so each answer goes to the oldest caller waiting for that lease.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import EtcdError
from . import messages as pb
from .streams import SharedStream

__all__ = ["KeepAlives", "NoAnswer"]


class NoAnswer(Exception):
    """The member did not answer a keepalive in time."""


class _Waiter:
    __slots__ = ("done", "error", "ttl")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ttl = 0
        self.error: EtcdError | None = None


class KeepAlives(SharedStream):
    """One ``LeaseKeepAlive`` stream to one member, shared by every lease of a client."""

    name = "etcdmap-grpc-keepalive"
    method = "LeaseKeepAlive"

    def __init__(self, endpoint: str, open_stream: Callable[[Iterator[Any]], Any],
                 token: str | None):
        self._waiters: dict[int, collections.deque[_Waiter]] = {}
        super().__init__(endpoint, open_stream, token)

    @property
    def idle(self) -> bool:
        """Whether no keepalive waits for an answer."""
        return not self._waiters

    def refresh(self, lease_id: int, timeout: float) -> int:
        """Keep ``lease_id`` alive once: its new TTL, 0 when it is gone.

        Raises the error that ended the stream, or :class:`NoAnswer` after ``timeout``.
        """
        waiter = _Waiter()
        with self.lock:
            if self.error is not None:
                raise self.error
            self._waiters.setdefault(lease_id, collections.deque()).append(waiter)
            self.send(pb.LeaseKeepAliveRequest(ID=lease_id))
        if not waiter.done.wait(timeout):
            with self.lock:
                queue = self._waiters.get(lease_id)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
            raise NoAnswer(lease_id)
        if waiter.error is not None:
            raise waiter.error
        return waiter.ttl

    def route(self, message: Any) -> None:
        """Hand an answer to the oldest caller waiting for its lease."""
        with self.lock:
            queue = self._waiters.get(message.ID)
            if not queue:
                return  # its caller gave up
            waiter = queue.popleft()
            if not queue:
                del self._waiters[message.ID]
        waiter.ttl = max(int(message.TTL), 0)
        waiter.done.set()

    def ended(self, error: EtcdError) -> None:
        """Every caller still waiting sees ``error``."""
        with self.lock:
            waiters = [w for queue in self._waiters.values() for w in queue]
            self._waiters.clear()
        for waiter in waiters:
            waiter.error = error
            waiter.done.set()
