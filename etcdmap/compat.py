"""The calls of the classic etcd-py client, on etcd's v3 API."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from ._settings import check_wait
from .errors import EtcdCompareFailed, EtcdKeyError, EtcdUnavailable
from .ops import Compare, Put, Range, prefix_end, to_bytes
from .records import DeleteResult, Event, GetResult, Node, RangeResponse, SetResult

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Sequence

    from ._settings import PAGE_SIZE, READ_TIMEOUT
    from .ops import Op
    from .records import (
        DeleteRangeResponse,
        KeyValue,
        LeaseGrant,
        Member,
        PutResponse,
        Status,
        TxnResponse,
    )
    from .watch import Watcher

__all__ = ["ClassicMixin", "like"]

K = TypeVar("K", str, bytes)


def like(template: str | bytes, data: bytes) -> Any:
    """``data`` as ``str`` when ``template`` is a ``str``."""
    return data.decode("utf-8", "surrogateescape") if isinstance(template, str) else data


def _text(key: K, value: object, what: str) -> K:
    """A classic value: ``str``/``bytes`` as given; an int or float as its ``str()`` (etcd-py)."""
    if isinstance(value, (str, bytes)):
        return value  # type: ignore[return-value]
    if isinstance(value, (int, float)):
        return like(key, str(value).encode())  # type: ignore[no-any-return]
    raise TypeError(f"{what} must be str, bytes, int or float, not {type(value).__name__}")


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
                       page_size: int = PAGE_SIZE) -> Iterator[KeyValue]: ...
        def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0,
                prev_kv: bool = False) -> PutResponse: ...
        def delete_range(self, key: str | bytes, range_end: str | bytes | None = None, *,
                         prefix: bool = False, prev_kv: bool = False) -> DeleteRangeResponse: ...
        def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
                failure: Sequence[Op] = ()) -> TxnResponse: ...
        def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseGrant: ...
        def range_many(self, ranges: Sequence[Range]) -> list[RangeResponse]: ...
        def members(self) -> list[Member]: ...
        def status(self, endpoint: str | None = None) -> Status: ...
        def pages(self, key: bytes, range_end: bytes | None, *, revision: int = 0,
                  keys_only: bool = False,
                  page_size: int = PAGE_SIZE) -> Generator[RangeResponse, bytes | None, None]: ...
        def watch_iter(self, key: K, *, prefix: bool = False,
                       start_revision: int | None = None, prev_kv: bool = False,
                       read_timeout: float = READ_TIMEOUT) -> Watcher[K]: ...
        max_txn_ops: int

    def set(self, key: K, value: K | int | float, ttl: int | None = None) -> SetResult[K]:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds when given.

        An ``int`` or ``float`` value is stored as its ``str()``, as etcd-py did.
        """
        value = _text(key, value, "value")
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

    def testandset(self, key: K, prev_value: K | int | float,
                   value: K | int | float) -> SetResult[K]:
        """Set ``key`` to ``value`` only if it holds ``prev_value`` (atomically).

        Raises :class:`EtcdKeyError` when the key is absent and
        :class:`EtcdCompareFailed` when it holds something else.  Numbers are
        compared and stored as their ``str()``.
        """
        prev_value, value = _text(key, prev_value, "prev_value"), _text(key, value, "value")
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

    def list(self, path: K) -> list[Node[K]]:
        """The immediate children of ``path``, sorted: keys with values, and directories.

        As in a mapping, a key stored both as a value and as a directory
        (``a`` and ``a/b``) is listed once, as the value.
        """
        base = _dir(path)
        out: list[Node[K]] = []
        for kv, revision in self._children_of(base):
            rel = kv.key[len(base):]
            head, found, _ = rel.partition(b"/")
            full = like(path, base + head)
            if found:
                out.append(Node(key=full, value=None, dir=True, revision=revision))
            else:
                out.append(Node(key=full, value=like(path, kv.value), dir=False,
                                revision=kv.mod_revision))
        return out

    def _children_of(self, base: bytes) -> Iterator[tuple[KeyValue, int]]:
        """The first key of each child of ``base`` (a leaf before its subtree), in order."""
        pages = self.pages(base, prefix_end(base))
        page = next(pages, None)
        seen: set[bytes] = set()  # "a-b" sorts between the leaf "a" and "a/x"
        while page is not None:
            skip: bytes | None = None
            for kv in page.kvs:
                head, found, _ = kv.key[len(base):].partition(b"/")
                if not head or head in seen:
                    continue
                seen.add(head)
                if found:
                    skip = prefix_end(base + head + b"/")
                yield kv, page.revision
            more, page = page.more, None  # not held while the next page is read
            page = pages.send(skip) if more else None

    def get_recursive(self, path: K) -> dict[K, K]:
        """Every key under ``path`` (``path/...``) with its value, flat, at one revision."""
        base = _dir(path)
        return {like(path, kv.key): like(path, kv.value)
                for kv in self.range_iter(base, prefix=True)}

    def watch(self, key: K, timeout: float | None = None, *, prefix: bool = False,
              start_revision: int | None = None) -> Event[K] | None:
        """Block for the next change of ``key``; ``None`` after ``timeout`` seconds."""
        timeout = check_wait("timeout", timeout)
        with self.watch_iter(key, prefix=prefix, start_revision=start_revision,
                             prev_kv=True) as watcher:
            return watcher.next_event(timeout)


    def machines(self) -> builtins.list[str]:
        """The client URLs of every member."""
        return [url for m in self.members() for url in m.client_urls]

    def leader(self) -> str:
        """The client URL of the current leader."""
        members = self.members()
        leader_id = self.status().leader
        for m in members:
            if m.id == leader_id and m.client_urls:
                return m.client_urls[0]
        raise EtcdUnavailable("the cluster has no leader right now")

    def get_many(self, keys: Sequence[K]) -> dict[K, K]:
        """The values of the present ``keys``, read at one revision (see ``range_many``)."""
        answers = self.range_many([Range(to_bytes(k)) for k in keys])
        return {key: like(key, r.kvs[0].value)
                for key, r in zip(keys, answers, strict=True) if r.kvs}
