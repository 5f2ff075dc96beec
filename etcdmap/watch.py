"""Watch streams that resume where they left off and never hang silently.

A :class:`Watcher` reads the gateway's chunked stream on a daemon thread,
hands whole revisions to the consumer, and on any connection failure
reconnects (to the next endpoint) from the last revision it saw + 1, so no
event is lost or repeated.  A read timeout is the heartbeat: after
``read_timeout`` seconds of silence it reconnects, losslessly.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import requests

from .errors import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionError,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTimeout,
    EtcdUnavailable,
    EtcdWatchError,
    error_from_body,
)
from .ops import as_int, b64, unb64
from .parse import header_revision, parse_kv
from .records import Event

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["JSONStreamDecoder", "Watcher"]

log = logging.getLogger(__name__)
_HEADER_WAIT = 1.0  # seconds a (re)connect waits for headers before trying again
K = TypeVar("K", str, bytes)
_Item = list[Event[Any]] | BaseException


class JSONStreamDecoder:
    """Split a byte stream into JSON values, however the chunks fall."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the values completed by them."""
        text = self._text(data, final=False)
        self._buf += text
        # A value can only end where a message ends; waiting for the newline
        # the gateway sends keeps multi-megabyte messages linear.
        if "\n" not in text:
            return []
        return self._drain(final=False)

    def close(self) -> list[Any]:
        """The stream ended: return what is left, or raise if it is cut short."""
        self._buf += self._text(b"", final=True)
        return self._drain(final=True)

    def _text(self, data: bytes, *, final: bool) -> str:
        try:
            return self._utf8.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise EtcdProtocolError("watch stream is not UTF-8") from exc

    def _drain(self, *, final: bool) -> list[Any]:
        out = []
        pos, buf = 0, self._buf
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos == len(buf):
                break
            try:
                value, pos = self._decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if final or "\n" in buf[pos:].rstrip():
                    raise EtcdProtocolError(f"malformed JSON in watch stream: {exc}") from exc
                break
            out.append(value)
        self._buf = buf[pos:]
        return out


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streaming response (urllib3 1.26 and 2.x)."""
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        obj: Any = resp.raw
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, socket.socket):
            return obj
    return None


def _shutdown(resp: requests.Response) -> None:
    """Wake a thread blocked reading ``resp`` by shutting its socket down."""
    sock = _socket_of(resp)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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
        read_timeout: float = 60.0,
    ):
        self._transport = transport
        self._key, self._range_end = key, range_end
        self._key_fn, self._value_fn, self._accept = key_fn, value_fn, accept
        self._prev_kv = prev_kv
        self._read_timeout = read_timeout
        # Highest revision known complete; the stream resumes after it.
        self._resume = (start_revision - 1) if start_revision else None
        self.revision = self._resume or 0  # the last revision handed to the consumer
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=256)
        self._pending: deque[Event[K]] = deque()
        self._closed = threading.Event()
        self._created = threading.Event()
        self._resp: requests.Response | None = None
        self._established = False
        self._thread = threading.Thread(target=self._run, name="etcdmap-watch", daemon=True)
        self._thread.start()
        if start_revision is None:
            self._wait_established(transport.timeout)

    def _wait_established(self, timeout: float) -> None:
        # "From now" must mean from when this constructor returns, so wait for
        # the server to confirm the watch (or fail).
        deadline = time.monotonic() + timeout
        while not self._created.wait(0.05):
            if not self._queue.empty() or not self._thread.is_alive():
                self.next_batch(0.01)  # raises the reader's error
            if time.monotonic() > deadline:
                self.close()
                raise EtcdTimeout(f"watch not established within {timeout} s")

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else f"at revision {self.revision}"
        return f"<Watcher {self._key!r} {state}>"

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
        """All events of the next revision(s), or ``[]`` on timeout or once closed."""
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set() or not self._queue.empty():
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return []
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self.close()
                raise item
            if not item:
                continue  # close()'s wake-up call
            self.revision = max(self.revision, max(e.revision for e in item))
            return item
        return []

    def wait_created(self, timeout: float | None = None) -> bool:
        """Block until the server confirmed the watch (events after now are seen)."""
        return self._created.wait(timeout)

    def close(self) -> None:
        """End the stream and its thread (and wake a consumer blocked on it)."""
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait([])
        resp = self._resp
        if resp is not None:
            _shutdown(resp)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Watcher[K]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._closed.set()

    # -- reader thread -------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._closed.is_set():
            endpoint = self._transport.endpoint
            self._established = False
            try:
                self._stream_once(endpoint)
            except EtcdAuthError as exc:
                failures += 1
                if failures > 2:
                    self._put(exc)
                    return
                self._transport.reauthenticate()
            except (EtcdConnectionError, EtcdUnavailable, EtcdProtocolError) as exc:
                failures = self._interrupted(endpoint, exc, failures)
            except EtcdError as exc:  # permission, compaction ...: the consumer must know
                self._put(exc)
                return
            except (requests.RequestException, OSError) as exc:
                failures = self._interrupted(endpoint, exc, failures)
            except BaseException as exc:  # never die silently
                self._put(EtcdWatchError(f"watch failed: {exc!r}"))
                return

    def _interrupted(self, endpoint: str, exc: BaseException, failures: int) -> int:
        if self._closed.is_set():
            return failures
        # A stream that was established and then broke starts the backoff afresh.
        failures = 1 if self._established else failures + 1
        # An established stream going quiet is the heartbeat doing its job.
        log.log(logging.INFO if self._established else logging.WARNING,
                "watch on %s interrupted (%s); resuming after revision %s",
                endpoint, type(exc).__name__, self._resume)
        self._transport.fail_over(endpoint, failures)
        return failures

    def _stream_once(self, endpoint: str) -> None:
        create: dict[str, Any] = {"key": b64(self._key)}
        if self._range_end is not None:
            create["range_end"] = b64(self._range_end)
        if self._resume is not None:
            create["start_revision"] = self._resume + 1
        if self._prev_kv:
            create["prev_kv"] = True
        # Servers configured with a progress interval then advance our resume point.
        create["progress_notify"] = True
        # Wait for the headers in short slices, so close() is never stuck behind
        # a frozen server; then the stream's own read timeout is the heartbeat.
        resp = self._transport.stream("/v3/watch", {"create_request": create},
                                      read_timeout=min(self._read_timeout, _HEADER_WAIT),
                                      endpoint=endpoint)
        self._resp = resp
        try:
            if self._closed.is_set():
                return
            sock = _socket_of(resp)
            if sock is not None:
                sock.settimeout(self._read_timeout)
            decoder = JSONStreamDecoder()
            for chunk in resp.iter_content(chunk_size=None):
                for message in decoder.feed(chunk):
                    self._handle(message)
                if self._closed.is_set():
                    return
            for message in decoder.close():
                self._handle(message)
            raise EtcdConnectionError("watch stream ended")
        finally:
            self._resp = None
            resp.close()

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise EtcdProtocolError("watch message is not an object")
        if "error" in message:
            err = message["error"]
            err = err if isinstance(err, dict) else {"message": str(err)}
            code = err.get("grpc_code", err.get("code"))
            text = str(err.get("message", "watch stream error"))
            if code in (14, 2, 4, 1, None):  # unavailable, EOF, deadline: reconnect
                raise EtcdUnavailable(text, code=code)
            status = err.get("http_code")
            raise error_from_body(status if isinstance(status, int) else 500,
                                  {"code": code, "message": text})
        result = message.get("result")
        if not isinstance(result, dict):
            raise EtcdProtocolError("watch message without result")
        if result.get("canceled"):
            raise self._cancel_error(result)
        revision = header_revision(result)
        if result.get("created"):
            self._established = True
            if self._resume is None:
                self._resume = revision  # "from now": events after this revision
            self._created.set()
            return
        events = result.get("events")
        if not events:
            # A progress notification: everything up to its revision was sent.
            if revision and (self._resume is None or revision > self._resume):
                self._resume = revision
            return
        self._resume = max(as_int((raw.get("kv") or {}).get("mod_revision")) for raw in events)
        accept = self._accept
        batch = [self._event(raw) for raw in events
                 if accept is None or accept(unb64((raw.get("kv") or {}).get("key", "")))]
        if batch:
            self._put(batch)

    def _cancel_error(self, result: Mapping[str, Any]) -> EtcdError:
        compact = as_int(result.get("compact_revision"))
        if compact:
            return EtcdCompacted(f"revision {self._resume} has been compacted (oldest {compact})",
                                 compact_revision=compact)
        reason = str(result.get("cancel_reason", ""))
        if "permission denied" in reason:
            return EtcdPermissionError(reason, code=7)
        if "auth" in reason and "token" in reason:
            return EtcdAuthError(reason, code=16)
        return EtcdServerError(reason or "watch cancelled by the server")

    def _event(self, raw: Mapping[str, Any]) -> Event[K]:
        kv = parse_kv(raw.get("kv") or {})
        prev = raw.get("prev_kv")
        value_fn = self._value_fn
        deleted = raw.get("type") == "DELETE"
        return Event(type="DELETE" if deleted else "PUT", key=self._key_fn(kv.key),
                     value=None if deleted else value_fn(kv.value),
                     prev_value=value_fn(parse_kv(prev).value) if prev else None,
                     revision=kv.mod_revision, kv=kv)

    def _put(self, item: _Item) -> None:
        # Bounded queue: a slow consumer slows the reader, not memory.
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
