"""Pure, IO-free pieces of etcd's v3 JSON API: encoding, requests and parsing.

Keys and values travel as standard padded base64; int64 fields come back as
decimal strings; zero-valued fields are omitted.  This module is the one place
that knows it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import EtcdProtocolError

__all__ = [
    "Compare",
    "Delete",
    "Put",
    "Range",
    "Txn",
    "WatchCreate",
    "b64",
    "prefix_end",
    "to_bytes",
]

SortOrder = Literal["NONE", "ASCEND", "DESCEND"]
SortTarget = Literal["KEY", "VERSION", "CREATE", "MOD", "VALUE"]
CompareTarget = Literal["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
CompareResult = Literal["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
JSON = dict[str, Any]

ALL_KEYS = b"\0"  # as range_end: every key >= key; as key and range_end: the keyspace
_RESULTS: dict[str, CompareResult] = {
    "==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS",
    "EQUAL": "EQUAL", "NOT_EQUAL": "NOT_EQUAL", "GREATER": "GREATER", "LESS": "LESS",
}
_TARGET_FIELD: dict[str, str] = {
    "VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
    "VALUE": "value", "LEASE": "lease",
}


def to_bytes(data: str | bytes | bytearray | memoryview) -> bytes:
    """UTF-8 encode a ``str``; pass bytes-like objects through as ``bytes``."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected str or bytes, not {type(data).__name__}")


def b64(data: bytes) -> str:
    """Standard, padded base64 of ``data`` as the gateway expects it."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    """Decode a base64 field from the gateway."""
    if not isinstance(text, str):
        raise EtcdProtocolError(f"expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EtcdProtocolError("invalid base64 in response") from exc


def as_int(value: object, default: int = 0) -> int:
    """An int64 field, which the gateway sends as a decimal string (or omits)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise EtcdProtocolError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise EtcdProtocolError(f"expected an integer, got {value!r}") from exc


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers exactly the keys starting with ``prefix``."""
    end = prefix.rstrip(b"\xff")
    if not end:
        return ALL_KEYS  # empty prefix or all 0xff: to the end of the keyspace
    return end[:-1] + bytes([end[-1] + 1])


_SORT_ORDERS = frozenset(get_args(SortOrder))
_SORT_TARGETS = frozenset(get_args(SortTarget))
_COMPARE_TARGETS = frozenset(get_args(CompareTarget))


def _body(key: bytes, range_end: bytes | None = None, **fields: Any) -> JSON:
    """A request body: the key (and range end) in base64, and the fields that are set.

    The gateway reads an absent field as zero, so zero, false and "NONE"/"KEY"
    defaults are left out.
    """
    body: JSON = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    body.update((name, value) for name, value in fields.items()
                if value not in (0, False, None, "NONE", "KEY"))
    return body


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    # Enums are validated here: an out-of-range sort_target crashes etcd 3.4/3.5.
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}; expected one of {sorted(allowed)}")


@dataclass(frozen=True, slots=True)
class Range:
    """A range request: one key, or ``[key, range_end)``."""

    key: bytes
    range_end: bytes | None = None
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False
    serializable: bool = False
    sort_order: SortOrder = "NONE"
    sort_target: SortTarget = "KEY"

    def __post_init__(self) -> None:
        _check(self.sort_order, _SORT_ORDERS, "sort_order")
        _check(self.sort_target, _SORT_TARGETS, "sort_target")
        if self.limit < 0 or self.revision < 0:
            raise ValueError("limit and revision must not be negative")

    def to_wire(self) -> JSON:
        """The JSON body of this request (``sort_target`` alone sorts ascending by it)."""
        return _body(self.key, self.range_end, limit=self.limit, revision=self.revision,
                     keys_only=self.keys_only, count_only=self.count_only,
                     serializable=self.serializable, sort_order=self.sort_order,
                     sort_target=self.sort_target)


@dataclass(frozen=True, slots=True)
class Put:
    """A put request."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False

    def to_wire(self) -> JSON:
        """The JSON body of this request."""
        return _body(self.key, value=b64(self.value), lease=self.lease, prev_kv=self.prev_kv)


@dataclass(frozen=True, slots=True)
class Delete:
    """A delete request: one key, or ``[key, range_end)``."""

    key: bytes
    range_end: bytes | None = None
    prev_kv: bool = False

    def to_wire(self) -> JSON:
        """The JSON body of this request."""
        return _body(self.key, self.range_end, prev_kv=self.prev_kv)


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction guard, e.g. ``Compare(k, "VERSION", "==", 0)`` (k is absent)."""

    key: bytes
    target: CompareTarget
    result: str
    operand: int | bytes
    range_end: bytes | None = None

    def __post_init__(self) -> None:
        _check(self.target, _COMPARE_TARGETS, "compare target")
        if self.result not in _RESULTS:
            raise ValueError(f"invalid compare result {self.result!r}")
        wants_bytes = self.target == "VALUE"
        if wants_bytes != isinstance(self.operand, bytes):
            kind = "bytes" if wants_bytes else "an int"
            raise TypeError(f"a {self.target} compare takes {kind}")

    def to_wire(self) -> JSON:
        """The JSON body of this compare; target and result always explicit."""
        body: JSON = {
            "key": b64(self.key),
            "target": self.target,
            "result": _RESULTS[self.result],
        }
        field = _TARGET_FIELD[self.target]
        body[field] = b64(self.operand) if isinstance(self.operand, bytes) else self.operand
        if self.range_end is not None:
            body["range_end"] = b64(self.range_end)
        return body


@dataclass(frozen=True, slots=True)
class Txn:
    """A transaction: if every compare holds run ``success``, else ``failure``."""

    compare: Sequence[Compare] = ()
    success: Sequence[Op] = ()
    failure: Sequence[Op] = ()

    def to_wire(self) -> JSON:
        """The JSON body of this transaction."""
        return {
            "compare": [c.to_wire() for c in self.compare],
            "success": [op_to_wire(op) for op in self.success],
            "failure": [op_to_wire(op) for op in self.failure],
        }


@dataclass(frozen=True, slots=True)
class WatchCreate:
    """A watch request: ``key`` or ``[key, range_end)``, from ``start_revision`` (0: now)."""

    key: bytes
    range_end: bytes | None = None
    start_revision: int = 0
    prev_kv: bool = False
    progress_notify: bool = False

    def to_wire(self) -> JSON:
        """The JSON body that opens this watch on the gateway."""
        return {"create_request": _body(
            self.key, self.range_end, start_revision=self.start_revision,
            prev_kv=self.prev_kv, progress_notify=self.progress_notify)}


Op = Range | Put | Delete | Txn
_OP_NAMES: dict[type, str] = {
    Range: "request_range", Put: "request_put", Delete: "request_delete_range", Txn: "request_txn",
}


def op_to_wire(op: Op) -> JSON:
    """One transaction op, wrapped as the gateway expects."""
    return {_OP_NAMES[type(op)]: op.to_wire()}


def subtract_points(
    ranges: Iterable[tuple[bytes, bytes]], points: Iterable[bytes]
) -> list[tuple[bytes, bytes]]:
    """Merge half-open key ranges and cut single keys out of them, dropping empties."""
    # Internally an end of None is "to the end of the keyspace" (ALL_KEYS on the wire).
    spans: list[tuple[bytes, bytes | None]] = sorted(
        ((s, None if e == ALL_KEYS else e) for s, e in ranges), key=lambda r: r[0]
    )
    merged: list[tuple[bytes, bytes | None]] = []
    for start, end in spans:
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None or start <= last_end:
                wider = None if last_end is None or end is None else max(last_end, end)
                merged[-1] = (last_start, wider)
                continue
        merged.append((start, end))
    cut = sorted(set(points))
    out: list[tuple[bytes, bytes]] = []
    for start, end in merged:
        # Only the points inside this range, found by bisection: O((n + m) log m).
        lo = bisect.bisect_left(cut, start)
        hi = len(cut) if end is None else bisect.bisect_left(cut, end, lo)
        for p in cut[lo:hi]:
            if start < p:
                out.append((start, p))
            start = p + b"\0"
        if end is None or start < end:
            out.append((start, ALL_KEYS if end is None else end))
    return out
