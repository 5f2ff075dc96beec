"""One gRPC channel per endpoint, with TLS, and never one a forked child inherited.

A channel reused in a forked child fails ("Closed on fork") even with gRPC's
fork support on; a channel the child builds itself, on a subchannel pool of
its own (``grpc.use_local_subchannel_pool``), works.  So :class:`Channels`
notes the pid, and a child builds new channels and leaves the parent's alone
(closing them would tear down the parent's connections).
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import grpc

from ...errors import EtcdTLSError

__all__ = ["Channels", "TLSFiles"]

# The parent's channels, kept from the collector in a forked child: their
# finalizers would shut down connections the parent still uses.
_INHERITED: list[Any] = []
# The threads running at fork time.  In the child, Python forgets every thread
# but the forking one; what gRPC's threads held (calls, channel state) would then
# be collected there, and gRPC's core, which the child must not touch, aborts.
_THREADS_AT_FORK: list[threading.Thread] = []


# The processes that opened gRPC channels.  A child inherits the set: if it holds
# another process than this one, gRPC ran in an ancestor and must not be called here
# (see _transport.forked).  A set, not an at-fork flag, because other at-fork
# handlers (a cache's) may start threads that call before a flag would be set.
_RAN_IN: set[int] = set()


def grpc_ran_before_fork() -> bool:
    """Whether gRPC had opened channels in a process this one was forked from."""
    return bool(_RAN_IN - {os.getpid()})  # one C-level step: safe beside an add


def _before_fork() -> None:
    _THREADS_AT_FORK[:] = threading.enumerate()


def _after_fork_in_parent() -> None:
    _THREADS_AT_FORK.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)
OPTIONS: list[tuple[str, Any]] = [
    # A range of any size comes back (etcd itself sends up to 2 GiB); the client
    # pages big scans, so memory stays bounded where it matters.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
    # A member that comes back is reachable within a second, not gRPC's default 2 min.
    # (grpc.min_reconnect_backoff_ms, which is also each connect attempt's timeout,
    # is set per transport: its own timeout.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Find a dead peer under a quiet watch; etcd refuses pings more often than 5 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Our policy retries; gRPC's own retries would hide what it needs to know.
    ("grpc.enable_retries", 0),
]


class TLSFiles:
    """The PEM files of a TLS setup, read (and the key checked against its certificate)."""

    def __init__(self, ca_cert: str | None, cert: str | None, key: str | None):
        self.root = _read(ca_cert, "ca_cert") if ca_cert else None
        self.chain: bytes | None = None
        self.key: bytes | None = None
        if cert:
            pem = _read(cert, "cert")
            key_pem = _read(key, "key") if key else pem  # one file may hold both
            self.chain = _blocks(pem, b"CERTIFICATE")
            self.key = _blocks(key_pem, b"PRIVATE KEY")
            if not self.chain or not self.key:
                what = "a certificate" if not self.chain else "a private key"
                raise EtcdTLSError(f"TLS setup failed: no {what} found in {key or cert}")
            # gRPC would only log a mismatch and fail every handshake: say it once, here.
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise EtcdTLSError(f"TLS setup failed: {exc.reason or exc} ({cert}, "
                                   f"{key or cert})") from None

    def credentials(self) -> Any:
        """gRPC's channel credentials for these files."""
        return grpc.ssl_channel_credentials(root_certificates=self.root,
                                            private_key=self.key,
                                            certificate_chain=self.chain)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise EtcdTLSError(f"TLS setup failed: cannot read {what} {path}: "
                           f"{exc.strerror or exc}") from None


def _blocks(pem: bytes, kind: bytes) -> bytes:
    """The PEM blocks whose label ends with ``kind`` (e.g. ``RSA PRIVATE KEY``)."""
    out, rest = [], pem
    while (start := rest.find(b"-----BEGIN ")) >= 0:
        label_end = rest.find(b"-----", start + 11)
        end_marker = rest.find(b"-----END ", label_end)
        stop = rest.find(b"-----", end_marker + 9) + 5
        if label_end < 0 or end_marker < 0 or stop < 5:
            break
        if rest[start + 11:label_end].endswith(kind):
            out.append(rest[start:stop])
        rest = rest[stop:]
    return b"\n".join(out) + b"\n" if out else b""


def target(endpoint: str) -> str:
    """``host:port`` of an endpoint URL."""
    return urlsplit(endpoint).netloc


class Channels:
    """The channels of one transport, one per endpoint, built on first use.

    The TLS files are read when the first ``https://`` channel is built, so a
    missing or mismatched file fails the first call, as over HTTP.  Each
    connection attempt may take ``connect_timeout`` seconds.
    """

    def __init__(self, tls: tuple[str | None, str | None, str | None], connect_timeout: float):
        self._tls_paths = tls
        self._tls: TLSFiles | None = None
        self._options = [*OPTIONS, ("grpc.min_reconnect_backoff_ms",
                                    max(int(connect_timeout * 1000), 100))]
        self._channels: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self, endpoint: str) -> Any:
        """The channel to ``endpoint`` (a new one in a forked child)."""
        if self._pid != os.getpid():
            self.after_fork()
        channel = self._channels.get(endpoint)
        if channel is None:
            with self._lock:
                channel = self._channels.get(endpoint)
                if channel is None:
                    channel = self._channels[endpoint] = self._open(endpoint)
        return channel

    def _open(self, endpoint: str) -> Any:
        _RAN_IN.add(os.getpid())
        if endpoint.startswith("https://"):
            if self._tls is None:
                self._tls = TLSFiles(*self._tls_paths)
            return grpc.secure_channel(target(endpoint), self._tls.credentials(),
                                       options=self._options)
        return grpc.insecure_channel(target(endpoint), options=self._options)

    def drop(self, endpoint: str) -> None:
        """Build a new channel to ``endpoint`` next time (its connection may be dead).

        The old one is not closed: streams still on it end by themselves.
        """
        with self._lock:
            self._channels.pop(endpoint, None)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's channels (never close them)."""
        self._lock = threading.Lock()
        _INHERITED.extend(self._channels.values())
        self._channels = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Close every channel this process made."""
        if self._pid != os.getpid():
            self.after_fork()
            return
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
