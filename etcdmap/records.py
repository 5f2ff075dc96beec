"""Immutable records returned by :class:`~etcdmap.client.EtcdClient`.

Two families: the v3 records mirror etcd's protobuf messages with keys and
values as ``bytes``; the classic records (``SetResult`` ...) are the etcd-py
shapes, with ``str`` or ``bytes`` keys and values as the caller passed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, NamedTuple, TypeVar

__all__ = [
    "DeleteRangeResponse",
    "DeleteResult",
    "Event",
    "GetResult",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "Member",
    "Node",
    "PutResponse",
    "RangeResponse",
    "SetResult",
    "Status",
    "TxnResponse",
]

K = TypeVar("K", str, bytes)
EventType = Literal["PUT", "DELETE"]


class KeyValue(NamedTuple):
    """One key as stored by etcd (a named tuple: scans build many of them)."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResponse:
    """The keys of a range; ``count`` is the total before ``limit``."""

    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int


@dataclass(frozen=True, slots=True)
class PutResponse:
    """A completed put; ``prev_kv`` when asked for and the key existed."""

    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    """A completed delete: how many keys went, and which when asked for."""

    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """A completed transaction and the responses of the branch that ran."""

    succeeded: bool
    revision: int
    responses: tuple[OpResponse, ...] = ()


OpResponse = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A granted lease."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease's remaining ``ttl`` (-1 when it is gone) and its keys."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    """A member's view of itself and of the cluster."""

    version: str
    member_id: int
    leader: int
    raft_term: int
    revision: int
    db_size: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WatchChange:
    """One event of a watch reply as etcd sent it: raw keys and values."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class WatchReply:
    """One message of a watch stream, whatever the transport.

    ``created`` confirms the watch; ``canceled`` ends it (with
    ``compact_revision`` when its start was compacted); a reply with neither
    and no ``changes`` is a progress notification: everything up to
    ``revision`` was sent.
    """

    revision: int
    changes: tuple[WatchChange, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""


@dataclass(frozen=True, slots=True)
class SetResult(Generic[K]):
    """Result of ``set``/``testandset``; ``expiration`` when a TTL was set."""

    key: K
    value: K
    prev_value: K | None
    revision: int
    new_key: bool
    expiration: datetime | None = None


@dataclass(frozen=True, slots=True)
class GetResult(Generic[K]):
    """Result of ``get``; ``revision`` is the key's last modification."""

    key: K
    value: K
    revision: int
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Node(Generic[K]):
    """One child in ``list()``: a key with its value, or a directory (``value`` None).

    ``revision`` is the key's last modification; for a directory, the
    revision the listing was read at.
    """

    key: K
    value: K | None
    dir: bool
    revision: int


@dataclass(frozen=True, slots=True)
class DeleteResult(Generic[K]):
    """Result of ``delete``."""

    key: K
    prev_value: K | None
    revision: int


@dataclass(frozen=True, slots=True)
class Event(Generic[K]):
    """One change seen by a watch; a DELETE has ``value`` ``None``."""

    type: EventType
    key: K
    value: K | None
    prev_value: K | None
    revision: int
    kv: KeyValue = field(repr=False, compare=False, default=KeyValue(b""))
