"""The retry policy every transport follows: which member, when to try again, when to stop.

A transport makes one attempt at a time (:meth:`Policy.run` calls it with the
endpoint, the token and the seconds it may take) and describes what went wrong
as a :class:`Failure`; the policy alone decides what happens next.  It follows
etcd's Go client: a read is retried on the next endpoint after a connection
failure, a timeout or an "unavailable" answer, until the retry deadline; a
write only when it surely was not applied (the connection or TLS was refused,
or the member answered "no leader"), else :class:`EtcdIndeterminateWrite`.
A stale token is renewed once (by one thread) and the call tried again.  With
nothing listening anywhere, the call gives up after the dial window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import (
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdServerError,
    EtcdTLSError,
    GrpcCode,
    transient,
)
from .endpoints import Endpoints

__all__ = ["DIAL_WINDOW", "Failure", "FollowsPolicy", "Policy"]

T = TypeVar("T")

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


class Failure(Exception):
    """One attempt failed: the error it stands for, and what is known of the request.

    ``answered``: a member answered with an error (else the exchange broke);
    ``unsent``: the request surely never reached a server (connect or TLS
    refused); ``error`` is already an :class:`EtcdIndeterminateWrite` when a
    write broke after it may have been sent.
    """

    def __init__(self, error: EtcdError, *, answered: bool = False, unsent: bool = False,
                 cause: BaseException | None = None):
        super().__init__(str(error))
        self.error = error
        self.answered = answered
        self.unsent = unsent
        self.cause = cause  # shown under the error as its one-line cause


class Policy:
    """Endpoints, deadlines, retries and the auth token of one transport."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float,
                 retry_deadline: float, dial_window: float | None = None,
                 credentials: tuple[str, str] | None = None):
        self.endpoints = Endpoints(endpoints)
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self.dial_window = min(retry_deadline, DIAL_WINDOW) if dial_window is None else dial_window
        self.credentials = credentials
        self.token: str | None = None
        self._auth_lock = threading.Lock()
        self.on_endpoint_failure: Callable[[], None] | None = None
        # How the transport logs in: returns a fresh token (set by the transport).
        self.fetch_token: Callable[[], str] | None = None

    def after_fork(self) -> None:
        """In a forked child: a lock held at fork time stays held, so new ones."""
        self._auth_lock = threading.Lock()
        self.endpoints.after_fork()

    # -- the loop ------------------------------------------------------------------

    def run(self, attempt: Callable[[str, str | None, float], T], *, idempotent: bool,
            timeout: float | None = None, deadline: float | None = None,
            endpoint: str | None = None, authenticating: bool = False) -> T:
        """``attempt(endpoint, token, seconds)`` until it succeeds or the policy gives up.

        Each attempt may take ``timeout`` seconds (the transport's by default);
        retries stop after ``deadline`` seconds (the retry deadline).  With
        ``endpoint`` every attempt goes to that member.
        """
        pinned = endpoint
        if not authenticating:
            self.ensure_token()
        per_try = timeout or self.timeout
        started = time.monotonic()
        ends = started + (self.retry_deadline if deadline is None else deadline)
        attempts = 0
        tls_failures = 0
        unreachable: set[str] = set()  # endpoints that refused a connection in a row
        reauthed = False
        full_try = True  # the first try (and the one after re-authenticating) gets per_try
        while True:
            attempts += 1
            target = pinned or self.endpoints.current
            token = None if authenticating else self.token
            budget = per_try if full_try else max(0.01, min(per_try, ends - time.monotonic()))
            full_try = False
            try:
                result = attempt(target, token, budget)
            except Failure as failure:
                error = failure.error
                cause = failure.cause
                if failure.answered:
                    if not reauthed and not authenticating and self.stale_token(error):
                        # Rejected before it was applied: a fresh token and one more try.
                        reauthed = full_try = True
                        self.refresh_token(token)
                        continue
                    if not transient(error):
                        raise error from cause
                    self.failed_on(target, rotate=pinned is None)
                    if not idempotent and "no leader" not in str(error):
                        # "request timed out" and friends: the write may have applied.
                        raise EtcdIndeterminateWrite(
                            f"write outcome unknown: {error} ({target})") from error
                    if time.monotonic() >= ends:
                        raise error from cause
                    self.endpoints.backoff(attempts, ends)
                    continue
                self.failed_on(target, rotate=pinned is None)
                if isinstance(error, EtcdTLSError):
                    tls_failures += 1
                    # A refused certificate is a configuration error: try each member once.
                    if pinned is not None or tls_failures >= len(self.endpoints.urls):
                        raise error from None
                if failure.unsent:
                    unreachable.add(target)
                    if unreachable >= set(self.endpoints.urls) \
                            and time.monotonic() >= started + self.dial_window:
                        raise self.nothing_listens(error) from cause
                else:
                    unreachable.clear()
                if isinstance(error, EtcdIndeterminateWrite) or time.monotonic() >= ends:
                    raise error from cause
                self.endpoints.backoff(attempts, ends)
                continue
            self.endpoints.answered(target)
            return result

    def nothing_listens(self, error: EtcdError) -> EtcdError:
        """``error``, reworded to say that no endpoint accepts connections."""
        urls = self.endpoints.urls
        where = f"etcd at {urls[0]}" if len(urls) == 1 else "any of " + ", ".join(urls)
        return type(error)(f"cannot connect to {where}{_NOTHING_LISTENS}")

    def failed_on(self, failed: str, *, rotate: bool = True) -> None:
        """Put ``failed`` on cooldown and move to the next healthy endpoint."""
        if self.endpoints.failed(failed, rotate=rotate) and self.on_endpoint_failure is not None:
            self.on_endpoint_failure()

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""
        self.failed_on(failed)
        self.endpoints.backoff(attempt)

    # -- auth ----------------------------------------------------------------------

    def stale_token(self, error: EtcdError) -> bool:
        """Whether ``error`` rejects the token (so a new one may do)."""
        if self.credentials is None or not isinstance(error, EtcdServerError):
            return False
        return error.status == 401 or error.code == GrpcCode.UNAUTHENTICATED \
            or any(text in error.message for text in _STALE_TOKEN)

    def refresh_token(self, stale: str | None) -> None:
        """Replace ``stale`` with a fresh token, unless another thread already did."""
        # One thread re-authenticates; the others wait and use its token.  The
        # stale token stays in place meanwhile, so no request goes out without one.
        assert self.fetch_token is not None
        with self._auth_lock:
            if self.token == stale:
                self.token = self.fetch_token()

    def renewing_once(self, open_with: Callable[[str | None], T]) -> T:
        """``open_with(token)`` (a stream's set-up), again with a fresh token if rejected."""
        self.ensure_token()
        token = self.token
        try:
            return open_with(token)
        except EtcdError as exc:
            if not self.stale_token(exc):
                raise
            self.refresh_token(token)
        return open_with(self.token)

    def ensure_token(self) -> None:
        """Authenticate once before the first request, if credentials were given."""
        if self.credentials is not None and self.token is None:
            self.refresh_token(None)


class FollowsPolicy:
    """The endpoint, deadline and auth surface of a transport, read from its :class:`Policy`."""

    policy: Policy

    @property
    def timeout(self) -> float:
        """Seconds each attempt waits for an answer."""
        return self.policy.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.policy.timeout = value

    @property
    def on_endpoint_failure(self) -> Callable[[], None] | None:
        """Called when an endpoint fails (``auto_sync`` relearns the members)."""
        return self.policy.on_endpoint_failure

    @on_endpoint_failure.setter
    def on_endpoint_failure(self, callback: Callable[[], None] | None) -> None:
        self.policy.on_endpoint_failure = callback

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, in the order they were given."""
        return self.policy.endpoints.urls

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.policy.endpoints.current

    @property
    def has_credentials(self) -> bool:
        """Whether calls carry a user's token."""
        return self.policy.credentials is not None

    def endpoints_in_order(self) -> list[str]:
        """Every endpoint, the current one first."""
        return self.policy.endpoints.in_order()

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoints, keeping the current one first if still listed."""
        self.policy.endpoints.replace(endpoints)

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""
        self.policy.fail_over(failed, attempt)

    def reauthenticate(self) -> None:
        """Replace the current token (after the server rejected it)."""
        self.policy.refresh_token(self.policy.token)
