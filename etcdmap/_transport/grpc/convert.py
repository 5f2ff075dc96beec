"""Requests to protobuf messages and protobuf replies to records: the gRPC wire, no I/O.

The twin of the gateway's JSON (``ops.*.to_wire`` and ``_wire.replies``): the
same requests in, the same records out, so the layers above cannot tell the
transports apart.  Protobuf already gives integers as ints and bytes as
bytes; what is left is choosing fields and building records.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from ...ops import Compare, Delete, Op, Put, Range, Txn, WatchCreate
from ...records import (
    DeleteRangeResponse,
    KeyValue,
    LeaseInfo,
    Member,
    OpResponse,
    PutResponse,
    RangeResponse,
    Status,
    TxnResponse,
    WatchChange,
    WatchReply,
)
from . import messages as pb

__all__ = [
    "delete_reply", "delete_request", "members", "put_reply", "put_request", "range_reply",
    "range_request", "status", "time_to_live", "txn_reply", "txn_request", "watch_create",
    "watch_reply",
]

_SORT_ORDER = {"NONE": 0, "ASCEND": 1, "DESCEND": 2}
_SORT_TARGET = {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4}
_RESULT = {"==": 0, "EQUAL": 0, ">": 1, "GREATER": 1, "<": 2, "LESS": 2,
           "!=": 3, "NOT_EQUAL": 3}
_TARGET = {"VERSION": (0, "version"), "CREATE": (1, "create_revision"),
           "MOD": (2, "mod_revision"), "VALUE": (3, "value"), "LEASE": (4, "lease")}
_DELETE = 1  # Event.EventType.DELETE


# -- requests ----------------------------------------------------------------------


def range_request(req: Range) -> Any:
    """A ``RangeRequest``."""
    return pb.RangeRequest(key=req.key, range_end=req.range_end or b"", limit=req.limit,
                           revision=req.revision, keys_only=req.keys_only,
                           count_only=req.count_only, serializable=req.serializable,
                           sort_order=_SORT_ORDER[req.sort_order],
                           sort_target=_SORT_TARGET[req.sort_target])


def put_request(req: Put) -> Any:
    """A ``PutRequest``."""
    return pb.PutRequest(key=req.key, value=req.value, lease=req.lease, prev_kv=req.prev_kv)


def delete_request(req: Delete) -> Any:
    """A ``DeleteRangeRequest``."""
    return pb.DeleteRangeRequest(key=req.key, range_end=req.range_end or b"",
                                 prev_kv=req.prev_kv)


def _compare(c: Compare) -> Any:
    target, field = _TARGET[c.target]
    msg = pb.Compare(key=c.key, target=target, result=_RESULT[c.result],
                     range_end=c.range_end or b"")
    setattr(msg, field, c.operand)
    return msg


def _op(op: Op) -> Any:
    if isinstance(op, Range):
        return pb.RequestOp(request_range=range_request(op))
    if isinstance(op, Put):
        return pb.RequestOp(request_put=put_request(op))
    if isinstance(op, Delete):
        return pb.RequestOp(request_delete_range=delete_request(op))
    return pb.RequestOp(request_txn=txn_request(op))


def txn_request(req: Txn) -> Any:
    """A ``TxnRequest`` (nested transactions too)."""
    return pb.TxnRequest(compare=[_compare(c) for c in req.compare],
                         success=[_op(op) for op in req.success],
                         failure=[_op(op) for op in req.failure])


def watch_create(req: WatchCreate) -> Any:
    """The ``WatchRequest`` that opens this watch."""
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=req.key, range_end=req.range_end or b"", start_revision=req.start_revision,
        prev_kv=req.prev_kv, progress_notify=req.progress_notify))


# -- replies -----------------------------------------------------------------------


# The fields of a mvccpb.KeyValue in KeyValue's order, read in one C call.
_FIELDS = operator.attrgetter("key", "value", "create_revision", "mod_revision", "version",
                              "lease")
_new = tuple.__new__  # KeyValue's own __new__ is Python code: twice the cost per key


def kv(m: Any) -> KeyValue:
    """A ``mvccpb.KeyValue`` as a record."""
    return KeyValue(*_FIELDS(m))


def _kvs(items: Sequence[Any]) -> tuple[KeyValue, ...]:
    # The hot path of every scan: one tuple per key, built without Python calls.
    return tuple([_new(KeyValue, _FIELDS(m)) for m in items])


def range_reply(r: Any, revision: int | None = None) -> RangeResponse:
    """A ``RangeResponse`` as a record."""
    return RangeResponse(kvs=_kvs(r.kvs), count=r.count, more=r.more,
                         revision=r.header.revision if revision is None else revision)


def put_reply(r: Any, revision: int | None = None) -> PutResponse:
    """A ``PutResponse`` as a record."""
    return PutResponse(revision=r.header.revision if revision is None else revision,
                       prev_kv=kv(r.prev_kv) if r.HasField("prev_kv") else None)


def delete_reply(r: Any, revision: int | None = None) -> DeleteRangeResponse:
    """A ``DeleteRangeResponse`` as a record."""
    return DeleteRangeResponse(revision=r.header.revision if revision is None else revision,
                               deleted=r.deleted, prev_kvs=_kvs(r.prev_kvs))


def txn_reply(r: Any, revision: int | None = None) -> TxnResponse:
    """A ``TxnResponse``; nested replies carry the outer revision, as the gateway's do."""
    rev = r.header.revision if revision is None else revision
    out: list[OpResponse] = []
    for item in r.responses:
        which = item.WhichOneof("response")
        if which == "response_range":
            out.append(range_reply(item.response_range, rev))
        elif which == "response_put":
            out.append(put_reply(item.response_put, rev))
        elif which == "response_delete_range":
            out.append(delete_reply(item.response_delete_range, rev))
        else:
            out.append(txn_reply(item.response_txn, rev))
    return TxnResponse(succeeded=r.succeeded, revision=rev, responses=tuple(out))


def time_to_live(r: Any) -> LeaseInfo:
    """A ``LeaseTimeToLiveResponse`` (TTL -1: the lease is gone)."""
    return LeaseInfo(id=r.ID, ttl=r.TTL, granted_ttl=r.grantedTTL, keys=tuple(r.keys))


def members(r: Any) -> list[Member]:
    """A ``MemberListResponse``."""
    return [Member(id=m.ID, name=m.name, peer_urls=tuple(m.peerURLs),
                   client_urls=tuple(m.clientURLs), is_learner=m.isLearner)
            for m in r.members]


def status(r: Any) -> Status:
    """A ``StatusResponse``."""
    return Status(version=r.version, member_id=r.header.member_id, leader=r.leader,
                  raft_term=r.raftTerm, revision=r.header.revision, db_size=r.dbSize,
                  errors=tuple(r.errors))


def watch_reply(r: Any) -> WatchReply:
    """A ``WatchResponse`` as a record."""
    changes = tuple(WatchChange("DELETE" if e.type == _DELETE else "PUT", kv(e.kv),
                                kv(e.prev_kv) if e.HasField("prev_kv") else None)
                    for e in r.events)
    return WatchReply(revision=r.header.revision, changes=changes, created=r.created,
                      canceled=r.canceled, compact_revision=r.compact_revision,
                      cancel_reason=r.cancel_reason)
