"""Hard deadlines for blocking socket I/O.

A socket timeout bounds each read, not a call: a server that trickles its
reply one byte at a time never trips it.  :func:`guard` arms a
:class:`Deadline`; one daemon thread per process shuts down the sockets of
every call still running when its deadline passes, which wakes the blocked
reader at once.  It knows nothing of HTTP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

__all__ = ["Deadline", "guard"]

_IDLE_EXIT = 10.0  # the thread ends after this long with nothing to watch
_SLACK = 0.05  # deadlines are enforced to within this much (coalesces wake-ups)


class Deadline:
    """A point in time after which the sockets handed to :meth:`watch` are shut down."""

    __slots__ = ("_guard", "at", "fired", "sockets")

    def __init__(self, at: float, guard: _Guard):
        self.at = at
        self.fired = False
        self.sockets: list[socket.socket] = []
        self._guard = guard

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down if the deadline passes before :meth:`release`."""
        self._guard._watch(self, sock)

    def release(self) -> None:
        """The call ended: stop watching its sockets."""
        self._guard._release(self)

    def cut(self) -> None:
        """End the call now, from any thread (as if the deadline had passed)."""
        self.fired = True
        for sock in list(self.sockets):
            _shutdown(sock)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Guard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[int, Deadline] = {}
        self._wake_at = float("inf")  # when the thread means to look again
        self._thread: threading.Thread | None = None

    def _watch(self, deadline: Deadline, sock: socket.socket) -> None:
        if deadline.fired:  # cut before its socket existed
            _shutdown(sock)
            return
        with self._lock:
            deadline.sockets.append(sock)
            self._active[id(deadline)] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="etcdmap-deadlines",
                                                daemon=True)
                self._thread.start()
            elif deadline.at < self._wake_at:
                self._changed.notify()

    def _release(self, deadline: Deadline) -> None:
        if deadline.sockets:
            with self._lock:
                self._active.pop(id(deadline), None)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                now = time.monotonic()
                due = [d for d in self._active.values() if d.at <= now]
                for d in due:
                    del self._active[id(d)]
                    d.fired = True
                if self._active:
                    idle_since = now
                    self._wake_at = min(d.at for d in self._active.values()) + _SLACK
                elif now - idle_since > _IDLE_EXIT:
                    self._thread = None
                    return
                else:
                    self._wake_at = now + _IDLE_EXIT
                if not due:
                    self._changed.wait(max(self._wake_at - now, _SLACK))
            for d in due:
                for sock in d.sockets:
                    _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # shutdown(), not close(): it wakes a thread blocked on the socket, and the
    # owner still closes it (and its file descriptor) the usual way.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_guard: _Guard | None = None
_guard_pid = 0


def guard(seconds: float) -> Deadline:
    """A deadline ``seconds`` from now (the thread exists per process: fork-safe)."""
    global _guard, _guard_pid
    pid = os.getpid()
    if _guard is None or _guard_pid != pid:  # a forked child has no guard thread
        _guard, _guard_pid = _Guard(), pid
    return Deadline(time.monotonic() + seconds, _guard)
