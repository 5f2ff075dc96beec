"""Watches over gRPC: many watches on one bidirectional stream per member.

A :class:`Hub` owns one ``Watch`` stream to one member and a thread that reads
it.  etcd confirms creates in the order they were sent, so each ``created``
reply goes to the oldest watch still waiting; after that, replies are routed
by ``watch_id``.  When the stream ends, every watch on it
sees the error and resumes on its own, as a gateway watch does.
"""

from __future__ import annotations

import collections
import contextlib
import queue
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import EtcdConnectionError, EtcdError, EtcdTimeout
from ...ops import WatchCreate
from ...records import WatchReply
from . import messages as pb
from .convert import watch_create, watch_reply
from .streams import SharedStream

__all__ = ["GrpcWatch", "Hub"]

_ABORT = object()  # wakes a reader


class GrpcWatch:
    """One watch on a :class:`Hub`: the replies routed to it, in order."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.endpoint = hub.endpoint
        self.watch_id: int | None = None
        self.closed = False
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._error: BaseException | None = None  # raised after the replies before it
        self._head: list[Any] = []  # what wait_created took out, read first

    def __repr__(self) -> str:
        return f"<GrpcWatch {self.watch_id} from {self.endpoint}>"

    def deliver(self, item: WatchReply | BaseException) -> None:
        """Hand a reply (or the error that ended the stream) to the reader."""
        self._inbox.put(item)

    def read(self, timeout: float | None) -> list[WatchReply] | None:
        """The replies that arrived; ``None`` after ``timeout`` s of silence."""
        if self._error is not None:
            raise self._error
        items, self._head = self._head, []
        if not items:
            try:
                items.append(self._inbox.get(timeout=timeout))
            except queue.Empty:
                return None
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self._inbox.get_nowait())
        replies: list[WatchReply] = []
        for item in items:
            if item is _ABORT:
                item = EtcdConnectionError(f"the watch from {self.endpoint} was aborted")
            if isinstance(item, BaseException):
                self._error = item
                if not replies:
                    raise item
                break
            replies.append(item)
        return replies

    def wait_created(self, timeout: float) -> None:
        """Wait until etcd confirms or refuses the watch (the reply stays for :meth:`read`)."""
        try:
            first = self._inbox.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise EtcdTimeout(f"{self.endpoint} did not confirm the watch within "
                              f"{timeout:.3g} s") from None
        if first is _ABORT:
            self.close()
            raise EtcdConnectionError(f"the watch on {self.endpoint} was cut")
        if isinstance(first, BaseException):
            self.close()
            raise first
        self._head.append(first)

    def cut(self) -> None:
        """End the set-up now (from any thread)."""
        self.abort()

    def abort(self) -> None:
        """Wake a thread blocked in :meth:`read` (from any thread)."""
        self._inbox.put(_ABORT)

    def close(self) -> None:
        """Cancel the watch on the server and leave the hub."""
        if not self.closed:
            self.closed = True
            self.hub.cancel(self)


class Hub(SharedStream):
    """One ``Watch`` stream to one member, shared by many watches."""

    name = "etcdmap-grpc-watch"
    method = "Watch"

    def __init__(self, endpoint: str, open_stream: Callable[[Iterator[Any]], Any],
                 token: str | None):
        self._waiting: collections.deque[GrpcWatch] = collections.deque()  # sent creates
        self._watches: dict[int, GrpcWatch] = {}
        super().__init__(endpoint, open_stream, token)

    def __repr__(self) -> str:
        return f"<Hub {self.endpoint}: {len(self._watches)} watches>"

    @property
    def idle(self) -> bool:
        """Whether no watch uses the stream."""
        return not self._watches and not self._waiting

    def add(self, req: WatchCreate) -> GrpcWatch:
        """Start a watch on this stream; its replies go to the returned watch."""
        watch = GrpcWatch(self)
        with self.lock:
            if self.error is not None:
                raise self.error
            self._waiting.append(watch)
            self.send(watch_create(req))
        return watch

    def _cancel_on_server(self, watch_id: int) -> None:
        self.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id)))

    def cancel(self, watch: GrpcWatch) -> None:
        """Stop sending ``watch`` anything; tell the server if it knows the watch."""
        with self.lock:
            wid = watch.watch_id
            if wid is not None and self._watches.pop(wid, None) is not None and self.alive:
                self._cancel_on_server(wid)
            # A watch still waiting for its "created" is cancelled when that arrives.
            done = self.retired and self.idle
        if done:
            self.close()

    def route(self, message: Any) -> None:
        """Hand a reply to its watch (``created``: the oldest waiting; -1: every watch)."""
        reply = watch_reply(message)
        wid = message.watch_id
        with self.lock:
            if reply.created:
                watch = self._waiting.popleft() if self._waiting else None
                if watch is None:
                    return
                if not reply.canceled and wid != -1:
                    watch.watch_id = wid
                    if watch.closed:  # given up before etcd confirmed it
                        self._cancel_on_server(wid)
                        return
                    self._watches[wid] = watch
                watch.deliver(reply)
                return
            if wid == -1:
                # A progress report of the whole stream: never asked for, and not
                # trusted to move a resume point (before etcd 3.4.24 and 3.5.8 it
                # could run ahead of events not yet sent, etcd-io/etcd#15220).
                return
            target = self._watches.get(wid)
            if target is None:
                return
            if reply.canceled:
                del self._watches[wid]
        target.deliver(reply)

    def ended(self, error: EtcdError) -> None:
        """Every watch on the stream sees ``error`` (and resumes on its own)."""
        with self.lock:
            watches = [*self._waiting, *self._watches.values()]
            self._waiting.clear()
            self._watches.clear()
        for watch in watches:
            watch.deliver(error)
