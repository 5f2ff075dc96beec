"""The cluster's members: who they are, how each one is, and following them.

:class:`MembersMixin` gives :class:`~etcdmap.client.EtcdClient` the member
list, a member's status and version, and the endpoint list kept in step
with the members (``sync_endpoints``, and ``auto_sync`` after a failover).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .errors import EtcdError
from .records import Member, Status

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["MembersMixin"]

log = logging.getLogger("etcdmap.client")
SYNC_INTERVAL = 5.0  # seconds: auto_sync relearns the members at most this often


class MembersMixin:
    """Members, status, version and endpoint sync for the client."""

    _transport: Transport
    _sync_due: bool
    _last_sync: float

    if TYPE_CHECKING:
        @property
        def endpoints(self) -> list[str]: ...
        def _wire(self) -> Transport: ...

    def members(self) -> list[Member]:
        """The cluster's members."""
        return self._wire().member_list()

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status (the current endpoint's unless given)."""
        return self._wire().status(endpoint.rstrip("/") if endpoint else None)

    def version(self) -> dict[str, str]:
        """``{"etcdserver": ..., "etcdcluster": ...}`` of the current endpoint."""
        return self._transport.version()

    def sync_endpoints(self) -> list[str]:
        """Replace the endpoint list with the members' client URLs."""
        urls = [url for m in self.members() if not m.is_learner for url in m.client_urls]
        if urls:
            self._transport.set_endpoints(urls)
        return self.endpoints

    def _mark_sync_due(self) -> None:
        # After a failover, relearn the members (at most every few seconds).
        if time.monotonic() - self._last_sync > SYNC_INTERVAL:
            self._sync_due = True

    def _auto_sync_now(self) -> None:
        self._sync_due = False
        self._last_sync = time.monotonic()
        try:
            self.sync_endpoints()
        except EtcdError as exc:  # keep the endpoints we have
            log.warning("endpoint auto-sync failed: %s", type(exc).__name__)
