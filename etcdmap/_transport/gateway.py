"""etcd's calls over the v3 JSON gateway: requests in, records out.

:class:`GatewayTransport` is the default :class:`~etcdmap._transport.base.Transport`.
It turns each request into the gateway's JSON (``to_wire``), sends it through
the HTTP choke point (:class:`~etcdmap._transport.http.HTTPTransport`, which
owns endpoints, failover, auth and deadlines), and parses the reply into a
record; a malformed reply is :class:`~etcdmap.errors.EtcdProtocolError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .._wire.replies import (
    guarded,
    header_revision,
    parse_delete,
    parse_keepalive,
    parse_lease_grant,
    parse_members,
    parse_put,
    parse_range,
    parse_status,
    parse_time_to_live,
    parse_txn,
    parse_watch_message,
)
from .._wire.stream import JSONStreamDecoder
from ..errors import EtcdConnectionError, EtcdError
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
from .base import Cuttable
from .http import HTTPTransport
from .policy import FollowsPolicy, Policy
from .stream import Stream

__all__ = ["GatewayTransport", "GatewayWatch"]

T = TypeVar("T")


def _ignore(body: Mapping[str, Any]) -> None:
    """For replies that carry nothing but a header."""


class GatewayTransport(FollowsPolicy):
    """The v3 API over the JSON gateway (``requests``); see :mod:`.base` for the contract."""

    def __init__(self, http: HTTPTransport):
        self.http = http
        self.policy: Policy = http.policy  # endpoints, deadlines, retries and the token

    def __repr__(self) -> str:
        return f"<GatewayTransport {self.endpoints!r}>"

    # -- lifecycle -----------------------------------------------------------------

    def reset(self) -> None:
        """Drop pooled connections without closing them."""
        self.http.reset()

    def close(self) -> None:
        """Release the HTTP connections."""
        self.http.close()

    # -- unary calls ---------------------------------------------------------------

    def _call(self, path: str, body: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], T],
              *, idempotent: bool, endpoint: str | None = None, timeout: float | None = None,
              deadline: float | None = None) -> T:
        reply = self.http.call(path, body, idempotent=idempotent, endpoint=endpoint,
                               timeout=timeout, deadline=deadline)
        return guarded(parse, reply, path)

    def range(self, req: Range, *, endpoint: str | None = None, timeout: float | None = None,
              deadline: float | None = None) -> RangeResponse:
        """Read a key or a range."""
        return self._call("/v3/kv/range", req.to_wire(), parse_range, idempotent=True,
                          endpoint=endpoint, timeout=timeout, deadline=deadline)

    def ranges(self, reqs: Sequence[Range]) -> list[RangeResponse]:
        """Read several ranges, one after another."""
        return [self.range(req) for req in reqs]

    def put(self, req: Put) -> PutResponse:
        """Write one key."""
        return self._call("/v3/kv/put", req.to_wire(), parse_put, idempotent=False)

    def delete_range(self, req: Delete) -> DeleteRangeResponse:
        """Delete a key or a range."""
        return self._call("/v3/kv/deleterange", req.to_wire(), parse_delete, idempotent=False)

    def txn(self, req: Txn) -> TxnResponse:
        """Run a transaction (retried like a read when it only reads)."""
        read_only = all(isinstance(op, Range) for op in (*req.success, *req.failure))
        return self._call("/v3/kv/txn", req.to_wire(), parse_txn, idempotent=read_only)

    def compact(self, revision: int, physical: bool) -> None:
        """Discard the history before ``revision``."""
        body: dict[str, Any] = {"revision": revision}
        if physical:
            body["physical"] = True
        self._call("/v3/kv/compaction", body, _ignore, idempotent=False)

    def lease_grant(self, ttl: int, lease_id: int) -> LeaseGrant:
        """Grant a lease (``lease_id`` 0: the server picks one)."""
        body: dict[str, Any] = {"TTL": ttl}
        if lease_id:
            body["ID"] = lease_id
        # Safe to retry without an ID: a grant that did apply leaves an unused
        # lease, which expires by itself.
        return self._call("/v3/lease/grant", body, parse_lease_grant, idempotent=not lease_id)

    def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease; the revision that deleted its keys."""
        return self._call("/v3/lease/revoke", {"ID": lease_id}, header_revision,
                          idempotent=True)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None,
                        deadline: float | None = None) -> int:
        """Refresh a lease once; its new TTL, 0 when it is gone."""
        return self._call("/v3/lease/keepalive", {"ID": lease_id}, parse_keepalive,
                          idempotent=True, timeout=timeout, deadline=deadline)

    def lease_time_to_live(self, lease_id: int, keys: bool) -> LeaseInfo:
        """A lease's remaining TTL (-1 when it is gone) and, optionally, its keys."""
        return self._call("/v3/lease/timetolive", {"ID": lease_id, "keys": keys},
                          parse_time_to_live, idempotent=True)

    def member_list(self) -> list[Member]:
        """The cluster's members."""
        return self._call("/v3/cluster/member/list", {}, parse_members, idempotent=True)

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status."""
        return self._call("/v3/maintenance/status", {}, parse_status, idempotent=True,
                          endpoint=endpoint)

    def version(self, endpoint: str | None = None) -> dict[str, str]:
        """``{"etcdserver": ..., "etcdcluster": ...}`` of one member (``GET /version``)."""
        return {k: str(v) for k, v in self.http.get("/version", endpoint).items()}

    # -- watches -------------------------------------------------------------------

    def watch(self, req: WatchCreate, *, endpoint: str | None = None,
              on_opening: Callable[[Cuttable], None] | None = None) -> GatewayWatch:
        """Open a watch stream on one member (``POST /v3/watch``)."""
        return GatewayWatch(self.http.stream("/v3/watch", req.to_wire(), endpoint=endpoint,
                                             on_deadline=on_opening))


class GatewayWatch:
    """A watch stream of the gateway: newline-separated JSON messages over HTTP."""

    def __init__(self, stream: Stream):
        self._stream = stream
        self.endpoint = stream.endpoint
        self._decoder = JSONStreamDecoder()
        self._ended = False
        self._error: BaseException | None = None  # raised after the replies before it

    def __repr__(self) -> str:
        return f"<GatewayWatch from {self.endpoint}>"

    def read(self, timeout: float | None) -> list[WatchReply] | None:
        """The replies that arrived; ``None`` after ``timeout`` s of silence."""
        if self._error is not None:
            raise self._error
        if self._ended:
            raise EtcdConnectionError(f"the watch stream from {self.endpoint} ended")
        data = self._stream.read(timeout)
        if data is None:
            return None
        if not data:
            self._ended = True
            messages = self._decoder.close()
            if not messages:
                raise EtcdConnectionError(f"the watch stream from {self.endpoint} ended")
        else:
            messages = self._decoder.feed(data)
        replies = []
        for message in messages:
            try:
                replies.append(parse_watch_message(message))
            except EtcdError as exc:
                if not replies:
                    raise
                self._error = exc  # hand over what came before it first
                break
        return replies

    def abort(self) -> None:
        """Wake a thread blocked in :meth:`read` (from any thread)."""
        self._stream.abort()

    def close(self) -> None:
        """Release the connection."""
        self._stream.close()
