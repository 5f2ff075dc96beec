"""The one choke point between etcdmap and the network.

Every request goes through :meth:`Transport.call` (or :meth:`Transport.stream`
for watches): it picks the endpoint, applies the timeout, fails over, keeps the
auth token fresh, and turns ``requests`` and gateway errors into
:mod:`etcdmap.errors` with ``from exc``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from .errors import (
    EtcdAuthError,
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
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _decode(resp: requests.Response) -> Any:
    try:
        return json.loads(resp.content)
    except (ValueError, requests.RequestException) as exc:
        raise EtcdProtocolError(f"invalid JSON from {resp.url} (HTTP {resp.status_code})") from exc


class Transport:
    """HTTP to a list of gateway endpoints, with failover, auth and error mapping."""

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
        self._current = 0
        self.on_endpoint_failure: Callable[[], None] | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._current % len(self.endpoints)]

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoint list, keeping the current endpoint first if still listed."""
        new = normalize_endpoints(endpoints)
        current = self.endpoint
        if current in new:
            new.remove(current)
            new.insert(0, current)
        self.endpoints, self._current = new, 0

    def reset(self) -> None:
        """Forget pooled connections (they belong to a parent process after fork)."""
        # Closing a copied socket in the child sends nothing to the server.
        self.session.close()
        if self._own_session:
            self.session = requests.Session()
            self.session.trust_env = False

    def close(self) -> None:
        """Close the session if this transport created it."""
        if self._own_session:
            self.session.close()

    # -- the choke point ---------------------------------------------------

    def call(self, path: str, body: Mapping[str, Any], *, idempotent: bool,
             timeout: float | None = None, endpoint: str | None = None) -> JSON:
        """POST ``body`` to ``path``; fail over while it is safe; return the JSON reply.

        With ``endpoint`` the request goes to that member only.
        """
        pinned = endpoint
        if self._credentials is not None and self._token is None \
                and path != "/v3/auth/authenticate":
            self.ensure_token()
        data = json.dumps(body, separators=(",", ":")).encode()
        deadline = time.monotonic() + self.retry_deadline
        attempt = 0
        reauthed = False
        while True:
            attempt += 1
            endpoint = pinned or self.endpoint
            token = self._token
            try:
                resp = self._send(endpoint + path, data, token, timeout or self.timeout)
            except requests.RequestException as exc:
                error = self._transport_error(exc, endpoint, idempotent)
                if not self._retryable(error, idempotent, deadline):
                    raise error from exc
                self.fail_over(endpoint, attempt)
                continue
            if resp.status_code == 200:
                reply = _decode(resp)
                if not isinstance(reply, dict):
                    raise EtcdProtocolError(f"expected a JSON object from {path}")
                return reply
            error = self._http_error(resp)
            if isinstance(error, EtcdAuthError) and self._credentials and not reauthed \
                    and path != "/v3/auth/authenticate" and error.status == 401:
                reauthed = True
                self._refresh_token(token)
                continue
            if "auth store is old" in error.message and self._credentials and not reauthed:
                reauthed = True
                self._refresh_token(token)
                continue
            if isinstance(error, EtcdUnavailable) or error.code == 2:
                if not idempotent and "no leader" not in error.message:
                    # "request timed out" and friends: the write may have applied.
                    raise EtcdIndeterminateWrite(
                        f"write outcome unknown: {error.message} ({endpoint})") from error
                if time.monotonic() < deadline:
                    self.fail_over(endpoint, attempt)
                    continue
            raise error

    def _send(self, url: str, data: bytes, token: str | None, timeout: float,
              *, stream: bool = False, read_timeout: float | None = None) -> requests.Response:
        # Straight to the adapter: Session.request's merging and hooks cost
        # more than the round trip itself on loopback.
        headers = CaseInsensitiveDict(_BASE_HEADERS)
        if token:
            headers["Authorization"] = token
        for _ in range(_MAX_REDIRECTS + 1):
            prep = requests.PreparedRequest()
            prep.method = "POST"
            prep.url = url
            prep.headers = headers
            prep.body = data
            prep.headers["Content-Length"] = str(len(data))
            prep.hooks = {"response": []}
            adapter = self.session.get_adapter(url)
            read = timeout if read_timeout is None else read_timeout
            resp = adapter.send(prep, stream=stream, verify=self.verify, cert=self.cert,
                                proxies=self.session.proxies, timeout=(timeout, read))
            if resp.status_code not in _REDIRECTS or not self.allow_redirects:
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                break
            url = urljoin(url, location)
        raise EtcdProtocolError(f"too many redirects from {url}")

    def _transport_error(self, exc: requests.RequestException, endpoint: str,
                         idempotent: bool) -> EtcdError:
        if _surely_unsent(exc):
            if isinstance(exc, requests.ConnectTimeout):
                return EtcdTimeout(f"connecting to {endpoint} timed out")
            return EtcdConnectionError(f"cannot connect to {endpoint}")
        if not idempotent:
            return EtcdIndeterminateWrite(
                f"write outcome unknown: {type(exc).__name__} from {endpoint}")
        if isinstance(exc, requests.Timeout):
            return EtcdTimeout(f"no answer from {endpoint} within {self.timeout} s")
        if isinstance(exc, requests.exceptions.SSLError):
            return EtcdConnectionError(f"TLS handshake with {endpoint} failed: {exc}")
        return EtcdConnectionError(f"{type(exc).__name__} talking to {endpoint}")

    def _retryable(self, error: EtcdError, idempotent: bool, deadline: float) -> bool:
        if isinstance(error, EtcdIndeterminateWrite):
            return False
        if "TLS handshake" in str(error) and len(self.endpoints) == 1:
            return False
        return time.monotonic() < deadline

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""
        if self.endpoint == failed:
            self._current = (self._current + 1) % len(self.endpoints)
        if self.on_endpoint_failure is not None:
            self.on_endpoint_failure()
        if attempt >= len(self.endpoints):
            # Every endpoint failed once: back off, jittered, before the next round.
            rounds = attempt // len(self.endpoints)
            time.sleep(min(0.05 * 2 ** rounds, 1.0) * random.uniform(0.5, 1.0))

    def _http_error(self, resp: requests.Response) -> EtcdServerError:
        try:
            body: object = resp.json()
        except ValueError:
            body = resp.text[:200]
        return error_from_body(resp.status_code, body)

    # -- auth ----------------------------------------------------------------

    def authenticate(self) -> None:
        """Get a fresh token for the configured user."""
        if self._credentials is None:
            return
        name, password = self._credentials
        reply = self.call("/v3/auth/authenticate", {"name": name, "password": password},
                          idempotent=True)
        token = reply.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdProtocolError("authenticate returned no token")
        self._token = token

    def _refresh_token(self, stale: str | None) -> None:
        # One thread re-authenticates; the others wait and use its token.
        with self._auth_lock:
            if self._token == stale:
                self._token = None
                self.authenticate()

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
        data = json.dumps(body, separators=(",", ":")).encode()
        endpoint = endpoint or self.endpoint
        try:
            resp = self._send(endpoint + path, data, self._token, self.timeout, stream=True,
                              read_timeout=read_timeout)
        except requests.RequestException as exc:
            raise self._transport_error(exc, endpoint, True) from exc
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
        reply = _decode(resp)
        if not isinstance(reply, dict):
            raise EtcdProtocolError(f"expected a JSON object from {path}")
        if resp.status_code != 200 and path != "/health":
            raise error_from_body(resp.status_code, reply)
        return reply
