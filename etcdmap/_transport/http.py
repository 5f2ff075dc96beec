"""The one choke point between etcdmap and the gateway: HTTP requests over ``requests``.

Every request goes through :meth:`HTTPTransport.call` (or :meth:`HTTPTransport.stream`
for watches): it picks the endpoint, bounds the call by a hard deadline,
fails over, keeps the auth token fresh, and turns ``requests`` and gateway
errors into :mod:`etcdmap.errors`.  It is fork-safe: a forked child never
uses a connection of its parent's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urljoin

import requests
from urllib3.util import Timeout

from ..errors import (
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTLSError,
    error_from_body,
    transient,
)
from .connections import deadline_of_this_call, new_session
from .endpoints import Endpoints
from .failures import (
    brief_cause,
    decode_reply,
    http_error,
    not_a_gateway,
    surely_unsent,
    transport_error,
)
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


_encode = json.JSONEncoder(separators=(",", ":")).encode


class HTTPTransport:
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
        self._endpoints = Endpoints(endpoints)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.dial_window = min(retry_deadline, DIAL_WINDOW) if dial_window is None else dial_window
        self.allow_redirects = allow_redirects
        self._own_session = session is None
        self.session = session if session is not None else new_session()
        self.verify = verify
        self.cert = cert
        self._credentials = credentials
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._pid = os.getpid()
        self.on_endpoint_failure: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<HTTPTransport {self.endpoints!r}>"

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, in the order they were given."""
        return self._endpoints.urls

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self._endpoints.current

    def endpoints_in_order(self) -> list[str]:
        """Every endpoint, the current one first."""
        return self._endpoints.in_order()

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoint list, keeping the current endpoint first if still listed."""
        self._endpoints.replace(endpoints)

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
        self._endpoints.after_fork()
        self._pid = os.getpid()
        # Never close the parent's sockets (that would end its TLS sessions);
        # just stop using them.
        if self._own_session:
            self.session = new_session()
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
                error = transport_error(exc, target, idempotent, budget)
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
                self._endpoints.backoff(attempt, ends)
                continue
            except OSError as exc:  # requests' check of the TLS file paths
                raise EtcdTLSError(f"TLS setup for {target} failed: {exc}") from None
            if resp.status_code == 200:
                reply = decode_reply(resp, target)
                if not isinstance(reply, dict):
                    raise not_a_gateway(resp, target)
                self._endpoints.answered(target)
                return reply
            error = http_error(resp, target)
            if not reauthed and not authenticating and self._stale_token(error):
                # Rejected before it was applied: a fresh token and one more try.
                reauthed = full_try = True
                self._refresh_token(token)
                continue
            if transient(error):
                self._failed_on(target, rotate=pinned is None)
                if not idempotent and "no leader" not in str(error):
                    # "request timed out" and friends: the write may have applied.
                    raise EtcdIndeterminateWrite(
                        f"write outcome unknown: {error} ({target})") from error
                if time.monotonic() < ends:
                    self._endpoints.backoff(attempt, ends)
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
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                prep = requests.PreparedRequest()
                prep.method = "POST"
                prep.url = url
                prep.headers = cast(Any, headers)
                prep.body = data
                prep.hooks = {"response": []}
                adapter = self.session.get_adapter(url)
                with deadline_of_this_call(deadline):
                    # requests accepts a urllib3 Timeout (its stubs only say float or tuple).
                    resp = adapter.send(prep, stream=stream, verify=self.verify,
                                        cert=self.cert, proxies=self.session.proxies,
                                        timeout=cast(Any, limit))
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
            deadline.release()
        raise EtcdProtocolError(f"too many redirects from {url}")

    def _failed_on(self, failed: str, *, rotate: bool = True) -> None:
        """Put ``failed`` on cooldown and move to the next healthy endpoint."""
        if self._endpoints.failed(failed, rotate=rotate) and self.on_endpoint_failure is not None:
            self.on_endpoint_failure()

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""
        self._failed_on(failed)
        self._endpoints.backoff(attempt)

    # -- auth ----------------------------------------------------------------

    def _fetch_token(self) -> str:
        assert self._credentials is not None
        name, password = self._credentials
        reply = self.call(_AUTH_PATH, {"name": name, "password": password}, idempotent=True)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdProtocolError("authenticate returned no token")
        return token

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
                raise transport_error(exc, endpoint, True, self.timeout) from brief_cause(exc)
            except OSError as exc:
                raise EtcdTLSError(f"TLS setup for {endpoint} failed: {exc}") from None
            if resp.status_code == 200:
                return Stream(resp, endpoint)
            try:
                error = http_error(resp, endpoint)
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
            raise transport_error(exc, endpoint, True, self.timeout) from brief_cause(exc)
        except OSError as exc:
            raise EtcdTLSError(f"TLS setup for {endpoint} failed: {exc}") from None
        reply = decode_reply(resp, endpoint)
        if not isinstance(reply, dict):
            raise not_a_gateway(resp, endpoint)
        if resp.status_code != 200 and path != "/health":
            raise error_from_body(resp.status_code, reply)
        return reply
