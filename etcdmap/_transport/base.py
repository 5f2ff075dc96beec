"""The seam between the client and a transport: etcd's calls in requests and records.

A transport takes the requests of :mod:`etcdmap.ops` and returns the records
of :mod:`etcdmap.records`; how they travel (JSON over HTTP, protobuf over
gRPC) is its own business.  Every transport gives the same guarantees: each
call ends within its deadline; a read fails over to the next healthy
endpoint until the retry deadline; a write is retried only when it surely
was not applied (else :class:`~etcdmap.errors.EtcdIndeterminateWrite`); a
stale token is renewed once; after ``os.fork()`` the child never uses the
parent's connections; every failure is an :class:`~etcdmap.errors.EtcdError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..ops import Delete, Put, Range, Txn, WatchCreate
from ..records import (
    DeleteRangeResponse,
    LeaseGrant,
    LeaseInfo,
    Member,
    PutResponse,
    RangeResponse,
    Status,
    TxnResponse,
    WatchReply,
)
from .policy import Policy

__all__ = ["Cuttable", "Transport", "WatchStream"]


class Cuttable(Protocol):
    """Something in progress that another thread can end at once."""

    def cut(self) -> None:
        """End it now; the thread waiting on it sees a failure."""


class WatchStream(Protocol):
    """One watch's stream of replies from one member."""

    endpoint: str

    def read(self, timeout: float | None) -> list[WatchReply] | None:
        """The replies that arrived; ``None`` after ``timeout`` s of silence.

        Raises :class:`~etcdmap.errors.EtcdConnectionError` once the stream
        has ended, and the error of an error frame as it arrives.
        """

    def abort(self) -> None:
        """Wake a thread blocked in :meth:`read` (from any thread)."""

    def close(self) -> None:
        """Release the stream."""


class Transport(Protocol):
    """etcd's v3 calls over some wire, to a list of endpoints."""

    timeout: float
    on_endpoint_failure: Callable[[], None] | None

    @property
    def policy(self) -> Policy:
        """Endpoints, deadlines, retries and the token: the rules every transport follows."""

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, in the order they were given."""

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""

    @property
    def has_credentials(self) -> bool:
        """Whether calls carry a user's token."""

    def endpoints_in_order(self) -> list[str]:
        """Every endpoint, the current one first."""

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoints, keeping the current one first if still listed."""

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        """Move off ``failed``; after a full round of failures, back off."""

    def reauthenticate(self) -> None:
        """Replace the current token (after the server rejected it)."""

    def reset(self) -> None:
        """Drop the connections without closing them."""

    def close(self) -> None:
        """Release the connections."""

    # -- unary calls: ``endpoint`` pins a member, ``timeout`` bounds each attempt,
    # -- ``deadline`` the failovers (seconds; the transport's own by default).

    def range(self, req: Range, *, endpoint: str | None = None, timeout: float | None = None,
              deadline: float | None = None) -> RangeResponse:
        """Read a key or a range."""

    def ranges(self, reqs: Sequence[Range]) -> list[RangeResponse]:
        """Read several ranges (as :meth:`range` each); some may be in flight at once."""

    def put(self, req: Put) -> PutResponse:
        """Write one key."""

    def delete_range(self, req: Delete) -> DeleteRangeResponse:
        """Delete a key or a range."""

    def txn(self, req: Txn) -> TxnResponse:
        """Run a transaction (retried like a read when it only reads)."""

    def compact(self, revision: int, physical: bool) -> None:
        """Discard the history before ``revision``."""

    def lease_grant(self, ttl: int, lease_id: int) -> LeaseGrant:
        """Grant a lease (``lease_id`` 0: the server picks one)."""

    def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease; the revision that deleted its keys."""

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None,
                        deadline: float | None = None) -> int:
        """Refresh a lease once; its new TTL, 0 when it is gone."""

    def lease_time_to_live(self, lease_id: int, keys: bool) -> LeaseInfo:
        """A lease's remaining TTL (-1 when it is gone) and, optionally, its keys."""

    def member_list(self) -> list[Member]:
        """The cluster's members."""

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status."""

    def version(self, endpoint: str | None = None) -> dict[str, str]:
        """``{"etcdserver": ..., "etcdcluster": ...}`` of one member."""

    def watch(self, req: WatchCreate, *, endpoint: str | None = None,
              on_opening: Callable[[Cuttable], None] | None = None) -> WatchStream:
        """Open a watch on one member, once it is confirmed or refused.

        Setting it up ends within the timeout, or when another thread cuts
        what is handed to ``on_opening``.
        """
