"""Reading a failed gRPC call: did etcd answer, was the request sent, was TLS refused.

The gRPC twin of ``_transport.failures``: a status etcd sent is an answer
(typed by :func:`~etcdmap.errors.error_from_status`, exactly as the gateway's
error bodies are); a status the client library made up means the exchange
broke, and whether the request surely never left decides if a write may be
retried.
"""

from __future__ import annotations

from typing import Any

from ...errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdTimeout,
    EtcdTLSError,
    GrpcCode,
    error_from_status,
)
from ..failures import tls_hint
from ..policy import Failure

__all__ = ["failure", "stream_error"]

# Codes only a server sends: the request was read and refused.
_SERVER_CODES = frozenset({
    GrpcCode.INVALID_ARGUMENT, GrpcCode.NOT_FOUND, GrpcCode.ALREADY_EXISTS,
    GrpcCode.PERMISSION_DENIED, GrpcCode.FAILED_PRECONDITION, GrpcCode.ABORTED,
    GrpcCode.OUT_OF_RANGE, GrpcCode.UNIMPLEMENTED, GrpcCode.DATA_LOSS,
    GrpcCode.UNAUTHENTICATED, GrpcCode.RESOURCE_EXHAUSTED,
})
# etcd's own messages (rpctypes) and gRPC's server-side size check.
_SERVER_PREFIXES = ("etcdserver:", "mvcc:", "auth:", "grpc: received message larger")
# What gRPC says when no connection could be made, so nothing was sent.
_NOT_CONNECTED = ("failed to connect", "connections to all backends failing",
                  "Connection refused", "DNS resolution failed", "No address",
                  "Name or service not known", "handshake", "Handshake")
_TLS = ("Ssl handshake failed", "SSL_ERROR", "CERTIFICATE", "certificate",
        "Handshake failed", "handshake failed", "Handshake read failed", "TLS",
        "security handshaker", "Unwrap failed")
# A TLS client hello answered by a plain HTTP/2 server: it closes the socket.
_PLAIN = "Handshake read failed"


def _code(exc: Any) -> int:
    try:
        return int(exc.code().value[0])
    except (AttributeError, TypeError, IndexError, ValueError):
        return GrpcCode.UNKNOWN


def _details(exc: Any) -> str:
    try:
        return str(exc.details() or "")
    except AttributeError:
        return str(exc)


def tls_detail(details: str) -> str:
    """What went wrong in a TLS handshake, in the words the HTTP transport uses."""
    text = details.removesuffix(": OK")
    if _PLAIN in text:
        return f"{_PLAIN} (the server closed the connection)"
    if "Unwrap failed" in text:  # how etcd 3.4 refuses a client certificate
        return "BAD_CERTIFICATE (the server ended the handshake: Unwrap failed)"
    if "security handshaker" in text:
        return "the client's TLS files were refused (a key that does not match its certificate?)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.split("CERTIFICATE_VERIFY_FAILED", 1)[1].lstrip(": ")
        return f"certificate verify failed: {why}" if why else "certificate verify failed"
    if "SSL_ERROR_SSL: " in text:
        return text.split("SSL_ERROR_SSL: ", 1)[1].rsplit(":", 1)[-1]
    return text.rsplit("handshake failed", 1)[-1].strip(" :") or text


def answered(exc: Any) -> bool:
    """Whether the status of ``exc`` came from etcd (else the exchange broke)."""
    return _code(exc) in _SERVER_CODES or _details(exc).startswith(_SERVER_PREFIXES)


def failure(exc: Any, endpoint: str, idempotent: bool, waited: float) -> Failure:
    """What the policy needs to know about a failed call (a ``grpc.RpcError``)."""
    code, details = _code(exc), _details(exc)
    if answered(exc):
        return Failure(error_from_status(code, details), answered=True)
    brief = OSError(f"{GrpcCode(code).name}: {details}" if code in GrpcCode._value2member_map_
                    else details)
    brief.__suppress_context__ = True
    error: EtcdError
    if "Failed parsing HTTP/2" in details or "Expected SETTINGS frame" in details:
        # Something answers, and not in HTTP/2: not etcd's gRPC port.
        return Failure(EtcdProtocolError(f"{endpoint} does not answer like an etcd gRPC "
                                         "server (not HTTP/2: is it the right port?)"),
                       answered=True)
    if code == GrpcCode.UNAVAILABLE and any(m in details for m in _NOT_CONNECTED):
        if any(m in details for m in _TLS):
            detail = tls_detail(details)
            hint = ("; is the endpoint plain http:// rather than https://?" if _PLAIN in details
                    else tls_hint(detail))
            error = EtcdTLSError(f"TLS with {endpoint} failed: {detail}{hint}")
        elif "timed out" in details:
            error = EtcdTimeout(f"connecting to {endpoint} timed out")
        else:
            error = EtcdConnectionError(f"cannot connect to {endpoint}")
        return Failure(error, unsent=True, cause=brief)
    if not idempotent:
        error = EtcdIndeterminateWrite(
            f"write outcome unknown: {GrpcCode(code).name} from {endpoint}"
            if code in GrpcCode._value2member_map_ else
            f"write outcome unknown: the call to {endpoint} broke")
    elif code == GrpcCode.DEADLINE_EXCEEDED:
        error = EtcdTimeout(f"no answer from {endpoint} within {waited:.3g} s")
    else:
        error = EtcdConnectionError(f"the call to {endpoint} broke ({details or code})")
    return Failure(error, cause=brief)


def stream_error(exc: Any, endpoint: str) -> EtcdError:
    """The error that ends a watch stream (the watch resumes elsewhere unless it is final)."""
    return failure(exc, endpoint, True, 0.0).error
