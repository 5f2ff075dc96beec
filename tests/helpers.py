"""Small helpers that several test modules share."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from etcdmap import EtcdClient, Event, Watcher
from etcdmap._settings import check_transport
from etcdmap._transport.forked import ForkSafe


def wire_of(client: EtcdClient) -> Any:
    """The transport ``client`` calls through now (inside gRPC's fork-safe wrapper)."""
    transport: Any = client._transport
    return transport.transport if isinstance(transport, ForkSafe) else transport


def default_transport() -> str:
    """The transport of a client that does not choose one: ``ETCDMAP_TRANSPORT``, else http."""
    return check_transport(None)


def wait_until(condition: Callable[[], bool], timeout: float, what: str = "true") -> float:
    """Poll ``condition`` every 50 ms; the seconds it took to hold (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"still not {what} after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def collect(watcher: Watcher[Any], count: int, timeout: float = 5,
            quiet: float = 0.3) -> list[Event[Any]]:
    """The next ``count`` events, then proof that nothing else (no duplicate) follows."""
    deadline = time.monotonic() + timeout
    events: list[Event[Any]] = []
    while len(events) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(events)} of {count} events within {timeout} s: {events}"
        event = watcher.next_event(left)
        if event is not None:
            events.append(event)
    extra = watcher.next_event(quiet)
    assert extra is None, f"an unexpected (repeated?) event: {extra}"
    return events


# The gateway's path of each gRPC method: logs read the same on both transports.
GATEWAY_PATHS = {
    "Range": "/v3/kv/range", "Put": "/v3/kv/put", "DeleteRange": "/v3/kv/deleterange",
    "Txn": "/v3/kv/txn", "Compact": "/v3/kv/compaction", "Watch": "/v3/watch",
    "LeaseGrant": "/v3/lease/grant", "LeaseRevoke": "/v3/lease/revoke",
    "LeaseKeepAlive": "/v3/lease/keepalive", "LeaseTimeToLive": "/v3/lease/timetolive",
    "MemberList": "/v3/cluster/member/list", "Status": "/v3/maintenance/status",
    "Authenticate": "/v3/auth/authenticate",
}


def call_log_of(client: EtcdClient, monkeypatch: pytest.MonkeyPatch, *,
                full: bool) -> list[str]:
    """Every request ``client`` sends from now on (retries included), on either transport:
    the URL path (``full``: the whole URL) of each HTTP request, or of each gRPC call as
    the gateway would name it."""
    log: list[str] = []
    transport: Any = wire_of(client)
    if not hasattr(transport, "http"):  # gRPC: wrap each method as it is looked up
        original_method = transport._method

        class Logged:
            """A gRPC method that logs each call (blocking or ``future``) first."""

            def __init__(self, endpoint: str, name: str) -> None:
                self.inner = original_method(endpoint, name)
                self.entry = endpoint + GATEWAY_PATHS[name] if full else GATEWAY_PATHS[name]

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                log.append(self.entry)
                return self.inner(*args, **kwargs)

            def future(self, *args: Any, **kwargs: Any) -> Any:
                log.append(self.entry)
                return self.inner.future(*args, **kwargs)

        def method(endpoint: str, name: str) -> Any:
            return Logged(endpoint, name)

        monkeypatch.setattr(transport, "_method", method)
        return log
    session = transport.http.session
    for adapter in {id(a): a for a in map(session.get_adapter, ("http://", "https://"))}.values():
        original = adapter.send

        def send(request: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            log.append(request.url if full else request.path_url)
            return _original(request, *args, **kwargs)

        monkeypatch.setattr(adapter, "send", send)
    return log


class Recorder:
    """What a client sent: each request's gateway path and token, each token it was handed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[str, str | None]] = []
        self.tokens: list[str] = []

    def note(self, path: str, token: str | None) -> None:
        with self.lock:
            self.sent.append((path, token))

    def issued(self, token: str) -> None:
        with self.lock:
            self.tokens.append(token)

    def logins(self) -> int:
        return sum(1 for path, _ in self.sent if path == AUTH_PATH)


AUTH_PATH = "/v3/auth/authenticate"


def record_calls(client: EtcdClient) -> Recorder:
    """A :class:`Recorder` of every request ``client`` sends from now on, on either transport.

    Over HTTP the token is the ``Authorization`` header; over gRPC the
    ``token`` metadata of the call (a watch or keepalive stream carries it
    once, when it opens).  The server answers every request; the recorder
    only notes what went out and which tokens came back.
    """
    rec = Recorder()
    transport: Any = wire_of(client)
    if not hasattr(transport, "http"):  # gRPC
        original_method = transport._method

        class Recorded:
            """A gRPC method that notes each call (blocking or ``future``) and its token."""

            def __init__(self, endpoint: str, name: str) -> None:
                self.inner = original_method(endpoint, name)
                self.path = GATEWAY_PATHS[name]

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                rec.note(self.path, dict(kwargs.get("metadata") or ()).get("token"))
                reply = self.inner(*args, **kwargs)
                if self.path == AUTH_PATH:
                    rec.issued(reply.token)
                return reply

            def future(self, *args: Any, **kwargs: Any) -> Any:
                rec.note(self.path, dict(kwargs.get("metadata") or ()).get("token"))
                return self.inner.future(*args, **kwargs)

        # The client is the recorder's alone: no undo needed.
        transport._method = Recorded
        return rec
    session = transport.http.session
    for adapter in {id(a): a for a in map(session.get_adapter, ("http://", "https://"))}.values():

        def send(request: Any, *args: Any, _original: Any = adapter.send, **kwargs: Any) -> Any:
            path = urlsplit(request.url).path
            rec.note(path, request.headers.get("Authorization"))
            resp = _original(request, *args, **kwargs)
            if path == AUTH_PATH and resp.status_code == 200 and not kwargs.get("stream"):
                rec.issued(json.loads(resp.content)["token"])
            return resp

        adapter.send = send
    return rec


def url_log_of(client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The full URL of every request ``client`` sends from now on (retries included)."""
    return call_log_of(client, monkeypatch, full=True)


def reads_in_txns(client: EtcdClient) -> bool:
    """Whether ``client`` reads many ranges in transactions (else one at a time).

    One at a time from members that can crash when a client abandons a
    read-only transaction (etcd 3.5.0-3.5.6).  Asking makes the client's one
    ``/version`` probe of the member now, so it is not among later requests.
    """
    return getattr(client, "txn_reads", True)  # clients before txn_reads always used txns


def assert_reads(log: list[str], client: EtcdClient, *, in_txns: bool, keys: int,
                 per_key: int) -> None:
    """``log`` read ``keys`` keys (``per_key`` ranges each) in as few requests as is safe:
    full transactions of ``max_txn_ops`` ranges, or at most ``per_key`` ranges a key."""
    if in_txns:
        assert log == ["/v3/kv/txn"] * -(-keys * per_key // client.max_txn_ops), log
    else:
        assert set(log) <= {"/v3/kv/range"} and keys <= len(log) <= keys * per_key, log


def blocked_in(thread: threading.Thread, function: Callable[..., Any]) -> bool:
    """Whether ``thread`` is inside ``function`` and waiting on a condition or event."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or (frame.f_code.co_name, frame.f_code.co_filename) != (
            "wait", threading.__file__):
        return False
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


def once_watching(client: EtcdClient, monkeypatch: pytest.MonkeyPatch,
                  action: Callable[[], object]) -> threading.Thread:
    """A started thread that runs ``action`` once ``client``'s next watch is established.

    The server confirmed the watch before ``action`` runs, so a change that
    ``action`` makes cannot be missed by the watch, nor race its set-up.
    """
    established = threading.Event()
    original = client.watch_iter

    def watch_iter(*args: Any, **kwargs: Any) -> Watcher[Any]:
        watcher = original(*args, **kwargs)
        if watcher.wait_created(30):
            established.set()
        return watcher

    monkeypatch.setattr(client, "watch_iter", watch_iter)

    def run() -> None:
        if established.wait(30):
            action()

    thread = threading.Thread(target=run, name="once-watching")
    thread.start()
    return thread


class CountingRelay:
    """A TCP relay to ``target`` (a URL) that counts the connections made through it."""

    def __init__(self, target: str) -> None:
        url = urlsplit(target)
        self._target = (url.hostname or "127.0.0.1", url.port or 2379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"{url.scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._socks: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self._socks += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


class Relay:
    """A TCP relay to an etcd endpoint that can freeze or cut the connections it holds."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 2379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._links: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return
            far = socket.create_connection(self._target)
            frozen = threading.Event()
            with self._lock:
                self._links.append((near, far, frozen))
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(src, dst, frozen), daemon=True,
                                 name="relay").start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not frozen.is_set():  # frozen: swallow everything, close nothing
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            src.close()  # each socket is read, and so closed, by exactly one pump

    def freeze(self) -> None:
        """Silence every current connection without closing it (a silent partition)."""
        with self._lock:
            for _, _, frozen in self._links:
                frozen.set()

    def cut(self) -> None:
        """Close every current connection; new ones are still accepted."""
        with self._lock:
            links, self._links = self._links, []
        for near, far, _ in links:
            for sock in (near, far):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and cut everything: the endpoint is gone."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()
