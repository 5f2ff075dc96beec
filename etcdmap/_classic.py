"""The calls of the classic etcd-py client, on etcd's v3 API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import EtcdCompareFailed, EtcdKeyError
from .ops import Compare, Put, Range, to_bytes
from .records import DeleteResult, Event, GetResult, RangeResponse, SetResult

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .ops import Op
    from .records import (
        DeleteRangeResponse,
        KeyValue,
        LeaseGrant,
        PutResponse,
        TxnResponse,
    )
    from .watch import Watcher

__all__ = ["ClassicMixin", "like"]

K = TypeVar("K", str, bytes)


def like(template: str | bytes, data: bytes) -> Any:
    """``data`` as ``str`` when ``template`` is a ``str``."""
    return data.decode("utf-8", "surrogateescape") if isinstance(template, str) else data


def _dir(path: str | bytes) -> bytes:
    """The prefix of the keys under ``path`` (``"a"`` and ``"a/"`` both give ``b"a/"``)."""
    return to_bytes(path).rstrip(b"/") + b"/"


class ClassicMixin:
    """``set``/``get``/``delete``/``testandset``/``list``/``get_recursive``/``watch``."""

    if TYPE_CHECKING:
        def range(self, key: str | bytes, range_end: str | bytes | None = None, *,
                  prefix: bool = False, limit: int = 0, revision: int = 0,
                  keys_only: bool = False, count_only: bool = False,
                  serializable: bool = False, sort_order: Any = "NONE",
                  sort_target: Any = "KEY") -> RangeResponse: ...
        def range_iter(self, key: str | bytes, range_end: str | bytes | None = None, *,
                       prefix: bool = False, revision: int = 0, keys_only: bool = False,
                       page_size: int = 1000) -> Iterator[KeyValue]: ...
        def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0,
                prev_kv: bool = False) -> PutResponse: ...
        def delete_range(self, key: str | bytes, range_end: str | bytes | None = None, *,
                         prefix: bool = False, prev_kv: bool = False) -> DeleteRangeResponse: ...
        def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
                failure: Sequence[Op] = ()) -> TxnResponse: ...
        def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseGrant: ...
        def watch_iter(self, key: K, *, prefix: bool = False,
                       start_revision: int | None = None, prev_kv: bool = False,
                       read_timeout: float = 60.0) -> Watcher[K]: ...
        max_txn_ops: int

    def set(self, key: K, value: K, ttl: int | None = None) -> SetResult[K]:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds when given."""
        lease = self.lease_grant(ttl) if ttl is not None else None
        resp = self.put(key, value, lease=lease.id if lease else 0, prev_kv=True)
        expiration = (datetime.now(timezone.utc) + timedelta(seconds=lease.ttl)) if lease else None
        prev = resp.prev_kv
        return SetResult(key=key, value=value, revision=resp.revision,
                         prev_value=like(key, prev.value) if prev else None,
                         new_key=prev is None, expiration=expiration)

    def get(self, key: K) -> GetResult[K]:
        """The value at ``key``; :class:`EtcdKeyError` when absent."""
        resp = self.range(key)
        if not resp.kvs:
            raise EtcdKeyError(key)
        kv = resp.kvs[0]
        return GetResult(key=key, value=like(key, kv.value), revision=kv.mod_revision,
                         version=kv.version, lease=kv.lease)

    def delete(self, key: K) -> DeleteResult[K]:
        """Delete ``key``; :class:`EtcdKeyError` when absent."""
        resp = self.delete_range(key, prev_kv=True)
        if not resp.deleted:
            raise EtcdKeyError(key)
        prev = resp.prev_kvs[0].value if resp.prev_kvs else b""
        return DeleteResult(key=key, prev_value=like(key, prev), revision=resp.revision)

    def testandset(self, key: K, prev_value: K, value: K) -> SetResult[K]:
        """Set ``key`` to ``value`` only if it holds ``prev_value`` (atomically).

        Raises :class:`EtcdKeyError` when the key is absent and
        :class:`EtcdCompareFailed` when it holds something else.
        """
        k = to_bytes(key)
        resp = self.txn([Compare(k, "VALUE", "==", to_bytes(prev_value))],
                        [Put(k, to_bytes(value))], [Range(k)])
        if not resp.succeeded:
            current = resp.responses[0]
            assert isinstance(current, RangeResponse)
            if not current.kvs:
                raise EtcdKeyError(key)
            raise EtcdCompareFailed(f"{key!r} does not hold the expected value")
        return SetResult(key=key, value=value, prev_value=prev_value,
                         revision=resp.revision, new_key=False)

    test_and_set = testandset

    def list(self, path: K) -> list[K]:
        """The immediate children of ``path`` (full keys, each once, sorted)."""
        base = _dir(path)
        children: dict[bytes, None] = {}
        for kv in self.range_iter(base, prefix=True, keys_only=True):
            head, _, _ = kv.key[len(base):].partition(b"/")
            children[base + head] = None
        return [like(path, child) for child in children]

    def get_recursive(self, path: K) -> dict[K, K]:
        """Every key under ``path`` (``path/...``) with its value, flat, at one revision."""
        base = _dir(path)
        return {like(path, kv.key): like(path, kv.value)
                for kv in self.range_iter(base, prefix=True)}

    def watch(self, key: K, timeout: float | None = None, *, prefix: bool = False,
              start_revision: int | None = None) -> Event[K] | None:
        """Block for the next change of ``key``; ``None`` after ``timeout`` seconds."""
        with self.watch_iter(key, prefix=prefix, start_revision=start_revision,
                             prev_kv=True) as watcher:
            return watcher.next_event(timeout)


    def get_many(self, keys: Sequence[K]) -> dict[K, K]:
        """The values of the present ``keys``, read in as few transactions as fit."""
        out: dict[K, K] = {}
        step = max(self.max_txn_ops, 1)
        for i in range(0, len(keys), step):
            chunk = keys[i:i + step]
            resp = self.txn(success=[Range(to_bytes(k)) for k in chunk])
            for key, r in zip(chunk, resp.responses, strict=True):
                if isinstance(r, RangeResponse) and r.kvs:
                    out[key] = like(key, r.kvs[0].value)
        return out
