"""Parsing the gateway's replies into records, in one guarded place.

Zero-valued fields are omitted by the gateway and int64s arrive as strings;
any reply whose shape is wrong becomes :class:`EtcdProtocolError`, never a raw
``AttributeError`` or ``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import EtcdError, EtcdProtocolError, error_from_frame
from ..ops import Delete, Op, Put, Range, Txn, as_int, unb64
from ..records import (
    DeleteRangeResponse,
    KeyValue,
    LeaseGrant,
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

T = TypeVar("T")

if sys.version_info >= (3, 11):
    def _a2b(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)
else:  # pragma: no cover - Python 3.10
    def _a2b(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


def guarded(parse: Callable[[Mapping[str, Any]], T], body: Mapping[str, Any], what: str) -> T:
    """``parse(body)``, with a malformed reply reported as :class:`EtcdProtocolError`."""
    try:
        return parse(body)
    except EtcdError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise EtcdProtocolError(f"malformed {what} reply: {exc}") from exc
    except RecursionError:
        raise EtcdProtocolError(f"absurdly nested {what} reply") from None


def header_revision(body: Mapping[str, Any]) -> int:
    """The store revision from a response's header."""
    header = body.get("header") or {}
    return as_int(header.get("revision"))


_new = tuple.__new__


def parse_kv(raw: Mapping[str, Any]) -> KeyValue:
    """A ``mvccpb.KeyValue``; absent fields are zero.  (The hot path of every scan.)"""
    try:
        get = raw.get
        value = get("value")
        return _new(KeyValue, (  # KeyValue's own __new__ is Python code: slower per key
            _a2b(get("key", "")),
            _a2b(value) if value else b"",
            int(get("create_revision", 0)),
            int(get("mod_revision", 0)),
            int(get("version", 0)),
            int(get("lease", 0)),
        ))
    except (AttributeError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise EtcdProtocolError(f"malformed key-value in response: {exc}") from exc


def _kvs(raw: object) -> tuple[KeyValue, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise EtcdProtocolError("expected a list of key-values")
    return tuple(parse_kv(kv) for kv in raw)


def parse_range(body: Mapping[str, Any]) -> RangeResponse:
    """A range response."""
    return RangeResponse(
        kvs=_kvs(body.get("kvs")),
        count=as_int(body.get("count")),
        more=bool(body.get("more", False)),
        revision=header_revision(body),
    )


def parse_put(body: Mapping[str, Any]) -> PutResponse:
    """A put response."""
    prev = body.get("prev_kv")
    return PutResponse(revision=header_revision(body), prev_kv=parse_kv(prev) if prev else None)


def parse_delete(body: Mapping[str, Any]) -> DeleteRangeResponse:
    """A delete-range response."""
    return DeleteRangeResponse(
        revision=header_revision(body),
        deleted=as_int(body.get("deleted")),
        prev_kvs=_kvs(body.get("prev_kvs")),
    )


_PARSERS: dict[str, Any] = {
    "response_range": parse_range,
    "response_put": parse_put,
    "response_delete_range": parse_delete,
}


def parse_txn(body: Mapping[str, Any], revision: int | None = None) -> TxnResponse:
    """A txn response; nested headers carry no revision, so the outer one is used."""
    rev = header_revision(body) if revision is None else revision
    responses: list[OpResponse] = []
    for item in body.get("responses") or ():
        if not isinstance(item, dict) or len(item) != 1:
            raise EtcdProtocolError("malformed txn response op")
        (name, inner), = item.items()
        if name == "response_txn":
            responses.append(parse_txn(inner, rev))
        elif name in _PARSERS:
            responses.append(_PARSERS[name](inner))
        else:
            raise EtcdProtocolError(f"unknown txn response {name!r}")
    # 'succeeded' is omitted when false.
    return TxnResponse(succeeded=bool(body.get("succeeded", False)), revision=rev,
                       responses=tuple(responses))


def parse_lease_grant(body: Mapping[str, Any]) -> LeaseGrant:
    """A lease grant."""
    return LeaseGrant(id=as_int(body.get("ID")), ttl=as_int(body.get("TTL")))


def parse_keepalive(body: Mapping[str, Any]) -> int:
    """A keepalive's new TTL; 0 when the lease is gone (TTL omitted)."""
    result = body.get("result", body)
    return max(as_int(result.get("TTL")), 0)


def parse_time_to_live(body: Mapping[str, Any]) -> LeaseInfo:
    """A lease's remaining TTL (-1 when gone) and keys."""
    # A live lease in its last second omits TTL (zero); a gone one says -1.
    ttl = as_int(body.get("TTL"), 0 if "grantedTTL" in body else -1)
    return LeaseInfo(id=as_int(body.get("ID")), ttl=ttl,
                     granted_ttl=as_int(body.get("grantedTTL")),
                     keys=tuple(unb64(k) for k in body.get("keys") or ()))


def parse_watch_message(message: object) -> WatchReply:
    """One JSON message of the gateway's watch stream; an error frame is raised."""
    if not isinstance(message, dict):
        raise EtcdProtocolError("watch message is not an object")
    if "error" in message:
        raise error_from_frame(message["error"])
    result = message.get("result")
    if not isinstance(result, dict):
        raise EtcdProtocolError("watch message without result")
    return guarded(_parse_watch_result, result, "watch")


def _parse_watch_result(result: Mapping[str, Any]) -> WatchReply:
    changes = []
    for raw in result.get("events") or ():
        prev = raw.get("prev_kv")
        changes.append(WatchChange("DELETE" if raw.get("type") == "DELETE" else "PUT",
                                   parse_kv(raw.get("kv") or {}),
                                   parse_kv(prev) if prev else None))
    return WatchReply(revision=header_revision(result), changes=tuple(changes),
                      created=bool(result.get("created", False)),
                      canceled=bool(result.get("canceled", False)),
                      compact_revision=as_int(result.get("compact_revision")),
                      cancel_reason=str(result.get("cancel_reason", "")))


def parse_members(body: Mapping[str, Any]) -> list[Member]:
    """A member list."""
    return [Member(id=as_int(m.get("ID")), name=str(m.get("name", "")),
                   peer_urls=tuple(str(u) for u in m.get("peerURLs") or ()),
                   client_urls=tuple(str(u) for u in m.get("clientURLs") or ()),
                   is_learner=bool(m.get("isLearner", False)))
            for m in body.get("members") or ()]


def parse_status(body: Mapping[str, Any]) -> Status:
    """A member's status."""
    header = body.get("header") or {}
    return Status(version=str(body.get("version", "")), member_id=as_int(header.get("member_id")),
                  leader=as_int(body.get("leader")), raft_term=as_int(body.get("raftTerm")),
                  revision=as_int(header.get("revision")), db_size=as_int(body.get("dbSize")),
                  errors=tuple(str(e) for e in body.get("errors") or ()))


def changed(resp: TxnResponse) -> bool:
    """Whether a transaction changed anything (else etcd's revision did not move)."""
    for r in resp.responses:
        if isinstance(r, PutResponse) or (isinstance(r, DeleteRangeResponse) and r.deleted):
            return True
        if isinstance(r, TxnResponse) and changed(r):
            return True
    return False


_REPLY_OF = {Range: RangeResponse, Put: PutResponse, Delete: DeleteRangeResponse, Txn: TxnResponse}


def check_txn(resp: TxnResponse, ops: Sequence[Op]) -> None:
    """A txn reply holds one response per op of the branch that ran, of the right kind."""
    if len(resp.responses) != len(ops) or any(
            not isinstance(r, _REPLY_OF[type(op)])
            for r, op in zip(resp.responses, ops, strict=True)):
        raise EtcdProtocolError(
            f"a transaction of {len(ops)} ops got {len(resp.responses)} answers "
            "that do not match them")
