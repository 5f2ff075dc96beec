"""Watch streams that resume where they left off and never hang silently.

A :class:`Watcher` reads the gateway's stream on a daemon thread and hands
the consumer one revision's events at a time.  On any connection failure it
reconnects (to the next endpoint) from the last revision it handed over + 1,
so no event is lost or repeated.  A stream that stays silent for
``read_timeout`` seconds is kept if its member still answers (a quiet watch
on a healthy member never reconnects, so compaction elsewhere cannot break
it) and abandoned for another member if not.

The reader thread holds only the watch's state, never the :class:`Watcher`:
a watcher that is dropped unclosed is closed by the garbage collector (with a
``ResourceWarning``), like a file.  After ``os.fork()`` a child's watcher
starts its own stream from where the parent's copy was.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._settings import READ_TIMEOUT, check_wait
from ._watch_reader import Reader
from .errors import EtcdClosed, EtcdTimeout
from .records import Event

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["Watcher"]

K = TypeVar("K", str, bytes)


class Watcher(Generic[K]):
    """An iterator (and context manager) over the events of a key or a range."""

    def __init__(
        self,
        transport: Transport,
        key: bytes,
        range_end: bytes | None,
        *,
        key_fn: Callable[[bytes], Any],
        value_fn: Callable[[bytes], Any],
        accept: Callable[[bytes], bool] | None = None,
        start_revision: int | None = None,
        prev_kv: bool = False,
        read_timeout: float = READ_TIMEOUT,
    ):
        if not read_timeout > 0:
            raise ValueError(f"read_timeout must be a positive number of seconds, "
                             f"not {read_timeout!r}")
        if start_revision is not None:
            if isinstance(start_revision, bool) or not isinstance(start_revision, int):
                raise TypeError(f"start_revision must be an int, not "
                                f"{type(start_revision).__name__}")
            if start_revision < 0:
                raise ValueError(f"start_revision must be >= 0, not {start_revision}")
        resume = (start_revision - 1) if start_revision else None
        self.revision = resume or 0  # the last revision handed to the consumer
        self._pending: deque[Event[K]] = deque()
        self._reader = Reader(transport, key, range_end, key_fn=key_fn, value_fn=value_fn,
                               accept=accept, resume=resume, prev_kv=prev_kv,
                               read_timeout=read_timeout)
        self._reader.thread.start()
        if start_revision is None:
            self._wait_established(transport.timeout)

    def _wait_established(self, timeout: float) -> None:
        # "From now" must mean from when this constructor returns, so wait for
        # the server to confirm the watch (or fail).
        reader = self._reader
        deadline = time.monotonic() + timeout
        while not reader.created.wait(0.05):
            if not reader.queue.empty() or not reader.thread.is_alive():
                self.next_batch(0.01)  # raises the reader's error
            if time.monotonic() > deadline:
                self.close()
                raise EtcdTimeout(f"watch not established within {timeout} s")

    def __repr__(self) -> str:
        reader = getattr(self, "_reader", None)
        if reader is None:
            return "<Watcher>"
        state = "closed" if reader.closed.is_set() else f"at revision {self.revision}"
        return f"<Watcher {reader.key!r} {state}>"

    # -- consumer side -----------------------------------------------------------

    def __iter__(self) -> Iterator[Event[K]]:
        # A generator, so that leaving a for loop (break, exception) closes the stream.
        try:
            while True:
                event = self.next_event(None)
                if event is None:
                    return
                yield event
        finally:
            self.close()

    def __next__(self) -> Event[K]:
        event = self.next_event(None)
        if event is None:
            raise StopIteration
        return event

    def next_event(self, timeout: float | None) -> Event[K] | None:
        """The next event, or ``None`` after ``timeout`` seconds (or once closed)."""
        if not self._pending:
            batch = self.next_batch(timeout)
            if not batch:
                return None
            self._pending.extend(batch)
        return self._pending.popleft()

    def next_batch(self, timeout: float | None) -> list[Event[K]]:
        """The events of the next revision, or ``[]`` on timeout or once closed."""
        timeout = check_wait("timeout", timeout)
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        if self._reader.pid != os.getpid():  # forked: this process needs its own stream
            self._reader = self._reader.forked()
        reader = self._reader
        deadline = None if timeout is None else time.monotonic() + timeout
        while not reader.closed.is_set() or not reader.queue.empty():
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return []
            try:
                item = reader.queue.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self.close()
                raise item
            if not item:
                continue  # close()'s wake-up call
            self.revision = max(self.revision, item[-1].revision)
            return item
        return []

    @property
    def closed(self) -> bool:
        """Whether the watch was closed (or ended with an error)."""
        return self._reader.closed.is_set()

    def wait_created(self, timeout: float | None = None) -> bool:
        """Block until the server confirmed the watch (events after now are seen)."""
        return self._reader.created.wait(timeout)

    def close(self, *, wait: bool = True) -> None:
        """End the stream and its thread (and wake a consumer blocked on it).

        With ``wait`` (the default) it returns once the thread has ended.
        """
        reader = self._reader
        reader.close()
        if wait and reader.thread.is_alive() and threading.current_thread() is not reader.thread:
            reader.thread.join(timeout=5)

    def __enter__(self) -> Watcher[K]:
        if self._reader.closed.is_set():
            raise EtcdClosed("this watch is closed")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a Watcher holds a live stream and cannot be pickled; "
                        "pickle the mapping or client and watch again where it is loaded")

    def __del__(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is None or reader.closed.is_set():
            return
        if reader.pid == os.getpid():
            warnings.warn(f"unclosed {self!r}; use it as a context manager or call close()",
                          ResourceWarning, source=self, stacklevel=2)
        reader.close()
