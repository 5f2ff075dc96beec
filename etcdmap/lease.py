"""Leases kept alive by a daemon thread, that say so when they die.

A :class:`Lease` refreshes itself about every ``ttl / 3`` seconds.  When the
server reports it gone, or refreshing fails until its last known expiry has
passed, it is marked expired: :meth:`Lease.check` then raises
:class:`~etcdmap.errors.EtcdLeaseExpired` and ``on_expired`` is called once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import EtcdError, EtcdLeaseExpired, EtcdLeaseNotFound

if TYPE_CHECKING:
    from .client import EtcdClient

__all__ = ["Lease"]

log = logging.getLogger(__name__)


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
        grant = client.lease_grant(ttl)
        self.id = grant.id
        self.ttl = grant.ttl
        self._client = client
        self._on_expired = on_expired
        self._expires = time.monotonic() + grant.ttl  # last known expiry
        self._expired = threading.Event()
        self._expiry_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if keepalive:
            self._thread = threading.Thread(target=self._keepalive, daemon=True,
                                            name=f"etcdmap-lease-{self.id:x}")
            self._thread.start()

    def __repr__(self) -> str:
        state = "expired" if self.expired else "alive"
        return f"<Lease {self.id:x} ttl={self.ttl} {state}>"

    @property
    def expired(self) -> bool:
        """Whether the lease is known (or certain) to have lapsed."""
        if not self._expired.is_set() and time.monotonic() > self._expires:
            self._mark_expired("its TTL passed without a successful refresh")
        return self._expired.is_set()

    def check(self) -> int:
        """The lease id; :class:`EtcdLeaseExpired` if it has lapsed."""
        if self.expired:
            raise EtcdLeaseExpired(f"lease {self.id:x} has expired")
        return self.id

    def refresh(self) -> int:
        """Refresh now; the new TTL (:class:`EtcdLeaseExpired` if the lease is gone)."""
        ttl = self._client.lease_keepalive_once(self.id)
        if ttl <= 0:
            self._mark_expired("the server no longer knows it")
            raise EtcdLeaseExpired(f"lease {self.id:x} has expired")
        self._expires = time.monotonic() + ttl
        return ttl

    def time_to_live(self) -> int:
        """Seconds left according to the server (-1 when gone)."""
        return self._client.lease_time_to_live(self.id).ttl

    def _keepalive(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        while not self._stop.wait(interval):
            try:
                self.refresh()
                interval = max(self.ttl / 3.0, 0.2)
            except EtcdLeaseExpired:
                return
            except EtcdError as exc:
                # Keep trying, faster, until the lease's last known expiry.
                log.warning("refreshing lease %x failed: %s", self.id, type(exc).__name__)
                if self.expired:
                    return
                interval = max(min(interval / 2, self._expires - time.monotonic()) / 2, 0.1)

    def _mark_expired(self, why: str) -> None:
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
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def revoke(self) -> None:
        """Stop refreshing and revoke: the lease's keys are deleted at once."""
        self.close()
        with contextlib.suppress(EtcdLeaseNotFound):  # already gone, and its keys too
            self._client.lease_revoke(self.id)
        if not self._expired.is_set():
            self._expired.set()  # revoked on purpose: no callback

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revoke()
