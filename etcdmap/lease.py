"""Leases kept alive by a daemon thread, that say so when they die.

A :class:`Lease` refreshes itself about every ``ttl / 3`` seconds.  Each
refresh is bounded by the time the lease has left: a member that stalls is
given a third of it, then the next member is asked, so a lease lapses only
when no member could refresh it within its TTL.  When the server reports it
gone, or refreshing fails until its last known expiry has passed, it is
marked expired: :meth:`Lease.check` then raises
:class:`~etcdmap.errors.EtcdLeaseExpired` and ``on_expired`` is called once.

The keepalive thread holds the lease only weakly: a lease that is dropped
without :meth:`~Lease.close` or :meth:`~Lease.revoke` stops being refreshed
(with a ``ResourceWarning``) and lapses after its TTL.  In a forked child the
keepalive restarts the first time the lease is used there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._settings import check_ttl
from .errors import EtcdError, EtcdLeaseExpired, EtcdLeaseNotFound
from .ops import Op, Put

if TYPE_CHECKING:
    from .client import EtcdClient

__all__ = ["Lease", "LeasePolicy", "PerWrite", "Shared"]

log = logging.getLogger(__name__)
_MIN_ATTEMPT = 0.2  # seconds: the shortest a refresh attempt may wait for an answer


def _keep_alive(ref: weakref.ref[Lease], stop: threading.Event) -> None:
    """The keepalive loop; it only holds the lease while refreshing it."""
    lease = ref()
    interval = lease.ttl / 3.0 if lease is not None else 0.0
    del lease
    while not stop.wait(max(interval, 0.1)):
        lease = ref()
        if lease is None:
            return
        next_interval = lease._refresh_in_background()
        del lease
        if next_interval is None:
            return
        interval = next_interval


class Lease:
    """A granted lease, optionally kept alive until :meth:`revoke` or :meth:`close`."""

    def __init__(
        self,
        client: EtcdClient,
        ttl: int,
        *,
        keepalive: bool = True,
        on_expired: Callable[[Lease], None] | None = None,
    ):
        sent = time.monotonic()
        grant = client.lease_grant(ttl)
        self.id = grant.id
        self.ttl = grant.ttl
        self._client = client
        self._on_expired = on_expired
        self._expires = sent + grant.ttl  # last known expiry, never too late
        self._expired = threading.Event()
        self._expiry_lock = threading.Lock()
        self._keepalive = keepalive
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        if keepalive:
            self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=_keep_alive, args=(weakref.ref(self), self._stop),
                                        daemon=True, name=f"etcdmap-lease-{self.id:x}")
        self._thread.start()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The parent keeps refreshing its copy; this process refreshes its own.
            self._pid = os.getpid()
            self._expiry_lock = threading.Lock()
            self._stop = threading.Event()
            if self._keepalive and not self._closed and not self._expired.is_set():
                self._start()

    def __repr__(self) -> str:
        state = "expired" if self._expired.is_set() else "alive"
        return f"<Lease {self.id:x} ttl={self.ttl} {state}>"

    @property
    def expired(self) -> bool:
        """Whether the lease is known (or certain) to have lapsed."""
        self._check_fork()
        if not self._expired.is_set() and time.monotonic() > self._expires:
            self.mark_expired("its TTL passed without a successful refresh")
        return self._expired.is_set()

    def check(self) -> int:
        """The lease id; :class:`EtcdLeaseExpired` if it has lapsed."""
        if self.expired:
            raise EtcdLeaseExpired(f"lease {self.id:x} has expired")
        return self.id

    def refresh(self, *, timeout: float | None = None, deadline: float | None = None) -> int:
        """Refresh now; the new TTL (:class:`EtcdLeaseExpired` if the lease is gone).

        ``timeout`` bounds each attempt and ``deadline`` all of them (by default
        the client's own).
        """
        # The server's clock started the new TTL somewhere between sending and the
        # answer: counting from the send keeps the known expiry never too late.
        sent = time.monotonic()
        ttl = self._client.lease_keepalive_once(self.id, timeout=timeout, deadline=deadline)
        if ttl <= 0:
            self.mark_expired("the server no longer knows it")
            raise EtcdLeaseExpired(f"lease {self.id:x} has expired")
        self._expires = sent + ttl
        return ttl

    def time_to_live(self) -> int:
        """Seconds left according to the server (-1 when gone)."""
        return self._client.lease_time_to_live(self.id).ttl

    def _refresh_in_background(self) -> float | None:
        """One keepalive round: the seconds until the next one, or None to stop."""
        left = self._expires - time.monotonic()
        # A stalled member gets a third of what is left, then the next one is asked.
        attempt = max(min(self._client.timeout, left / 3.0), _MIN_ATTEMPT)
        try:
            self.refresh(timeout=attempt, deadline=max(left - attempt, attempt))
            return self.ttl / 3.0
        except EtcdLeaseExpired:
            return None
        except EtcdError as exc:
            # Keep trying, faster, until the lease's last known expiry.
            log.warning("refreshing lease %x failed: %s", self.id, type(exc).__name__)
            if self.expired:
                return None
            return max((self._expires - time.monotonic()) / 4.0, 0.1)

    def mark_expired(self, why: str) -> None:
        """Record that the lease lapsed (once), and call ``on_expired``."""
        with self._expiry_lock:  # the keepalive thread and a writer may race here
            if self._expired.is_set():
                return
            self._expired.set()
        log.warning("lease %x expired: %s", self.id, why)
        if self._on_expired is not None:
            try:
                self._on_expired(self)
            except Exception:  # a callback's failure must not kill the keepalive
                log.exception("on_expired callback failed")

    def close(self) -> None:
        """Stop refreshing (the lease then lapses after its TTL)."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() \
                and self._pid == os.getpid():
            thread.join(timeout=5)

    def revoke(self) -> int:
        """Stop refreshing and revoke: the lease's keys are deleted at once.

        The revision etcd answered at (0 if the lease was gone already).
        """
        self.close()
        revision = 0
        with contextlib.suppress(EtcdLeaseNotFound):  # already gone, and its keys too
            revision = self._client.lease_revoke(self.id)
        if not self._expired.is_set():
            self._expired.set()  # revoked on purpose: no callback
        return revision

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()

    def __reduce__(self) -> Any:
        raise TypeError("a Lease is kept alive by this process and cannot be pickled; "
                        "pass its id and grant or refresh it where it is needed")

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or not getattr(self, "_keepalive", False):
            return
        if self._pid == os.getpid() and not self._expired.is_set():
            warnings.warn(f"unclosed {self!r} is no longer kept alive; use it as a context "
                          "manager, or call revoke() or close()", ResourceWarning,
                          source=self, stacklevel=2)
        self._stop.set()


# -- the write policies a mapping's views apply --------------------------------------


class LeasePolicy(Protocol):
    """What a TTL or lease view does to the writes that go through it."""

    lease: Lease | None  # the shared lease, if there is one

    def attach(self, ops: Sequence[Op]) -> list[Op]:
        """``ops`` with the view's lease on every put."""

    def refused(self, exc: EtcdLeaseNotFound) -> EtcdError:
        """What to raise when etcd refused a write for its lease."""


def _with_lease(ops: Sequence[Op], lease_id: int) -> list[Op]:
    return [dataclasses.replace(op, lease=lease_id) if isinstance(op, Put) else op for op in ops]


class PerWrite:
    """``with_ttl(seconds)``: each write gets a fresh lease, so it expires ``ttl`` after it."""

    lease = None

    def __init__(self, client: EtcdClient, ttl: int):
        self.client, self.ttl = client, check_ttl(ttl)

    def attach(self, ops: Sequence[Op]) -> list[Op]:
        """``ops`` with a new lease on every put (none is granted for a write without puts)."""
        if not any(isinstance(op, Put) for op in ops):
            return list(ops)
        return _with_lease(ops, self.client.lease_grant(self.ttl).id)

    def refused(self, exc: EtcdLeaseNotFound) -> EtcdError:
        """A fresh lease refused: pass etcd's error on."""
        return exc


class Shared:
    """``lease()``: every write shares one kept-alive lease; a lapsed one refuses writes."""

    def __init__(self, lease: Lease):
        self.lease = lease

    def attach(self, ops: Sequence[Op]) -> list[Op]:
        """``ops`` with the lease on every put; :class:`EtcdLeaseExpired` if it lapsed."""
        if not any(isinstance(op, Put) for op in ops):
            return list(ops)
        return _with_lease(ops, self.lease.check())

    def refused(self, exc: EtcdLeaseNotFound) -> EtcdError:
        """etcd no longer knows the lease: it lapsed (``on_expired`` is told)."""
        self.lease.mark_expired("the server rejected it")
        return EtcdLeaseExpired(f"lease {self.lease.id:x} has expired")
