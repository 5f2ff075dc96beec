"""A bidirectional gRPC stream to one member, shared by many callers.

:class:`SharedStream` holds the call, the queue its requests are sent from,
and the thread that reads its replies; a subclass says where each reply goes
(:meth:`SharedStream.route`) and whom the end of the stream concerns
(:meth:`SharedStream.ended`).  Watches (:mod:`.watch`) and lease keepalives
(:mod:`.keepalive`) each use one per member, so a client with many of them
still holds one stream of each kind per member.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import EtcdConnectionError, EtcdError
from .failures import stream_error

__all__ = ["SharedStream"]

_END = object()  # ends the request iterator
_JOIN = 5.0  # seconds close() waits for the reader thread


class SharedStream:
    """One stream of requests and replies; :meth:`route` and :meth:`ended` are the subclass's."""

    name = "etcdmap-grpc-stream"  # of its reader thread
    method = ""  # the gRPC method it calls, e.g. "Watch"

    def __init__(self, endpoint: str, open_stream: Callable[[Iterator[Any]], Any],
                 token: str | None):
        self.endpoint = endpoint
        self.token = token
        self.error: EtcdError | None = None  # why the stream ended
        self.cause: BaseException | None = None  # ... as gRPC said it
        self.retired = False  # replaced: ends once nobody uses it
        self.lock = threading.Lock()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = open_stream(self._outgoing())
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint}>"

    @property
    def alive(self) -> bool:
        """Whether the stream runs and takes newcomers (not ended, not retired)."""
        return self.error is None and not self.retired

    @property
    def idle(self) -> bool:
        """Whether nobody uses the stream (the subclass knows)."""
        raise NotImplementedError

    def retire(self) -> None:
        """Nobody new joins; the stream ends once it is idle."""
        with self.lock:
            self.retired = True
            done = self.idle
        if done:
            self.close()

    def send(self, request: Any) -> None:
        """Queue ``request`` for the stream (in order)."""
        self._requests.put(request)

    def close(self) -> None:
        """End the stream; whoever waits on it sees the error."""
        self._call.cancel()
        self._requests.put(_END)
        if threading.current_thread() is not self._thread:
            self._thread.join(_JOIN)  # a cancelled call wakes its reader at once

    def _outgoing(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _run(self) -> None:
        try:
            for message in self._call:
                self.route(message)
            raise EtcdConnectionError(f"the stream from {self.endpoint} ended")
        except Exception as exc:  # a grpc.RpcError or an error of ours
            error = exc if isinstance(exc, EtcdError) else stream_error(exc, self.endpoint)
            with self.lock:
                self.error, self.cause = error, exc
            self._requests.put(_END)
            self.ended(error)

    def route(self, message: Any) -> None:
        """Hand one reply to whoever waits for it (in the reader thread)."""
        raise NotImplementedError

    def ended(self, error: EtcdError) -> None:
        """The stream ended with ``error``: tell everyone who waits on it."""
        raise NotImplementedError
