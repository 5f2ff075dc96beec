"""A watch's reader thread: the stream, its silences, its resumes.

:class:`Reader` holds a watch's state and does its thread's work; it never
refers to the :class:`~etcdmap.watch.Watcher` the consumer holds, so a
dropped watcher can be collected (and closes its reader).  It reconnects (to
the next endpoint) from the last revision handed over + 1; on silence it asks
its member whether the stream missed anything, and keeps a quiet stream on a
healthy member as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionError,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTLSError,
    EtcdUnavailable,
    EtcdWatchError,
    GrpcCode,
)
from .ops import Range, WatchCreate
from .records import Event, RangeResponse, WatchChange, WatchReply

if TYPE_CHECKING:
    from ._transport import Cuttable, Transport, WatchStream

log = logging.getLogger("etcdmap.watch")
_Item = list[Event[Any]] | BaseException

__all__ = ["Reader"]


class _Denied(Exception):
    """The server cancelled the watch for its token: renew it once, else raise ``final``."""

    def __init__(self, final: EtcdServerError):
        super().__init__(str(final))
        self.final = final


class Reader:
    """A watch's state and its reader thread's work; it never refers to the Watcher."""

    def __init__(self, transport: Transport, key: bytes, range_end: bytes | None, *,
                 key_fn: Callable[[bytes], Any], value_fn: Callable[[bytes], Any],
                 accept: Callable[[bytes], bool] | None, resume: int | None, prev_kv: bool,
                 read_timeout: float):
        self.transport = transport
        self.key, self.range_end = key, range_end
        self.key_fn, self.value_fn, self.accept = key_fn, value_fn, accept
        self.prev_kv = prev_kv
        self.read_timeout = read_timeout
        # The highest revision handed over (or confirmed empty): a stream resumes after it.
        self.resume = resume
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=256)
        self.closed = threading.Event()
        self.created = threading.Event()
        self.stream: WatchStream | None = None
        self.opening: Cuttable | None = None  # while a stream is being set up
        self.established = False
        self.retried_denial = False
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self.run, name="etcdmap-watch", daemon=True)

    def forked(self) -> Reader:
        """This watch's state for a forked child, with a reader thread of its own."""
        child = Reader(self.transport, self.key, self.range_end, key_fn=self.key_fn,
                        value_fn=self.value_fn, accept=self.accept, resume=self.resume,
                        prev_kv=self.prev_kv, read_timeout=self.read_timeout)
        # The parent's queue and events may hold locks of threads that do not
        # exist here: copy what they hold without touching their locks.
        for item in list(self.queue.queue):
            child.queue.put_nowait(item)
        if self.created.is_set():
            child.created.set()
        if self.closed.is_set():
            child.closed.set()
        else:
            child.thread.start()
        return child

    def close(self) -> None:
        """End the stream and the thread (from any thread, at once)."""
        self.closed.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait([])  # wake a consumer blocked on the queue
        opening = self.opening
        if opening is not None:
            opening.cut()
        stream = self.stream
        if stream is not None:
            stream.abort()

    # -- the thread ----------------------------------------------------------------

    def run(self) -> None:
        failures = 0
        refused = 0  # TLS refusals in a row
        while not self.closed.is_set():
            endpoint = self.transport.endpoint
            self.established = False
            try:
                self._stream_once(endpoint)
            except EtcdTLSError as exc:
                # A definite refusal (certificate, CA): one try per member, then say so.
                refused += 1
                if refused >= len(self.transport.endpoints):
                    self._put(exc)
                    return
                self.transport.fail_over(endpoint)
            except _Denied as exc:
                # etcd cancels a watch made with an expired token with "permission
                # denied" (etcd-io/etcd#12385): renew the token once and resume.
                if not self.transport.has_credentials or self.retried_denial:
                    self._put(exc.final)
                    return
                self.retried_denial = True
                try:
                    self.transport.reauthenticate()
                except EtcdError as auth:
                    self._put(auth)
                    return
            except EtcdAuthError as exc:  # the login itself failed: no retry helps
                self._put(exc)
                return
            except (EtcdConnectionError, EtcdUnavailable, EtcdProtocolError) as exc:
                refused = 0
                failures = self._interrupted(endpoint, exc, failures)
            except EtcdError as exc:  # compaction ...: the consumer must know
                self._put(exc)
                return
            except BaseException as exc:  # never die silently
                self._put(EtcdWatchError(f"watch failed: {exc!r}"))
                return

    def _interrupted(self, endpoint: str, exc: BaseException, failures: int) -> int:
        if self.closed.is_set():
            return failures
        # A stream that was established and then broke starts the backoff afresh.
        failures = 1 if self.established else failures + 1
        log.info("watch on %s interrupted (%s); resuming after revision %s",
                 endpoint, type(exc).__name__, self.resume)
        self.transport.fail_over(endpoint, failures)
        return failures

    def _stream_once(self, endpoint: str) -> None:
        # Servers configured with a progress interval then advance our resume point.
        req = WatchCreate(self.key, self.range_end,
                          start_revision=0 if self.resume is None else self.resume + 1,
                          prev_kv=self.prev_kv, progress_notify=True)
        try:
            stream = self.transport.watch(req, endpoint=endpoint, on_opening=self._opening)
        finally:
            self.opening = None
        self.stream = stream
        try:
            suspect = False  # the last check found a change the stream had not delivered
            while not self.closed.is_set():  # close() set it before it looked at .stream
                replies = stream.read(min(self.read_timeout, 1.0) if suspect
                                      else self.read_timeout)
                if replies is None:
                    # Silence.  A quiet stream is kept while its member answers and
                    # etcd holds no change it missed: reconnecting could meet a
                    # compacted resume point although nothing it watches changed.
                    # A change may be on its way: only a second look in a row
                    # that finds it still missing means the stream is dead.
                    behind = self._missed_something(endpoint)
                    if behind and suspect:
                        raise EtcdUnavailable(f"the watch stream from {endpoint} fell behind")
                    suspect = behind
                    continue
                suspect = False
                for reply in replies:
                    self._handle(reply)
        finally:
            self.stream = None
            stream.close()

    def _opening(self, deadline: Cuttable) -> None:
        self.opening = deadline
        if self.closed.is_set():  # close() ran before it could see the deadline
            deadline.cut()

    def _missed_something(self, endpoint: str) -> bool:
        """Whether etcd holds a change in the range that the stream has not delivered.

        Asked of the stream's own member, so an error (it does not answer) also
        means "reconnect elsewhere".  Puts show as a key modified after the
        resume point; deletes as a different key count than at that revision
        (while it is not compacted).  The resume point itself never moves on
        this evidence: only the stream's own events and progress move it.
        """
        span = (self.key, self.range_end)
        newest = Range(*span, limit=1, keys_only=True, sort_order="DESCEND", sort_target="MOD")
        ranges = [newest]
        if self.resume:
            ranges += [Range(*span, count_only=True),
                       Range(*span, count_only=True, revision=self.resume)]
        try:
            replies = self._read(ranges, endpoint)
        except EtcdCompacted:
            replies = self._read([newest], endpoint)
        except EtcdError as exc:
            raise EtcdUnavailable(f"{endpoint} does not answer: {type(exc).__name__}") from exc
        if self.resume is None:
            return False
        top = replies[0].kvs[0].mod_revision if replies[0].kvs else 0
        return top > self.resume or (len(replies) == 3 and replies[1].count != replies[2].count)

    def _read(self, ranges: list[Range], endpoint: str) -> list[RangeResponse]:
        # One plain range after another (no read-only txn: etcd 3.5.0-3.5.6 crash
        # on those when abandoned, and this call has a short deadline).
        timeout = min(self.transport.timeout, max(self.read_timeout, 1.0))
        out: list[RangeResponse] = []
        for req in ranges:
            if out and not req.revision:
                req = dataclasses.replace(req, revision=out[0].revision)
            out.append(self.transport.range(req, endpoint=endpoint, timeout=timeout,
                                            deadline=0))
        return out

    def _handle(self, reply: WatchReply) -> None:
        if reply.canceled:
            raise self._cancel_error(reply)
        revision = reply.revision
        if reply.created:
            self.established = True
            self.retried_denial = False
            if self.resume is None:
                self.resume = revision  # "from now": events after this revision
            self.created.set()
            return
        if not reply.changes:
            # A progress notification: everything up to its revision was sent.
            if revision and (self.resume is None or revision > self.resume):
                self.resume = revision
            return
        # One batch per revision (a resumed stream can carry several in one message).
        top = self.resume or 0
        batch: list[Event[Any]] = []
        for change in reply.changes:
            rev = change.kv.mod_revision
            top = max(top, rev)
            if batch and rev != batch[-1].revision:
                self._hand_over(batch)
                batch = []
            if self.accept is None or self.accept(change.kv.key):
                batch.append(self._event(change))
        self._hand_over(batch)
        self.resume = top

    def _hand_over(self, batch: list[Event[Any]]) -> None:
        if batch:
            self._put(batch)
            self.resume = batch[-1].revision

    def _cancel_error(self, reply: WatchReply) -> Exception:
        compact = reply.compact_revision
        if compact:
            asked = (self.resume or 0) + 1
            return EtcdCompacted(f"cannot watch from revision {asked}: it has been compacted "
                                 f"(the oldest revision left is {compact})",
                                 compact_revision=compact)
        reason = reply.cancel_reason
        if "permission denied" in reason:
            return _Denied(EtcdPermissionError(reason, code=GrpcCode.PERMISSION_DENIED))
        if "auth" in reason and "token" in reason:
            # etcd 3.4 says "invalid auth token" where 3.5 says "permission denied".
            return _Denied(EtcdAuthError(reason, code=GrpcCode.UNAUTHENTICATED))
        return EtcdServerError(reason or "watch cancelled by the server")

    def _event(self, change: WatchChange) -> Event[Any]:
        kv, prev = change.kv, change.prev_kv
        value_fn = self.value_fn
        deleted = change.type == "DELETE"
        return Event(type=change.type, key=self.key_fn(kv.key),
                     value=None if deleted else value_fn(kv.value),
                     prev_value=value_fn(prev.value) if prev is not None else None,
                     revision=kv.mod_revision, kv=kv)

    def _put(self, item: _Item) -> None:
        # Bounded queue: a slow consumer slows the reader, not memory.
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


