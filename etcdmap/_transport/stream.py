"""The body of a streaming HTTP reply, read straight from its socket.

``requests`` can only wait for a stream with a socket timeout, and a timeout
throws the connection away.  A watch must be able to sit on a silent,
healthy stream for hours, so after the headers :class:`Stream` reads the
socket itself (undoing the chunked transfer encoding), and :meth:`Stream.read`
reports silence as ``None`` with the connection intact.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from typing import Any

import requests

from ..errors import EtcdConnectionError, EtcdProtocolError

__all__ = ["Stream", "socket_of"]

_READ_SIZE = 65536
_MAX_CHUNK_LINE = 4096
# TCP keepalive on streams: a connection a NAT or firewall dropped while the
# watch was quiet is noticed by the kernel instead of waiting forever.
_KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


def socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streaming response (urllib3 1.26 and 2.x)."""
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        obj: Any = resp.raw
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, socket.socket):
            return obj
    return None


def _keepalive(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _buffered(fp: Any, sock: socket.socket) -> bytes:
    """What http.client already read past the headers (without blocking)."""
    sock.settimeout(0.0)
    try:
        return bytes(fp.read1(_READ_SIZE) or b"")
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return b""


class Stream:
    """A reply body that arrives over time; :meth:`read` it, then :meth:`close` it."""

    def __init__(self, resp: requests.Response, endpoint: str):
        self.endpoint = endpoint
        self._resp = resp
        self._pid = os.getpid()
        fp = getattr(getattr(resp.raw, "_fp", None), "fp", None)
        sock = socket_of(resp)
        # Without a socket (a test double) urllib3 reads the body for us.
        self._sock = sock if fp is not None else None
        self._chunked = bool(getattr(resp.raw, "chunked", False))
        self._buf = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk is still to come
        self._done = False
        if self._sock is not None:
            _keepalive(self._sock)
            self._buf += _buffered(fp, self._sock)

    def __repr__(self) -> str:
        return f"<Stream from {self.endpoint}>"

    def read(self, timeout: float | None) -> bytes | None:
        """Body bytes as they arrive; ``b""`` at the end; ``None`` after ``timeout`` s of silence.
        """
        if self._sock is None:
            try:
                return bytes(self._resp.raw.read(_READ_SIZE) or b"")
            except (requests.RequestException, OSError, ValueError) as exc:
                raise EtcdConnectionError(
                    f"the stream from {self.endpoint} broke: {type(exc).__name__}") from None
        while True:
            data = self._take()
            if data or self._done:
                return data
            try:
                self._sock.settimeout(timeout)
                raw = self._sock.recv(_READ_SIZE)
            except TimeoutError:
                return None
            except OSError as exc:
                raise EtcdConnectionError(
                    f"the stream from {self.endpoint} broke: {type(exc).__name__}") from None
            if not raw:
                self._done = True  # closed, by the server or by abort()
                return b""
            self._buf += raw

    def _take(self) -> bytes:
        """The body bytes the buffer holds, chunked framing removed."""
        buf = self._buf
        if not self._chunked:
            plain = bytes(buf)
            buf.clear()
            return plain
        out = bytearray()
        while buf:
            if self._crlf:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise EtcdProtocolError(f"malformed chunked body from {self.endpoint}")
                del buf[:2]
                self._crlf = False
            if not self._left:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise EtcdProtocolError(f"malformed chunked body from {self.endpoint}")
                    break
                size = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[:end + 2]
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise EtcdProtocolError(
                        f"malformed chunked body from {self.endpoint}") from None
                if not self._left:
                    self._done = True  # the last chunk (trailers are ignored)
                    buf.clear()
                    break
            n = min(self._left, len(buf))
            out += buf[:n]
            del buf[:n]
            self._left -= n
            self._crlf = not self._left
        return bytes(out)

    def abort(self) -> None:
        """Wake a thread blocked in :meth:`read` (from any thread); it then sees the end."""
        # A forked child shares the parent's socket: shutting it down would end
        # the parent's stream too.  Only the process that opened it may.
        sock = self._sock
        if sock is not None and os.getpid() == self._pid:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        elif sock is None:
            self._resp.close()

    def close(self) -> None:
        """Release the connection (it is never reused)."""
        with contextlib.suppress(Exception):  # closing must not fail
            self._resp.close()
