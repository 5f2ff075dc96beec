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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urljoin

import requests
from urllib3.util import Timeout

from ..errors import EtcdProtocolError, EtcdTLSError, error_from_body
from .connections import deadline_of_this_call, new_session
from .failures import (
    brief_cause,
    decode_reply,
    http_error,
    not_a_gateway,
    surely_unsent,
    transport_error,
)
from .guard import Deadline, guard
from .policy import Failure, FollowsPolicy, Policy
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


_encode = json.JSONEncoder(separators=(",", ":")).encode


class HTTPTransport(FollowsPolicy):
    """HTTP to a list of gateway endpoints, with failover, auth and error mapping.

    Each request is one attempt of a :class:`~.policy.Policy`, which picks
    the endpoint, retries while it is safe and keeps the token fresh; this
    class sends it, bounds it by a hard deadline (a guard shuts the socket
    down, whatever the server sends), and says what went wrong.
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
        self.policy = Policy(endpoints, timeout=timeout, retry_deadline=retry_deadline,
                             dial_window=dial_window, credentials=credentials)
        self.policy.fetch_token = self._fetch_token
        self.allow_redirects = allow_redirects
        self._own_session = session is None
        self.session = session if session is not None else new_session()
        self.verify = verify
        self.cert = cert
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<HTTPTransport {self.endpoints!r}>"

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
        self.policy.after_fork()
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
        """POST ``body`` to ``path`` as the policy says; return the JSON reply.

        Each attempt waits at most ``timeout`` (the transport's by default);
        retries stop after ``deadline`` seconds (``retry_deadline``).  With
        ``endpoint`` the request goes to that member only.
        """
        self._check_fork()
        data = _encode(body).encode()

        def attempt(target: str, token: str | None, budget: float) -> JSON:
            try:
                resp = self._send(target + path, data, token, budget)
            except requests.RequestException as exc:
                raise Failure(transport_error(exc, target, idempotent, budget),
                              unsent=surely_unsent(exc), cause=brief_cause(exc)) from None
            except OSError as exc:  # requests' check of the TLS file paths
                raise EtcdTLSError(f"TLS setup for {target} failed: {exc}") from None
            if resp.status_code != 200:
                raise Failure(http_error(resp, target), answered=True)
            reply = decode_reply(resp, target)
            if not isinstance(reply, dict):
                raise not_a_gateway(resp, target)
            return reply

        return self.policy.run(attempt, idempotent=idempotent, timeout=timeout,
                               deadline=deadline, endpoint=endpoint,
                               authenticating=path == _AUTH_PATH)

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

    # -- auth ----------------------------------------------------------------

    def _fetch_token(self) -> str:
        assert self.policy.credentials is not None
        name, password = self.policy.credentials
        reply = self.call(_AUTH_PATH, {"name": name, "password": password}, idempotent=True)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdProtocolError("authenticate returned no token")
        return token

    # -- streams, health and plain GETs -------------------------------------------

    def stream(self, path: str, body: Mapping[str, Any], *, endpoint: str | None = None,
               on_deadline: Callable[[Deadline], None] | None = None) -> Stream:
        """Open a streaming POST (a watch) on one member; the caller reads and closes it.

        Its set-up (connect, send, headers) ends within the timeout, or when
        another thread cuts the deadline handed to ``on_deadline``.  A stale
        token is renewed once, as for :meth:`call`.
        """
        self._check_fork()
        data = _encode(body).encode()
        endpoint = endpoint or self.endpoint

        def open_with(token: str | None) -> Stream:
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
                raise http_error(resp, endpoint)
            finally:
                resp.close()

        return self.policy.renewing_once(open_with)

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
