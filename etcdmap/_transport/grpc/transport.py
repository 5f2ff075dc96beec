"""etcd's calls over gRPC: requests in, records out, by the same policy as the gateway.

:class:`GrpcTransport` implements :class:`~etcdmap._transport.base.Transport`
with ``grpcio``: each call is one attempt of the shared
:class:`~etcdmap._transport.policy.Policy` (failover, safe retries, token
renewal, dial window), made through ``channel.unary_unary`` with a deadline,
``hasleader`` metadata and the token; watches share one stream per member
(:mod:`.watch`).  After ``os.fork()`` the child builds channels of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from ...errors import EtcdError, EtcdProtocolError, EtcdTimeout
from ...ops import Delete, Put, Range, Txn, WatchCreate
from ...records import (
    DeleteRangeResponse,
    LeaseGrant,
    LeaseInfo,
    Member,
    PutResponse,
    RangeResponse,
    Status,
    TxnResponse,
)
from ..base import Cuttable
from ..policy import Failure, FollowsPolicy, Policy
from . import convert
from . import messages as pb
from .channels import Channels, grpc_ran_before_fork
from .failures import failure
from .keepalive import KeepAlives, NoAnswer
from .streams import SharedStream
from .watch import GrpcWatch, Hub

__all__ = ["GrpcTransport", "grpc_ran_before_fork"]

S = TypeVar("S", bound=SharedStream)

_IN_FLIGHT = 128  # ranges of one batch in flight at once (bounds what is buffered)
# A member without a leader then refuses at once instead of hanging.
_HAS_LEADER = ("hasleader", "true")
_INHERITED: list[Any] = []  # a forked child's copies of gRPC objects: never touched
# Each method's request and reply classes.
_TYPES: dict[str, tuple[Any, Any]] = {
    "Range": (pb.RangeRequest, pb.RangeResponse),
    "Put": (pb.PutRequest, pb.PutResponse),
    "DeleteRange": (pb.DeleteRangeRequest, pb.DeleteRangeResponse),
    "Txn": (pb.TxnRequest, pb.TxnResponse),
    "Compact": (pb.CompactionRequest, pb.CompactionResponse),
    "Watch": (pb.WatchRequest, pb.WatchResponse),
    "LeaseGrant": (pb.LeaseGrantRequest, pb.LeaseGrantResponse),
    "LeaseRevoke": (pb.LeaseRevokeRequest, pb.LeaseRevokeResponse),
    "LeaseKeepAlive": (pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse),
    "LeaseTimeToLive": (pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse),
    "MemberList": (pb.MemberListRequest, pb.MemberListResponse),
    "Status": (pb.StatusRequest, pb.StatusResponse),
    "Authenticate": (pb.AuthenticateRequest, pb.AuthenticateResponse),
}


class GrpcTransport(FollowsPolicy):
    """The v3 API over gRPC (``grpcio``); see :mod:`..base` for the contract."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float,
        retry_deadline: float,
        dial_window: float | None = None,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        verify: bool = True,
        credentials: tuple[str, str] | None = None,
    ):
        self.policy = Policy(endpoints, timeout=timeout, retry_deadline=retry_deadline,
                             dial_window=dial_window, credentials=credentials)
        self.policy.fetch_token = self._fetch_token
        if not verify and any(e.startswith("https://") for e in self.policy.endpoints.urls):
            raise ValueError("verify=False is not available over gRPC: give ca_cert= "
                             "(the CA that signed the server's certificate) instead")
        self._channels = Channels((ca_cert, cert, key), connect_timeout=timeout)
        self._methods: dict[tuple[str, str], Any] = {}
        self._hubs: dict[str, Hub] = {}  # endpoint -> its watch stream
        self._keepalives: dict[str, KeepAlives] = {}  # endpoint -> its keepalive stream
        self._streams_lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<GrpcTransport {self.endpoints!r}>"

    # -- lifecycle -----------------------------------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._forget()

    def _forget(self) -> None:
        """In a forked child: new locks, and none of the parent's gRPC objects (kept
        referenced, never closed or collected: that would touch gRPC's core)."""
        self.policy.after_fork()
        self._channels.after_fork()
        self._streams_lock = threading.Lock()
        _INHERITED.extend([*self._methods.values(), *self._hubs.values(),
                           *self._keepalives.values()])
        self._methods, self._hubs, self._keepalives = {}, {}, {}
        self._pid = os.getpid()

    def reset(self) -> None:
        """Start afresh: new channels and streams (watches on the old ones resume)."""
        if self._pid != os.getpid():
            self._forget()
        else:
            self.close()

    def close(self) -> None:
        """End the watch and keepalive streams and close the channels."""
        if self._pid != os.getpid():
            self._forget()
            return
        with self._streams_lock:
            streams = [*self._hubs.values(), *self._keepalives.values()]
            self._hubs, self._keepalives = {}, {}
            self._methods = {}
        for stream in streams:
            stream.close()
        self._channels.close()

    # -- calls ---------------------------------------------------------------------

    def _method(self, endpoint: str, name: str) -> Any:
        method = self._methods.get((endpoint, name))
        if method is None:
            request, reply = _TYPES[name]
            channel = self._channels.get(endpoint)
            path = pb.METHODS[name]
            if name in ("Watch", "LeaseKeepAlive"):
                method = channel.stream_stream(path, request_serializer=request.SerializeToString,
                                               response_deserializer=reply.FromString)
            else:
                method = channel.unary_unary(path, request_serializer=request.SerializeToString,
                                             response_deserializer=reply.FromString)
            self._methods[(endpoint, name)] = method
        return method

    @staticmethod
    def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
        return (_HAS_LEADER, ("token", token)) if token else (_HAS_LEADER,)

    def _unary(self, name: str, request: Any, *, idempotent: bool, endpoint: str | None = None,
               timeout: float | None = None, deadline: float | None = None,
               authenticating: bool = False) -> Any:
        self._check_fork()

        def attempt(target: str, token: str | None, budget: float) -> Any:
            try:
                return self._method(target, name)(request, timeout=budget,
                                                  metadata=self._metadata(token))
            except grpc.RpcError as exc:
                failed = failure(exc, target, idempotent, budget)
                if not failed.answered and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self._suspect(target)
                raise failed from None

        return self.policy.run(attempt, idempotent=idempotent, timeout=timeout,
                               deadline=deadline, endpoint=endpoint,
                               authenticating=authenticating)

    def _suspect(self, endpoint: str) -> None:
        """No answer in time: the connection may be dead without knowing it (a member
        stopped, a frozen link).  Later calls and streams dial afresh; streams on the
        old connection take no newcomers and end with their last user."""
        with self._streams_lock:
            streams = [s for s in (self._hubs.get(endpoint), self._keepalives.get(endpoint))
                       if s is not None]
            self._channels.drop(endpoint)
            self._methods = {k: v for k, v in self._methods.items() if k[0] != endpoint}
        for stream in streams:
            stream.retire()

    def _fetch_token(self) -> str:
        assert self.policy.credentials is not None
        name, password = self.policy.credentials
        reply = self._unary("Authenticate", pb.AuthenticateRequest(name=name, password=password),
                            idempotent=True, authenticating=True)
        if not reply.token:
            raise EtcdProtocolError("authenticate returned no token")
        return str(reply.token)

    def range(self, req: Range, *, endpoint: str | None = None, timeout: float | None = None,
              deadline: float | None = None) -> RangeResponse:
        """Read a key or a range."""
        return convert.range_reply(self._unary("Range", convert.range_request(req),
                                               idempotent=True, endpoint=endpoint,
                                               timeout=timeout, deadline=deadline))

    def ranges(self, reqs: Sequence[Range]) -> list[RangeResponse]:
        """Read several ranges, up to ``_IN_FLIGHT`` at once on the current member.

        A range that fails is read again on its own, by the policy's rules.
        """
        if len(reqs) < 2:
            return [self.range(req) for req in reqs]
        self._check_fork()
        self.policy.ensure_token()
        target, metadata = self.endpoint, self._metadata(self.policy.token)
        method = self._method(target, "Range")
        out: list[RangeResponse] = []
        for i in range(0, len(reqs), _IN_FLIGHT):
            batch = reqs[i:i + _IN_FLIGHT]
            calls = [method.future(convert.range_request(req), timeout=self.timeout,
                                   metadata=metadata) for req in batch]
            for req, call in zip(batch, calls, strict=True):
                try:
                    out.append(convert.range_reply(call.result()))
                except grpc.RpcError:
                    out.append(self.range(req))
        return out

    def put(self, req: Put) -> PutResponse:
        """Write one key."""
        return convert.put_reply(self._unary("Put", convert.put_request(req), idempotent=False))

    def delete_range(self, req: Delete) -> DeleteRangeResponse:
        """Delete a key or a range."""
        return convert.delete_reply(self._unary("DeleteRange", convert.delete_request(req),
                                                idempotent=False))

    def txn(self, req: Txn) -> TxnResponse:
        """Run a transaction (retried like a read when it only reads)."""
        read_only = all(isinstance(op, Range) for op in (*req.success, *req.failure))
        return convert.txn_reply(self._unary("Txn", convert.txn_request(req),
                                             idempotent=read_only))

    def compact(self, revision: int, physical: bool) -> None:
        """Discard the history before ``revision``."""
        self._unary("Compact", pb.CompactionRequest(revision=revision, physical=physical),
                    idempotent=False)

    def lease_grant(self, ttl: int, lease_id: int) -> LeaseGrant:
        """Grant a lease (``lease_id`` 0: the server picks one)."""
        # Safe to retry without an ID: a grant that did apply leaves an unused
        # lease, which expires by itself.
        reply = self._unary("LeaseGrant", pb.LeaseGrantRequest(TTL=ttl, ID=lease_id),
                            idempotent=not lease_id)
        return LeaseGrant(id=reply.ID, ttl=reply.TTL)

    def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease; the revision that deleted its keys."""
        reply = self._unary("LeaseRevoke", pb.LeaseRevokeRequest(ID=lease_id), idempotent=True)
        return int(reply.header.revision)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None,
                        deadline: float | None = None) -> int:
        """Refresh a lease once (on the client's shared stream); its new TTL, 0 when gone."""
        self._check_fork()

        def attempt(target: str, token: str | None, budget: float) -> int:
            stream = self._shared(self._keepalives, target, token, KeepAlives)
            try:
                return stream.refresh(lease_id, budget)
            except NoAnswer:
                self._suspect(target)
                stream.close()
                raise Failure(EtcdTimeout(f"no answer from {target} within {budget:.3g} s"),
                              ) from None
            except EtcdError as exc:
                cause = stream.cause
                if cause is not None and not isinstance(cause, EtcdError):
                    raise failure(cause, target, True, budget) from None
                raise Failure(exc) from None

        return self.policy.run(attempt, idempotent=True, timeout=timeout, deadline=deadline)

    def lease_time_to_live(self, lease_id: int, keys: bool) -> LeaseInfo:
        """A lease's remaining TTL (-1 when it is gone) and, optionally, its keys."""
        return convert.time_to_live(self._unary(
            "LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=lease_id, keys=keys),
            idempotent=True))

    def member_list(self) -> list[Member]:
        """The cluster's members."""
        return convert.members(self._unary("MemberList", pb.MemberListRequest(),
                                           idempotent=True))

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status."""
        return convert.status(self._unary("Status", pb.StatusRequest(), idempotent=True,
                                          endpoint=endpoint))

    def version(self, endpoint: str | None = None) -> dict[str, str]:
        """``{"etcdserver": ..., "etcdcluster": ...}`` of one member, from its status.

        etcd's gRPC API does not report the cluster version: ``etcdcluster`` is
        the member's own ``major.minor.0``, which is the cluster's unless a
        rolling upgrade is under way.
        """
        # One attempt, as the gateway's GET /version: callers ask again later.
        server = convert.status(self._unary("Status", pb.StatusRequest(), idempotent=True,
                                            endpoint=endpoint, deadline=0)).version
        major, _, rest = server.partition(".")
        return {"etcdserver": server, "etcdcluster": f"{major}.{rest.partition('.')[0]}.0"}

    # -- watches -------------------------------------------------------------------

    def _shared(self, streams: dict[str, S], endpoint: str, token: str | None,
                kind: type[S]) -> S:
        """The stream of ``kind`` to ``endpoint`` that carries ``token``; a new one if needed."""
        stream = streams.get(endpoint)
        if stream is not None and stream.alive and stream.token == token:
            return stream
        with self._streams_lock:
            stream = streams.get(endpoint)
            if stream is not None and stream.alive and stream.token == token:
                return stream
            if stream is not None:
                stream.retire()
            method = self._method(endpoint, kind.method)
            metadata = self._metadata(token)

            def open_stream(requests: Iterator[Any]) -> Any:
                return method(requests, metadata=metadata)

            stream = streams[endpoint] = kind(endpoint, open_stream, token)
            return stream

    def watch(self, req: WatchCreate, *, endpoint: str | None = None,
              on_opening: Callable[[Cuttable], None] | None = None) -> GrpcWatch:
        """Start a watch on one member's shared stream, once etcd confirms or refuses it."""
        self._check_fork()
        endpoint = endpoint or self.endpoint

        def open_with(token: str | None) -> GrpcWatch:
            watch = self._shared(self._hubs, endpoint, token, Hub).add(req)
            if on_opening is not None:
                on_opening(watch)
            try:
                watch.wait_created(self.policy.timeout)
            except EtcdTimeout:
                self._suspect(endpoint)
                raise
            return watch

        return self.policy.renewing_once(open_with)
