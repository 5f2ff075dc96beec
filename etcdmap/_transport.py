"""The one choke point between etcdmap and the network.

Every request goes through :meth:`Transport.call` (or :meth:`Transport.stream`
for watches): it picks the endpoint, applies the timeout, fails over, keeps the
auth token fresh, and turns ``requests`` and gateway errors into
:mod:`etcdmap.errors` with ``from exc``.
"""

from __future__ import annotations

import functools
import json
import random
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import Timeout

from .errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTimeout,
    EtcdUnavailable,
    error_from_body,
)

JSON = dict[str, Any]
TLSCert = str | tuple[str, str] | None

# A member without a leader then answers 503 at once instead of hanging ~7 s.
_BASE_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Grpc-Metadata-hasleader": "true",
}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_AUTH_PATH = "/v3/auth/authenticate"
# A member that failed is passed over for this long while another one is healthy.
_COOLDOWN = 5.0
# Replies that mean "this token is no longer good": re-authenticate and retry.
# The request was rejected before it was applied, so a retry is safe for writes.
_STALE_TOKEN = (
    "invalid auth token",
    "auth store is old",          # etcdserver: revision of auth store is old
    "revision in header is old",  # auth: ... (a JWT issued before a role change)
    "user name is empty",         # the request carried no token
)
# TLS alerts and checks that refuse a certificate: the server never saw the request.
_TLS_REFUSALS = ("CERTIFICATE", "ALERT", "UNKNOWN_CA")
# Where the ssl module fails while a connection is set up, before anything is sent.
_TLS_SETUP_FRAMES = frozenset({"ssl_wrap_socket", "wrap_socket", "do_handshake",
                               "load_cert_chain", "load_verify_locations"})


def normalize_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"http://a:2379,http://b:2379"`` or a list, as URLs without a trailing slash."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if "://" not in item:
            item = "http://" + item
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"invalid etcd endpoint {parts.scheme}://{parts.hostname}")
        if parts.username or parts.password:
            # Never keep secrets in URLs: they would show in reprs and errors.
            raise ValueError("pass credentials as username=/password=, not in the endpoint URL")
        out.append(f"{parts.scheme}://{parts.netloc}")
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


def _surely_unsent(exc: requests.RequestException) -> bool:
    """True when the request never reached a server (so any retry is safe)."""
    if isinstance(exc, requests.ConnectTimeout) or _tls_setup_failure(exc) is not None:
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _causes(exc: BaseException) -> list[BaseException]:
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


def _tls_setup_failure(exc: BaseException) -> str | None:
    """What went wrong setting up TLS, or None if ``exc`` is not such a failure.

    A TLS error while reading a reply (say the server died mid-answer) is not
    one: the request may have been processed.
    """
    if not isinstance(exc, requests.exceptions.SSLError):
        return None
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            reason = str(cause.reason or cause)
            where = {frame.f_code.co_name for frame, _ in traceback.walk_tb(cause.__traceback__)}
            if where & _TLS_SETUP_FRAMES or any(marker in reason for marker in _TLS_REFUSALS):
                return reason
            return None
    return None


def _tls_hint(detail: str) -> str:
    if "BAD_CERTIFICATE" in detail or "CERTIFICATE_REQUIRED" in detail \
            or "UNKNOWN_CA" in detail:
        return ("; the server did not accept the client certificate "
                "(give cert=/key= or ssl_cert= signed by a CA it trusts)")
    if "verify failed" in detail:
        return "; give ca_cert= with the CA that signed the server's certificate"
    if "WRONG_VERSION_NUMBER" in detail or "EOF" in detail:
        return "; is the endpoint plain http:// rather than https://?"
    return ""


_encode = json.JSONEncoder(separators=(",", ":")).encode


@functools.lru_cache(maxsize=32)
def _unary_timeout(seconds: float) -> Timeout:
    return Timeout(connect=seconds, read=seconds, total=seconds)


def _decode(resp: requests.Response) -> Any:
    try:
        return json.loads(resp.content)
    except (ValueError, requests.RequestException) as exc:
        raise EtcdProtocolError(f"invalid JSON from {resp.url} (HTTP {resp.status_code})") from exc


class Transport:
    """HTTP to a list of gateway endpoints, with failover, auth and error mapping.

    Retries follow etcd's Go client: a read (``idempotent``) is retried on the
    next endpoint after a connection failure, a timeout or an "unavailable"
    answer, until ``retry_deadline``; a write only when it surely was not
    applied (the connection was refused, TLS was refused, or the member
    answered "no leader"); otherwise it raises :class:`EtcdIndeterminateWrite`.
    One call returns within ``max(timeout, retry_deadline)`` (plus one
    re-authentication, when the token went stale).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float,
        retry_deadline: float,
        session: requests.Session | None = None,
        verify: bool | str = True,
        cert: TLSCert = None,
        credentials: tuple[str, str] | None = None,
        allow_redirects: bool = False,
    ):
        self.endpoints = normalize_endpoints(endpoints)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.allow_redirects = allow_redirects
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        if self._own_session:
            self.session.trust_env = False  # no proxy/.netrc lookups on every call
        self.verify = verify
        self.cert = cert
        self._credentials = credentials
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._lock = threading.Lock()  # guards endpoints, _current and _failed
        self._current = 0
        self._failed: dict[str, float] = {}  # endpoint -> when its cooldown ends
        self.on_endpoint_failure: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<Transport {self.endpoints!r}>"

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        endpoints = self.endpoints
        return endpoints[self._current % len(endpoints)]

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoint list, keeping the current endpoint first if still listed."""
        new = normalize_endpoints(endpoints)
        with self._lock:
            current = self.endpoint
            if current in new:
                new.remove(current)
                new.insert(0, current)
            self._current = 0
            self.endpoints = new

    def close(self) -> None:
        """Close the session if this transport created it."""
        if self._own_session:
            self.session.close()

    def reset(self) -> None:
        """Forget pooled connections without closing them (in a forked child, say).

        Closing them would also end the parent's TLS sessions on the shared sockets.
        """
        self._auth_lock = threading.Lock()  # a lock held at fork time stays held
        self._lock = threading.Lock()
        for adapter in self.session.adapters.values():
            if isinstance(adapter, requests.adapters.HTTPAdapter):
                pools: Any = adapter  # the pool settings are private attributes
                adapter.init_poolmanager(pools._pool_connections, pools._pool_maxsize,
                                         block=pools._pool_block)

    # -- the choke point ---------------------------------------------------

    def call(self, path: str, body: Mapping[str, Any], *, idempotent: bool,
             timeout: float | None = None, endpoint: str | None = None) -> JSON:
        """POST ``body`` to ``path``; fail over while it is safe; return the JSON reply.

        With ``endpoint`` the request goes to that member only.
        """
        pinned = endpoint
        authenticating = path == _AUTH_PATH
        if self._credentials is not None and self._token is None and not authenticating:
            self.ensure_token()
        data = _encode(body).encode()
        per_try = timeout or self.timeout
        deadline = time.monotonic() + self.retry_deadline
        attempt = 0
        tls_failures = 0
        reauthed = False
        full_try = True  # the first try (and the one after re-authenticating) gets per_try
        while True:
            attempt += 1
            target = pinned or self.endpoint
            token = None if authenticating else self._token
            budget = per_try if full_try else max(0.01, min(per_try, deadline - time.monotonic()))
            full_try = False
            try:
                resp = self._send(target + path, data, token, budget)
            except requests.RequestException as exc:
                error = self._transport_error(exc, target, idempotent, budget)
                self._failed_on(target, rotate=pinned is None)
                if _tls_setup_failure(exc) is not None:
                    tls_failures += 1
                    # A refused certificate is a configuration error: try each member once.
                    if pinned is not None or tls_failures >= len(self.endpoints):
                        raise error from exc
                if isinstance(error, EtcdIndeterminateWrite) or time.monotonic() >= deadline:
                    raise error from exc
                self._backoff(attempt, deadline)
                continue
            except OSError as exc:  # requests' check of the TLS file paths
                raise EtcdConnectionError(f"TLS setup for {target} failed: {exc}") from exc
            if resp.status_code == 200:
                reply = _decode(resp)
                if not isinstance(reply, dict):
                    raise EtcdProtocolError(f"expected a JSON object from {path}")
                if self._failed:
                    self._failed.pop(target, None)
                return reply
            error = self._http_error(resp)
            if not reauthed and not authenticating and self._stale_token(error):
                # Rejected before it was applied: a fresh token and one more try.
                reauthed = full_try = True
                self._refresh_token(token)
                continue
            if isinstance(error, EtcdUnavailable) or error.code in (2, 4):
                self._failed_on(target, rotate=pinned is None)
                if not idempotent and "no leader" not in error.message:
                    # "request timed out" and friends: the write may have applied.
                    raise EtcdIndeterminateWrite(
                        f"write outcome unknown: {error.message} ({target})") from error
                if time.monotonic() < deadline:
                    self._backoff(attempt, deadline)
                    continue
            raise error

    def _stale_token(self, error: EtcdServerError) -> bool:
        if self._credentials is None:
            return False
        return error.status == 401 or error.code == 16 \
            or any(text in error.message for text in _STALE_TOKEN)

    def _send(self, url: str, data: bytes, token: str | None, timeout: float,
              *, stream: bool = False, read_timeout: float | None = None) -> requests.Response:
        # Straight to the adapter: Session.request's merging and hooks cost
        # more than the round trip itself on loopback.
        headers = dict(_BASE_HEADERS)  # urllib3 takes any mapping; no case folding needed
        headers["Content-Length"] = str(len(data))
        if token:
            headers["Authorization"] = token
        # A unary call gets ``timeout`` in all (connect + answer); a stream
        # waits up to ``read_timeout`` between two reads.
        limit = Timeout(connect=timeout, read=read_timeout) if stream \
            else _unary_timeout(timeout)
        for _ in range(_MAX_REDIRECTS + 1):
            prep = requests.PreparedRequest()
            prep.method = "POST"
            prep.url = url
            prep.headers = cast(Any, headers)
            prep.body = data
            prep.hooks = {"response": []}
            adapter = self.session.get_adapter(url)
            # requests accepts a urllib3 Timeout (its stubs only say float or tuple).
            resp = adapter.send(prep, stream=stream, verify=self.verify, cert=self.cert,
                                proxies=self.session.proxies, timeout=cast(Any, limit))
            if resp.status_code not in _REDIRECTS or not self.allow_redirects:
                if not stream:
                    # Read the body here: a connection that breaks mid-answer is a
                    # transport error (maybe applied), not a malformed reply.
                    _ = resp.content
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                break
            url = urljoin(url, location)
        raise EtcdProtocolError(f"too many redirects from {url}")

    def _transport_error(self, exc: requests.RequestException, endpoint: str,
                         idempotent: bool, timeout: float | None = None) -> EtcdError:
        tls = _tls_setup_failure(exc)
        if tls is not None:
            return EtcdConnectionError(f"TLS with {endpoint} failed: {tls}{_tls_hint(tls)}")
        if _surely_unsent(exc):
            if isinstance(exc, requests.ConnectTimeout):
                return EtcdTimeout(f"connecting to {endpoint} timed out")
            return EtcdConnectionError(f"cannot connect to {endpoint}")
        if not idempotent:
            return EtcdIndeterminateWrite(
                f"write outcome unknown: {type(exc).__name__} from {endpoint}")
        if isinstance(exc, requests.Timeout):
            waited = self.timeout if timeout is None else timeout
            return EtcdTimeout(f"no answer from {endpoint} within {waited:.3g} s")
        return EtcdConnectionError(f"{type(exc).__name__} talking to {endpoint}")

    def _failed_on(self, failed: str, *, rotate: bool = True) -> None:
        """Put ``failed`` on cooldown and move to the next healthy endpoint."""
        with self._lock:
            now = time.monotonic()
            self._failed[failed] = now + _COOLDOWN
            endpoints = self.endpoints
            if not rotate or self.endpoint != failed:
                return  # pinned, or another thread already moved on
            n = len(endpoints)
            for step in range(1, n + 1):
                i = (self._current + step) % n
                if self._failed.get(endpoints[i], 0.0) <= now:
                    break
            else:  # every member failed lately: plain round robin
                i = (self._current + 1) % n
            self._current = i
        if self.on_endpoint_failure is not None:
            self.on_endpoint_failure()

    def _backoff(self, attempt: int, deadline: float | None = None) -> None:
        """After a full round of failures, sleep (jittered, growing, within ``deadline``)."""
        n = len(self.endpoints)
        if attempt < n:
            return
        delay = min(0.05 * 2 ** (attempt // n), 1.0) * random.uniform(0.5, 1.0)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(delay)

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""
        self._failed_on(failed)
        self._backoff(attempt)

    def _http_error(self, resp: requests.Response) -> EtcdServerError:
        try:
            body: object = resp.json()
        except ValueError:
            body = resp.text[:200]
        return error_from_body(resp.status_code, body)

    # -- auth ----------------------------------------------------------------

    def _fetch_token(self) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        reply = self.call(_AUTH_PATH, {"name": name, "password": password}, idempotent=True)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdProtocolError("authenticate returned no token")
        return token

    def authenticate(self) -> None:
        """Get a fresh token for the configured user."""
        if self._credentials is None:
            return
        with self._auth_lock:
            self._token = self._fetch_token()

    def _refresh_token(self, stale: str | None) -> None:
        # One thread re-authenticates; the others wait and use its token.  The
        # stale token stays in place meanwhile, so no request goes out without one.
        with self._auth_lock:
            if self._token == stale:
                self._token = self._fetch_token()

    def reauthenticate(self) -> None:
        """Replace the current token (after the server rejected it)."""
        self._refresh_token(self._token)

    def ensure_token(self) -> None:
        """Authenticate once before the first request, if credentials were given."""
        if self._credentials is not None and self._token is None:
            self._refresh_token(None)

    # -- streams and plain GETs -------------------------------------------------

    def stream(self, path: str, body: Mapping[str, Any], *, read_timeout: float | None,
               endpoint: str | None = None) -> requests.Response:
        """Open a streaming POST (watch); the caller reads and closes it."""
        self.ensure_token()
        data = _encode(body).encode()
        endpoint = endpoint or self.endpoint
        try:
            resp = self._send(endpoint + path, data, self._token, self.timeout, stream=True,
                              read_timeout=read_timeout)
        except requests.RequestException as exc:
            raise self._transport_error(exc, endpoint, True) from exc
        except OSError as exc:
            raise EtcdConnectionError(f"TLS setup for {endpoint} failed: {exc}") from exc
        if resp.status_code != 200:
            try:
                error = self._http_error(resp)
            finally:
                resp.close()
            raise error
        return resp

    def get(self, path: str, endpoint: str | None = None) -> JSON:
        """GET a plain endpoint such as ``/version`` or ``/health`` from one member."""
        endpoint = endpoint or self.endpoint
        try:
            resp = self.session.get(endpoint + path, timeout=self.timeout, verify=self.verify,
                                    cert=self.cert)
        except requests.RequestException as exc:
            raise self._transport_error(exc, endpoint, True) from exc
        except OSError as exc:
            raise EtcdConnectionError(f"TLS setup for {endpoint} failed: {exc}") from exc
        reply = _decode(resp)
        if not isinstance(reply, dict):
            raise EtcdProtocolError(f"expected a JSON object from {path}")
        if resp.status_code != 200 and path != "/health":
            raise error_from_body(resp.status_code, reply)
        return reply
