"""The exception tree of etcdmap.

Everything etcdmap raises derives from :class:`EtcdError`; builtin mix-ins let
code written for dicts and sockets catch what it already expects::

    EtcdError
    ├── EtcdKeyError (KeyError)                 the key is absent, nothing else
    ├── EtcdConnectionError (ConnectionError)   no answer from any endpoint
    │   ├── EtcdTimeout (TimeoutError)          ... within the timeout
    │   ├── EtcdTLSError                        TLS refused: a certificate problem
    │   └── EtcdIndeterminateWrite              a write may or may not have applied
    ├── EtcdProtocolError                       a body the gateway should not send
    ├── EtcdCodecError (ValueError)             a value the codec cannot read or write
    ├── EtcdClosed (ValueError)                 the object was closed
    ├── EtcdCompareFailed                       a compare-and-swap was refused
    ├── EtcdConflict                            a compare-and-swap kept losing races
    ├── EtcdPartialWrite                        a chunked write stopped half-way
    ├── EtcdLeaseExpired                        a kept-alive lease lapsed
    ├── EtcdWatchError                          a watch ended abnormally
    └── EtcdServerError                         an error body from the gateway
        ├── EtcdInvalidArgument (ValueError)    gRPC 3, e.g. too many txn ops
        │   └── EtcdRequestTooLarge             the request exceeds the server's limit
        ├── EtcdLeaseNotFound                   gRPC 5
        ├── EtcdPermissionError (PermissionError) gRPC 7
        ├── EtcdQuotaExceeded                   gRPC 8, database space exceeded
        ├── EtcdOutOfRange                      gRPC 11
        │   └── EtcdCompacted                   the revision has been compacted
        ├── EtcdUnavailable                     gRPC 14, e.g. no leader
        └── EtcdAuthError                       gRPC 16 and failed logins

This module is also the one place that reads etcd's error codes: gRPC status
codes (:class:`GrpcCode`), HTTP statuses and messages become classes here,
for unary replies (:func:`error_from_body`) and watch streams
(:func:`error_from_frame`) alike.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "EtcdAuthError",
    "EtcdClosed",
    "EtcdCodecError",
    "EtcdCompacted",
    "EtcdCompareFailed",
    "EtcdConflict",
    "EtcdConnectionError",
    "EtcdError",
    "EtcdIndeterminateWrite",
    "EtcdInvalidArgument",
    "EtcdKeyError",
    "EtcdLeaseExpired",
    "EtcdLeaseNotFound",
    "EtcdLockLost",
    "EtcdLockTimeout",
    "EtcdOutOfRange",
    "EtcdPartialWrite",
    "EtcdPermissionError",
    "EtcdProtocolError",
    "EtcdQuotaExceeded",
    "EtcdRequestTooLarge",
    "EtcdServerError",
    "EtcdTLSError",
    "EtcdTimeout",
    "EtcdUnavailable",
    "EtcdWatchError",
    "GrpcCode",
]


class GrpcCode(enum.IntEnum):
    """gRPC status codes, as etcd's gateway reports them in ``code``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class EtcdError(Exception):
    """Root of every error etcdmap raises."""


class EtcdKeyError(EtcdError, KeyError):
    """The key is absent."""

    def __str__(self) -> str:
        # KeyError.__str__ shows repr(args[0]); keep that for dict parity.
        return KeyError.__str__(self)


class EtcdConnectionError(EtcdError, ConnectionError):
    """No endpoint could be reached (or it hung up)."""


class EtcdTimeout(EtcdConnectionError, TimeoutError):
    """No answer within the timeout."""


class EtcdTLSError(EtcdConnectionError):
    """TLS could not be set up: a certificate was refused or is not trusted.

    A configuration problem, not an outage: it is not retried on the same member.
    """


class EtcdIndeterminateWrite(EtcdConnectionError):
    """A write failed in a way that leaves unknown whether it was applied.

    Retrying it blindly is not safe: re-read the key first.
    """


class EtcdProtocolError(EtcdError):
    """The server sent something the gateway protocol does not allow."""


class EtcdCodecError(EtcdError, ValueError):
    """A value the mapping's codec cannot decode (or encode); ``key`` names its etcd key."""

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class EtcdClosed(EtcdError, ValueError):
    """The watch, cache, lease or client was closed (like I/O on a closed file)."""


class EtcdCompareFailed(EtcdError):
    """A compare-and-swap found a different value than expected."""


class EtcdConflict(EtcdError):
    """A transaction or compare-and-swap lost to other writers (every time it was retried)."""


class EtcdLockTimeout(EtcdError, TimeoutError):
    """A lock or an election campaign was not won within its ``timeout``."""


class EtcdLockLost(EtcdError):
    """A lock or leadership was lost (its lease lapsed or its key was removed).

    A write guarded by it raised this instead of being applied.
    """


class EtcdPartialWrite(EtcdError):
    """A write too large for one transaction stopped after some chunks.

    ``written`` holds the keys that were committed and ``unwritten`` those that
    were not; ``uncertain`` those of a chunk whose outcome is unknown (it failed
    with :class:`EtcdIndeterminateWrite`); ``deleted`` the keys and ranges
    (``"a/b/*"``) that committed chunks removed to make room.
    """

    def __init__(self, message: str, *, written: Sequence[str], unwritten: Sequence[str],
                 uncertain: Sequence[str] = (), deleted: Sequence[str] = ()):
        super().__init__(message)
        self.written = list(written)
        self.unwritten = list(unwritten)
        self.uncertain = list(uncertain)
        self.deleted = list(deleted)


class EtcdLeaseExpired(EtcdError):
    """A lease that was meant to be kept alive has lapsed or been revoked."""


class EtcdWatchError(EtcdError):
    """A watch was cancelled by the server or ended abnormally."""


class EtcdServerError(EtcdError):
    """An error body from the gateway, with its gRPC ``code`` and HTTP ``status``."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class EtcdInvalidArgument(EtcdServerError, ValueError):
    """The server rejected the request's arguments (gRPC INVALID_ARGUMENT)."""


class EtcdRequestTooLarge(EtcdInvalidArgument):
    """The request exceeds ``--max-request-bytes`` or ``--max-txn-ops``."""


class EtcdLeaseNotFound(EtcdServerError):
    """The lease is unknown, expired or revoked."""


class EtcdPermissionError(EtcdServerError, PermissionError):
    """The user's roles do not allow this request."""


class EtcdQuotaExceeded(EtcdServerError):
    """The server's database is full (NOSPACE alarm); deletes still work."""


class EtcdOutOfRange(EtcdServerError):
    """A revision or TTL outside what the server accepts."""


class EtcdCompacted(EtcdOutOfRange):
    """The requested revision has been compacted away.

    ``compact_revision`` is the oldest revision still readable, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        compact_revision: int | None = None,
        code: int | None = GrpcCode.OUT_OF_RANGE,
        status: int | None = None,
    ):
        super().__init__(message, code=code, status=status)
        self.compact_revision = compact_revision


class EtcdUnavailable(EtcdServerError):
    """The member cannot serve now (no leader, leader changed, timed out)."""


class EtcdAuthError(EtcdServerError):
    """Authentication failed or the token is invalid or expired."""


_BY_CODE: dict[int, type[EtcdServerError]] = {
    GrpcCode.INVALID_ARGUMENT: EtcdInvalidArgument,
    GrpcCode.NOT_FOUND: EtcdLeaseNotFound,
    GrpcCode.PERMISSION_DENIED: EtcdPermissionError,
    GrpcCode.RESOURCE_EXHAUSTED: EtcdQuotaExceeded,
    GrpcCode.OUT_OF_RANGE: EtcdOutOfRange,
    GrpcCode.UNAVAILABLE: EtcdUnavailable,
    GrpcCode.UNAUTHENTICATED: EtcdAuthError,
}
# Codes that mean "this member cannot serve now; another one (or later) may".
_TRANSIENT = frozenset({GrpcCode.UNAVAILABLE, GrpcCode.UNKNOWN, GrpcCode.DEADLINE_EXCEEDED})
_BY_STATUS: dict[int, type[EtcdServerError]] = {
    401: EtcdAuthError,
    403: EtcdPermissionError,
    429: EtcdQuotaExceeded,
    503: EtcdUnavailable,
}


def error_from_body(status: int, body: object) -> EtcdServerError:
    """Build the typed error for a gateway error response (3.4, 3.5 and 3.6 shapes)."""
    code: int | None = None
    message = ""
    if isinstance(body, dict):
        raw_code = body.get("code", body.get("grpc_code"))
        if isinstance(raw_code, int):
            code = raw_code
        # 3.6 dropped "error"; "message" is in every version.
        text = body.get("message") or body.get("error")
        message = text if isinstance(text, str) else ""
    elif isinstance(body, str):
        message = body.strip()
    message = message or f"HTTP {status}"
    cls = _BY_CODE.get(code, EtcdServerError) if code is not None else EtcdServerError
    if cls is EtcdServerError:
        cls = _BY_STATUS.get(status, EtcdServerError)
    lowered = message.lower()
    if "authentication failed" in lowered or "user name is empty" in lowered:
        cls = EtcdAuthError
    elif cls is EtcdOutOfRange and "compacted" in lowered:
        return EtcdCompacted(message, code=code, status=status)
    elif ("too large" in lowered or "too many operations" in lowered
          or "larger than max" in lowered) and cls in (EtcdInvalidArgument, EtcdQuotaExceeded):
        cls = EtcdRequestTooLarge
    return cls(message, code=code, status=status)


# How the gateway turns a gRPC code into an HTTP status (grpc-gateway's table),
# so an error reads the same over either transport.
_STATUS_OF_CODE: dict[int, int] = {
    GrpcCode.CANCELLED: 408, GrpcCode.UNKNOWN: 500, GrpcCode.INVALID_ARGUMENT: 400,
    GrpcCode.DEADLINE_EXCEEDED: 504, GrpcCode.NOT_FOUND: 404, GrpcCode.ALREADY_EXISTS: 409,
    GrpcCode.PERMISSION_DENIED: 403, GrpcCode.RESOURCE_EXHAUSTED: 429,
    GrpcCode.FAILED_PRECONDITION: 400, GrpcCode.ABORTED: 409, GrpcCode.OUT_OF_RANGE: 400,
    GrpcCode.UNIMPLEMENTED: 501, GrpcCode.INTERNAL: 500, GrpcCode.UNAVAILABLE: 503,
    GrpcCode.DATA_LOSS: 500, GrpcCode.UNAUTHENTICATED: 401,
}


def error_from_status(code: int, message: str) -> EtcdServerError:
    """The typed error for a gRPC status that etcd answered with."""
    return error_from_body(_STATUS_OF_CODE.get(code, 500), {"code": code, "message": message})


def transient(error: EtcdError) -> bool:
    """Whether ``error`` says the member cannot serve now (a read may try another one)."""
    return isinstance(error, EtcdUnavailable) or (
        isinstance(error, EtcdServerError) and error.code in _TRANSIENT)


def error_from_frame(frame: Mapping[str, Any] | str) -> EtcdServerError:
    """The error of an ``{"error": ...}`` frame in a watch stream.

    A member that shuts down or loses its leader ends a stream with such a
    frame: those (and frames without a code) are :class:`EtcdUnavailable`,
    meaning "resume elsewhere".
    """
    err = frame if isinstance(frame, Mapping) else {"message": str(frame)}
    raw = err.get("grpc_code", err.get("code"))
    code = raw if isinstance(raw, int) else None
    text = str(err.get("message", "watch stream error"))
    if code is None or code == GrpcCode.CANCELLED or code in _TRANSIENT:
        return EtcdUnavailable(text, code=code)
    status = err.get("http_code")
    return error_from_body(status if isinstance(status, int) else 500,
                           {"code": code, "message": text})
