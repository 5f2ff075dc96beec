"""The one choke point between etcdmap and the network: etcd's JSON gateway over ``requests``.

Every request goes through :meth:`Transport.call` (or :meth:`Transport.stream`
for watches): it picks the endpoint, bounds the call by a hard deadline,
fails over, keeps the auth token fresh, and turns ``requests`` and gateway
errors into :mod:`etcdmap.errors`.  It is fork-safe: a forked child never
uses a connection of its parent's.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from urllib3.util import Timeout

from ..errors import (
    EtcdConnectionError,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTimeout,
    EtcdTLSError,
    EtcdUnavailable,
    error_from_body,
)
from .failures import brief_cause, surely_unsent, tls_hint, tls_setup_failure
from .guard import Deadline, guard
from .stream import Stream

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
# With nothing listening anywhere, give up after this long (etcdctl's dial
# timeout) unless retry_deadline was set explicitly.
DIAL_WINDOW = 2.0
# Replies that mean "this token is no longer good": re-authenticate and retry.
# The request was rejected before it was applied, so a retry is safe for writes.
_STALE_TOKEN = (
    "invalid auth token",
    "auth store is old",          # etcdserver: revision of auth store is old
    "revision in header is old",  # auth: ... (a JWT issued before a role change)
    "user name is empty",         # the request carried no token
)
_NOTHING_LISTENS = ("; is etcd running there? Point ETCDCTL_ENDPOINTS (or endpoints=) at "
                    "your cluster, or start a local one with `etcdmap serve`")


def normalize_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"http://a:2379,http://b:2379"`` or a list, as URLs without a trailing slash."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"endpoints are str URLs, not {type(item).__name__}")
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


# -- hard deadlines: connections that hand their socket to the call's Deadline -------------

_local = threading.local()


def _watch_socket(conn: Any) -> None:
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None and conn.sock is not None:
        deadline.watch(conn.sock)


class _Guarded:
    """A urllib3 connection whose socket the current call's deadline can shut down."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_socket(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is not None:  # a pooled connection, already open
            _watch_socket(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Guarded, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Guarded, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that honour a call's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy/.netrc lookups on every call
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    return session


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _content_type(resp: requests.Response) -> str:
    return (resp.headers.get("Content-Type") or "no content type").split(";")[0].strip()


def _not_a_gateway(resp: requests.Response, endpoint: str) -> EtcdProtocolError:
    return EtcdProtocolError(f"{endpoint} does not answer like an etcd v3 gateway "
                             f"(HTTP {resp.status_code}, {_content_type(resp)})")


def _decode(resp: requests.Response, endpoint: str) -> Any:
    try:
        return json.loads(resp.content)
    except (ValueError, RecursionError, requests.RequestException) as exc:
        if "json" not in _content_type(resp):
            raise _not_a_gateway(resp, endpoint) from None
        raise EtcdProtocolError(f"invalid JSON from {endpoint} (HTTP {resp.status_code}): "
                                f"{type(exc).__name__}") from None


class Transport:
    """HTTP to a list of gateway endpoints, with failover, auth and error mapping.

    Retries follow etcd's Go client: a read (``idempotent``) is retried on the
    next endpoint after a connection failure, a timeout or an "unavailable"
    answer, until ``retry_deadline``; a write only when it surely was not
    applied (the connection was refused, TLS was refused, or the member
    answered "no leader"); otherwise it raises :class:`EtcdIndeterminateWrite`.
    Each attempt ends within its timeout, whatever the server sends (a hard
    deadline shuts the socket down).  When no endpoint accepts a connection at
    all, the call gives up after ``dial_window`` seconds.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float,
        retry_deadline: float,
        dial_window: float | None = None,
        session: requests.Session | None = None,
        verify: bool | str = True,
        cert: TLSCert = None,
        credentials: tuple[str, str] | None = None,
        allow_redirects: bool = False,
    ):
        self.endpoints = normalize_endpoints(endpoints)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.dial_window = min(retry_deadline, DIAL_WINDOW) if dial_window is None else dial_window
        self.allow_redirects = allow_redirects
        self._own_session = session is None
        self.session = session if session is not None else _new_session()
        self.verify = verify
        self.cert = cert
        self._credentials = credentials
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._lock = threading.Lock()  # guards endpoints, _current and _failed
        self._current = 0
        self._failed: dict[str, float] = {}  # endpoint -> when its cooldown ends
        self._pid = os.getpid()
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
        if self._own_session and self._pid == os.getpid():
            self.session.close()

    # -- fork safety ---------------------------------------------------------------

    def _check_fork(self) -> None:
        # Cheap (one getpid) and without user action, like redis-py's _checkpid.
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: new locks, and connections of its own."""
        self._auth_lock = threading.Lock()  # a lock held at fork time stays held
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Never close the parent's sockets (that would end its TLS sessions);
        # just stop using them.
        if self._own_session:
            self.session = _new_session()
        else:
            for adapter in self.session.adapters.values():
                if isinstance(adapter, requests.adapters.HTTPAdapter):
                    pools: Any = adapter  # the pool settings are private attributes
                    adapter.init_poolmanager(pools._pool_connections, pools._pool_maxsize,
                                             block=pools._pool_block)

    reset = _after_fork

    # -- the choke point ---------------------------------------------------

    def call(self, path: str, body: Mapping[str, Any], *, idempotent: bool,
             timeout: float | None = None, deadline: float | None = None,
             endpoint: str | None = None) -> JSON:
        """POST ``body`` to ``path``; fail over while it is safe; return the JSON reply.

        Each attempt waits at most ``timeout`` (the transport's by default);
        retries stop after ``deadline`` seconds (``retry_deadline``).  With
        ``endpoint`` the request goes to that member only.
        """
        self._check_fork()
        pinned = endpoint
        authenticating = path == _AUTH_PATH
        if self._credentials is not None and self._token is None and not authenticating:
            self.ensure_token()
        data = _encode(body).encode()
        per_try = timeout or self.timeout
        started = time.monotonic()
        ends = started + (self.retry_deadline if deadline is None else deadline)
        attempt = 0
        tls_failures = 0
        unreachable: set[str] = set()  # endpoints that refused a connection in a row
        reauthed = False
        full_try = True  # the first try (and the one after re-authenticating) gets per_try
        while True:
            attempt += 1
            target = pinned or self.endpoint
            token = None if authenticating else self._token
            budget = per_try if full_try else max(0.01, min(per_try, ends - time.monotonic()))
            full_try = False
            try:
                resp = self._send(target + path, data, token, budget)
            except requests.RequestException as exc:
                error = self._transport_error(exc, target, idempotent, budget)
                self._failed_on(target, rotate=pinned is None)
                if isinstance(error, EtcdTLSError):
                    tls_failures += 1
                    # A refused certificate is a configuration error: try each member once.
                    if pinned is not None or tls_failures >= len(self.endpoints):
                        raise error from None
                if surely_unsent(exc):
                    unreachable.add(target)
                    if unreachable >= set(self.endpoints) \
                            and time.monotonic() >= started + self.dial_window:
                        raise self._nothing_listens(error) from brief_cause(exc)
                else:
                    unreachable.clear()
                if isinstance(error, EtcdIndeterminateWrite) or time.monotonic() >= ends:
                    raise error from brief_cause(exc)
                self._backoff(attempt, ends)
                continue
            except OSError as exc:  # requests' check of the TLS file paths
                raise EtcdTLSError(f"TLS setup for {target} failed: {exc}") from None
            if resp.status_code == 200:
                reply = _decode(resp, target)
                if not isinstance(reply, dict):
                    raise _not_a_gateway(resp, target)
                if self._failed:
                    self._failed.pop(target, None)
                return reply
            error = self._http_error(resp, target)
            if not reauthed and not authenticating and self._stale_token(error):
                # Rejected before it was applied: a fresh token and one more try.
                reauthed = full_try = True
                self._refresh_token(token)
                continue
            if isinstance(error, EtcdUnavailable) or (
                    isinstance(error, EtcdServerError) and error.code in (2, 4)):
                self._failed_on(target, rotate=pinned is None)
                if not idempotent and "no leader" not in error.message:
                    # "request timed out" and friends: the write may have applied.
                    raise EtcdIndeterminateWrite(
                        f"write outcome unknown: {error.message} ({target})") from error
                if time.monotonic() < ends:
                    self._backoff(attempt, ends)
                    continue
            raise error

    def _nothing_listens(self, error: EtcdError) -> EtcdError:
        if len(self.endpoints) == 1:
            where = f"etcd at {self.endpoints[0]}"
        else:
            where = "any of " + ", ".join(self.endpoints)
        return type(error)(f"cannot connect to {where}{_NOTHING_LISTENS}")

    def _stale_token(self, error: EtcdError) -> bool:
        if self._credentials is None or not isinstance(error, EtcdServerError):
            return False
        return error.status == 401 or error.code == 16 \
            or any(text in error.message for text in _STALE_TOKEN)

    def _send(self, url: str, data: bytes, token: str | None, timeout: float,
              *, stream: bool = False, deadline: Deadline | None = None) -> requests.Response:
        # Straight to the adapter: Session.request's merging and hooks cost
        # more than the round trip itself on loopback.
        headers = dict(_BASE_HEADERS)  # urllib3 takes any mapping; no case folding needed
        headers["Content-Length"] = str(len(data))
        if token:
            headers["Authorization"] = token
        # Each socket operation waits at most ``timeout``, and the deadline
        # ends the whole exchange (a stream: until its headers) at ``timeout``.
        limit = Timeout(connect=timeout, read=timeout)
        if deadline is None:
            deadline = guard(timeout)
        _local.deadline = deadline
        try:
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
        except requests.RequestException as exc:
            if deadline.fired:  # the guard cut a reply that trickled past the deadline
                raise requests.ReadTimeout(f"no complete answer within {timeout:.3g} s") \
                    from exc
            raise
        finally:
            _local.deadline = None
            deadline.release()
        raise EtcdProtocolError(f"too many redirects from {url}")

    def _transport_error(self, exc: requests.RequestException, endpoint: str,
                         idempotent: bool, timeout: float | None = None) -> EtcdError:
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

    def _http_error(self, resp: requests.Response, endpoint: str) -> EtcdError:
        try:
            body: object = json.loads(resp.content)
        except (ValueError, RecursionError):
            text = resp.text.strip()
            if not text or text.startswith("<") or "html" in _content_type(resp):
                return _not_a_gateway(resp, endpoint)
            first = text.splitlines()[0][:200]
            return EtcdServerError(f"{first} (HTTP {resp.status_code} from {endpoint})",
                                   status=resp.status_code)
        if not isinstance(body, dict):
            return _not_a_gateway(resp, endpoint)
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

    @property
    def has_credentials(self) -> bool:
        """Whether requests carry a user's token."""
        return self._credentials is not None

    def reauthenticate(self) -> None:
        """Replace the current token (after the server rejected it)."""
        self._refresh_token(self._token)

    def ensure_token(self) -> None:
        """Authenticate once before the first request, if credentials were given."""
        if self._credentials is not None and self._token is None:
            self._refresh_token(None)

    # -- streams, health and plain GETs -------------------------------------------

    def stream(self, path: str, body: Mapping[str, Any], *, endpoint: str | None = None,
               on_deadline: Callable[[Deadline], None] | None = None) -> Stream:
        """Open a streaming POST (a watch) on one member; the caller reads and closes it.

        Its set-up (connect, send, headers) ends within the timeout, or when
        another thread cuts the deadline handed to ``on_deadline``.  A stale
        token is renewed once, as for :meth:`call`.
        """
        self._check_fork()
        self.ensure_token()
        data = _encode(body).encode()
        endpoint = endpoint or self.endpoint
        reauthed = False
        while True:
            token = self._token
            deadline = guard(self.timeout)
            if on_deadline is not None:
                on_deadline(deadline)
            try:
                resp = self._send(endpoint + path, data, token, self.timeout, stream=True,
                                  deadline=deadline)
            except requests.RequestException as exc:
                raise self._transport_error(exc, endpoint, True) from brief_cause(exc)
            except OSError as exc:
                raise EtcdTLSError(f"TLS setup for {endpoint} failed: {exc}") from None
            if resp.status_code == 200:
                return Stream(resp, endpoint)
            try:
                error = self._http_error(resp, endpoint)
            finally:
                resp.close()
            if not reauthed and self._stale_token(error):
                reauthed = True
                self._refresh_token(token)
                continue
            raise error

    def get(self, path: str, endpoint: str | None = None) -> JSON:
        """GET a plain endpoint such as ``/version`` or ``/health`` from one member."""
        self._check_fork()
        endpoint = endpoint or self.endpoint
        try:
            resp = self.session.get(endpoint + path, timeout=self.timeout, verify=self.verify,
                                    cert=self.cert)
        except requests.RequestException as exc:
            raise self._transport_error(exc, endpoint, True) from brief_cause(exc)
        except OSError as exc:
            raise EtcdTLSError(f"TLS setup for {endpoint} failed: {exc}") from None
        reply = _decode(resp, endpoint)
        if not isinstance(reply, dict):
            raise _not_a_gateway(resp, endpoint)
        if resp.status_code != 200 and path != "/health":
            raise error_from_body(resp.status_code, reply)
        return reply
