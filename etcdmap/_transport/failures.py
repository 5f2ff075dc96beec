"""Reading ``requests``/urllib3 failures: was the request sent, was TLS refused, what to show.

Pure functions over exception chains; they decide what is safe to retry and
keep urllib3's long chains out of the tracebacks users see.
"""

from __future__ import annotations

import json
import ssl
import traceback
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ..errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTimeout,
    EtcdTLSError,
    error_from_body,
)

__all__ = ["brief_cause", "decode_reply", "http_error", "not_a_gateway", "surely_unsent",
           "tls_hint", "tls_setup_failure", "transport_error"]

# TLS alerts and checks that refuse a certificate: the server never saw the request.
_TLS_REFUSALS = ("CERTIFICATE", "ALERT", "UNKNOWN_CA")
# Where the ssl module fails while a connection is set up, before anything is sent.
_TLS_SETUP_FRAMES = frozenset({"ssl_wrap_socket", "wrap_socket", "do_handshake",
                               "load_cert_chain", "load_verify_locations"})


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: urllib3 ``reason``, ``args[0]``, ``__cause__``."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not seen for seen in chain) and len(chain) < 10:
        chain.append(cur)
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException):
            cur = reason
        elif cur.args and isinstance(cur.args[0], BaseException):
            cur = cur.args[0]
        else:
            cur = cur.__cause__ or cur.__context__
    return chain


def surely_unsent(exc: BaseException) -> bool:
    """True when the request never reached a server (so any retry is safe)."""
    if isinstance(exc, requests.ConnectTimeout) or tls_setup_failure(exc) is not None:
        return True
    if not isinstance(exc, requests.RequestException):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def tls_setup_failure(exc: BaseException) -> str | None:
    """What went wrong setting up TLS, or None if ``exc`` is not such a failure.

    A TLS error while reading a reply (say the server died mid-answer) is not
    one: the request may have been processed.
    """
    if not isinstance(exc, requests.exceptions.SSLError):
        return None
    for cause in causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            reason = str(cause.reason or cause)
            where = {frame.f_code.co_name for frame, _ in traceback.walk_tb(cause.__traceback__)}
            if where & _TLS_SETUP_FRAMES or any(marker in reason for marker in _TLS_REFUSALS):
                return reason
            return None
    return None


def tls_hint(detail: str) -> str:
    """What to do about a TLS failure, as the end of a sentence."""
    if "BAD_CERTIFICATE" in detail or "CERTIFICATE_REQUIRED" in detail \
            or "UNKNOWN_CA" in detail:
        return ("; the server did not accept the client certificate "
                "(give cert=/key= or ssl_cert= signed by a CA it trusts)")
    if "verify failed" in detail:
        return "; give ca_cert= with the CA that signed the server's certificate"
    if "WRONG_VERSION_NUMBER" in detail or "EOF" in detail:
        return "; is the endpoint plain http:// rather than https://?"
    return ""


def brief_cause(exc: BaseException) -> BaseException:
    """The root OS error under a ``requests`` failure, without urllib3's chain.

    Used as ``raise EtcdError(...) from brief_cause(exc)``: the traceback then
    ends in one line such as ``ConnectionRefusedError: [Errno 111] Connection refused``.
    """
    root = causes(exc)[-1]
    if isinstance(root, OSError) and not isinstance(root, requests.RequestException):
        try:
            copy = type(root)(*root.args)
        except Exception:  # an exception type with an unusual constructor
            copy = OSError(str(root))
    else:
        copy = OSError(f"{type(root).__name__}: {root}")
    copy.__suppress_context__ = True
    return copy


# -- replies that are not what a gateway sends ---------------------------------------


def content_type(resp: requests.Response) -> str:
    return (resp.headers.get("Content-Type") or "no content type").split(";")[0].strip()


def not_a_gateway(resp: requests.Response, endpoint: str) -> EtcdProtocolError:
    return EtcdProtocolError(f"{endpoint} does not answer like an etcd v3 gateway "
                             f"(HTTP {resp.status_code}, {content_type(resp)})")


def decode_reply(resp: requests.Response, endpoint: str) -> Any:
    try:
        return json.loads(resp.content)
    except (ValueError, RecursionError, requests.RequestException) as exc:
        if "json" not in content_type(resp):
            raise not_a_gateway(resp, endpoint) from None
        raise EtcdProtocolError(f"invalid JSON from {endpoint} (HTTP {resp.status_code}): "
                                f"{type(exc).__name__}") from None


def http_error(resp: requests.Response, endpoint: str) -> EtcdError:
    """The error a non-200 reply stands for (also when it is not from an etcd gateway)."""
    try:
        body: object = json.loads(resp.content)
    except (ValueError, RecursionError):
        text = resp.text.strip()
        if not text or text.startswith("<") or "html" in content_type(resp):
            return not_a_gateway(resp, endpoint)
        first = text.splitlines()[0][:200]
        return EtcdServerError(f"{first} (HTTP {resp.status_code} from {endpoint})",
                               status=resp.status_code)
    if not isinstance(body, dict):
        return not_a_gateway(resp, endpoint)
    return error_from_body(resp.status_code, body)


def transport_error(exc: requests.RequestException, endpoint: str, idempotent: bool,
                    waited: float) -> EtcdError:
    """Our error for a failed exchange: a write that may have applied is indeterminate."""
    tls = tls_setup_failure(exc)
    if tls is not None:
        return EtcdTLSError(f"TLS with {endpoint} failed: {tls}{tls_hint(tls)}")
    if surely_unsent(exc):
        if isinstance(exc, requests.ConnectTimeout):
            return EtcdTimeout(f"connecting to {endpoint} timed out")
        return EtcdConnectionError(f"cannot connect to {endpoint}")
    if not idempotent:
        return EtcdIndeterminateWrite(
            f"write outcome unknown: {type(exc).__name__} from {endpoint}")
    if isinstance(exc, requests.Timeout):
        return EtcdTimeout(f"no answer from {endpoint} within {waited:.3g} s")
    return EtcdConnectionError(f"{type(exc).__name__} talking to {endpoint}")
