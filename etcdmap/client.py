"""``EtcdClient``: etcd's v3 calls over a transport, and the classic etcd-py calls on top.

The client knows keys, values, revisions and leases; it knows nothing of
mappings.  Keys and values are ``str`` (UTF-8) or ``bytes``: what goes in as
``bytes`` comes back as ``bytes``.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._settings import (
    MAX_PAGE_SIZE,
    MAX_TXN_OPS,
    PAGE_SIZE,
    READ_TIMEOUT,
    Settings,
    check_ttl,
    txn_read_crashes,
)
from ._transport import Transport, open_transport
from ._wire.replies import check_txn
from .compat import ClassicMixin, like
from .errors import EtcdCompacted, EtcdError
from .lease import Lease
from .members import MembersMixin
from .ops import (
    ALL_KEYS,
    Compare,
    Delete,
    Op,
    Put,
    Range,
    SortOrder,
    SortTarget,
    Txn,
    prefix_end,
    to_bytes,
)
from .records import (
    DeleteRangeResponse,
    KeyValue,
    LeaseGrant,
    LeaseInfo,
    PutResponse,
    RangeResponse,
    TxnResponse,
)
from .watch import Watcher

if TYPE_CHECKING:
    import requests

__all__ = ["EtcdClient"]

K = TypeVar("K", str, bytes)


class EtcdClient(MembersMixin, ClassicMixin):
    """A client for one etcd cluster, over its v3 JSON gateway or gRPC.

    ``endpoints`` is a URL, a comma-separated string or a list of URLs; unset it
    reads ``ETCDCTL_ENDPOINTS``, else uses ``http://127.0.0.1:2379``.  TLS
    (``ca_cert``, ``cert``/``key``, or etcd-py's ``ssl_cert``/``ssl_key``) and
    the user (``username``/``password``) likewise fall back to etcdctl's
    environment variables.  ``timeout`` bounds each request; a request fails
    over to the next endpoint while it is safe and ``retry_deadline`` has not
    passed.  ``auto_sync`` relearns the endpoints from the member list.
    ``allow_redirects`` follows HTTP redirects (keeping method and body).
    ``transport`` is ``"http"`` (the JSON gateway over requests) or ``"grpc"``
    (``pip install 'etcdmap[grpc]'``); unset it reads ``ETCDMAP_TRANSPORT``,
    else uses ``"http"``.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        retry_deadline: float | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        verify: bool = True,
        ssl_cert: str | None = None,
        ssl_key: str | None = None,
        session: requests.Session | None = None,
        allow_redirects: bool = False,
        auto_sync: bool = False,
        max_txn_ops: int = MAX_TXN_OPS,
        transport: str | None = None,
    ):
        settings = Settings.resolve(
            endpoints=endpoints, timeout=timeout, retry_deadline=retry_deadline,
            username=username, password=password, ca_cert=ca_cert, cert=cert, key=key,
            verify=verify, ssl_cert=ssl_cert, ssl_key=ssl_key, allow_redirects=allow_redirects,
            auto_sync=auto_sync, max_txn_ops=max_txn_ops, transport=transport)
        self._settings = settings
        self.max_txn_ops = settings.max_txn_ops
        self._auto_sync = auto_sync
        self._sync_due = auto_sync  # the first request learns the cluster's members
        self._last_sync = 0.0
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._txn_read_safety: dict[str, bool] = {}  # endpoint -> see txn_reads
        self._transport: Transport = open_transport(settings, session=session)
        if auto_sync:
            self._transport.on_endpoint_failure = self._mark_sync_due

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop lease keepalives and release the HTTP connections."""
        for lease in list(self._leases):
            lease.close()
        self._transport.close()

    def reset_connections(self) -> None:
        """Drop pooled connections without closing them.

        Never needed after ``os.fork()``: every call notices a new process and
        uses connections of its own.
        """
        self._transport.reset()

    def __reduce__(self) -> Any:
        # Endpoints, timeouts and TLS file paths travel; the user and password
        # never do: the rebuilt client takes them from ETCDCTL_USER/PASSWORD.
        return (_rebuild, (self._settings.portable(list(self._transport.endpoints)),))

    def __copy__(self) -> EtcdClient:
        return self  # a client is a connection, like a socket: copies share it

    def __deepcopy__(self, memo: dict[int, Any]) -> EtcdClient:
        return self

    def __repr__(self) -> str:
        return f"EtcdClient(endpoints={self._transport.endpoints!r})"

    @property
    def endpoints(self) -> list[str]:
        """The endpoints in use, current first."""
        return self._transport.endpoints_in_order()

    @property
    def timeout(self) -> float:
        """Seconds to wait for one answer."""
        return self._transport.timeout

    # -- the v3 KV API ----------------------------------------------------------

    def _wire(self) -> Transport:
        """The transport, after relearning the members if ``auto_sync`` says it is time."""
        if self._sync_due:
            self._auto_sync_now()
        return self._transport

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        sort_order: SortOrder = "NONE",
        sort_target: SortTarget = "KEY",
    ) -> RangeResponse:
        """Keys ``key``, or ``[key, range_end)``, or every key starting with ``key``."""
        k, end = self._span(key, range_end, prefix)
        return self._read(Range(k, end, limit=limit, revision=revision, keys_only=keys_only,
                                count_only=count_only, serializable=serializable,
                                sort_order=sort_order, sort_target=sort_target))

    def range_iter(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        revision: int = 0,
        keys_only: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[KeyValue]:
        """Every key of a range, paged with ``limit`` at the first page's revision."""
        k, end = self._span(key, range_end, prefix)
        for page in self.pages(k, end, revision=revision, keys_only=keys_only,
                               page_size=page_size):
            yield from page.kvs
            del page  # not held while the next page is read: one page in memory

    def pages(self, key: bytes, range_end: bytes | None, *, revision: int = 0,
              keys_only: bool = False,
              page_size: int = PAGE_SIZE) -> Generator[RangeResponse, bytes | None, None]:
        """Pages of ``[key, range_end)`` at one revision; each page's ``revision`` is it.

        Send a new start key into the generator to skip ahead.  Pages start at
        ``page_size`` keys and double up to ``MAX_PAGE_SIZE`` (or ``page_size``
        if larger): etcd counts the rest of the range for every page, so few
        large pages are much faster than many small ones, and memory stays
        bounded by one page whatever the size of the range.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        limit, ceiling = page_size, max(page_size, MAX_PAGE_SIZE)
        while True:
            page = self.range(key, range_end, limit=limit, revision=revision,
                              keys_only=keys_only)
            limit = min(limit * 2, ceiling)
            revision = revision or page.revision
            page = RangeResponse(page.kvs, page.count, page.more, revision)
            skip_to = yield page
            if not page.more or not page.kvs:
                return
            key = page.kvs[-1].key + b"\0"
            del page  # not held while the next page is read: one page in memory
            if skip_to is not None and skip_to > key:
                key = skip_to
                if range_end not in (None, ALL_KEYS) and key >= range_end:
                    return

    def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0,
            prev_kv: bool = False) -> PutResponse:
        """Store ``value`` at ``key``."""
        req = Put(to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)
        return self._wire().put(req)

    def delete_range(self, key: str | bytes, range_end: str | bytes | None = None, *,
                     prefix: bool = False, prev_kv: bool = False) -> DeleteRangeResponse:
        """Delete ``key``, or ``[key, range_end)``, or every key starting with ``key``."""
        k, end = self._span(key, range_end, prefix)
        return self._wire().delete_range(Delete(k, end, prev_kv=prev_kv))

    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResponse:
        """Run ``success`` if every compare holds, else ``failure``, atomically."""
        resp = self._wire().txn(Txn(compare, success, failure))
        check_txn(resp, success if resp.succeeded else failure)
        return resp

    @property
    def txn_reads(self) -> bool:
        """Whether several ranges are read as one read-only transaction (else one by one).

        etcd 3.5.0 to 3.5.6 crash (etcd-io/etcd#14110, #14891) when a client
        gives up on a read-only transaction, as a client with a timeout does;
        with those members reads go one range at a time, pinned to one
        revision.  Asked of each member once (its version).
        """
        endpoint = self._transport.endpoint
        safe = self._txn_read_safety.get(endpoint)
        if safe is None:
            try:
                version = self._transport.version(endpoint).get("etcdserver", "")
            except EtcdError:
                return False  # ask again next time
            safe = self._txn_read_safety[endpoint] = not txn_read_crashes(version)
        return safe

    def range_many(self, ranges: Sequence[Range]) -> list[RangeResponse]:
        """The answers to ``ranges``, all read at one revision, in as few requests as is safe.

        Read-only transactions of up to ``max_txn_ops`` ranges where the member
        handles those safely (see :attr:`txn_reads`); else one range after
        another.  Later requests read at the first one's revision.
        """
        if not ranges:
            return []
        for _ in range(3):  # a compaction between the reads: read them all again
            try:
                return self._ranges_at_one_revision(ranges)
            except EtcdCompacted:
                if any(r.revision for r in ranges):
                    raise  # the caller's own revision is gone
        raise EtcdCompacted("ranges kept being compacted while they were read")

    def _ranges_at_one_revision(self, ranges: Sequence[Range]) -> list[RangeResponse]:
        if len(ranges) == 1 or not self.txn_reads:
            # The first read fixes the revision; the rest may be in flight at once.
            first = self._read(ranges[0])
            rest = [dataclasses.replace(r, revision=r.revision or first.revision)
                    for r in ranges[1:]]
            return [first, *self._wire().ranges(rest)]
        out: list[RangeResponse] = []
        revision = 0
        step = self.max_txn_ops
        for i in range(0, len(ranges), step):
            batch = [dataclasses.replace(r, revision=r.revision or revision)
                     for r in ranges[i:i + step]]
            out += [r for r in self.txn(success=batch).responses
                    if isinstance(r, RangeResponse)]
            revision = revision or out[-1].revision
        return out

    def _read(self, req: Range) -> RangeResponse:
        return self._wire().range(req)

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard the history before ``revision``."""
        self._wire().compact(revision, physical)

    @staticmethod
    def _span(key: str | bytes, range_end: str | bytes | None,
              prefix: bool) -> tuple[bytes, bytes | None]:
        k = to_bytes(key)
        if prefix:
            if range_end is not None:
                raise TypeError("give range_end or prefix=True, not both")
            return (k or ALL_KEYS), prefix_end(k)
        if not k:
            raise ValueError("the key must not be empty")
        return k, None if range_end is None else to_bytes(range_end)

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseGrant:
        """A new lease of ``ttl`` seconds (the server may round it up)."""
        return self._wire().lease_grant(check_ttl(ttl), lease_id)

    def lease_revoke(self, lease_id: int) -> int:
        """Revoke a lease; its keys are deleted at once.  The revision that did it."""
        return self._wire().lease_revoke(lease_id)

    def lease_keepalive_once(self, lease_id: int, *, timeout: float | None = None,
                             deadline: float | None = None) -> int:
        """Refresh a lease; the new TTL, or 0 when the lease is gone.

        ``timeout`` bounds each attempt and ``deadline`` the failovers (by
        default the client's own).
        """
        return self._wire().lease_keepalive(lease_id, timeout=timeout, deadline=deadline)

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """A lease's remaining TTL (-1 when it is gone) and, optionally, its keys."""
        return self._wire().lease_time_to_live(lease_id, keys)

    # -- watch ---------------------------------------------------------------------

    def watch_iter(self, key: K, *, prefix: bool = False, start_revision: int | None = None,
                   prev_kv: bool = False, read_timeout: float = READ_TIMEOUT) -> Watcher[K]:
        """Iterate the changes of ``key`` (or of every key under it); resumes on failure.

        Without ``start_revision`` it sees changes made after it returns.
        """
        k, end = self._span(key, None, prefix)

        def conv(data: bytes) -> Any:
            return like(key, data)

        return self.watch_range(k, end, key_fn=conv, value_fn=conv,
                                start_revision=start_revision, prev_kv=prev_kv,
                                read_timeout=read_timeout)

    def watch_range(self, key: bytes, range_end: bytes | None, *,
                    key_fn: Callable[[bytes], Any], value_fn: Callable[[bytes], Any],
                    accept: Callable[[bytes], bool] | None = None,
                    start_revision: int | None = None, prev_kv: bool = False,
                    read_timeout: float = READ_TIMEOUT) -> Watcher[Any]:
        """Watch ``[key, range_end)``, converting keys and values with the given functions.

        ``accept`` filters events by their raw key.
        """
        return Watcher(self._transport, key, range_end, key_fn=key_fn, value_fn=value_fn,
                       accept=accept, start_revision=start_revision, prev_kv=prev_kv,
                       read_timeout=read_timeout)

    def lease(self, ttl: int, *, keepalive: bool = True,
              on_expired: Callable[[Lease], None] | None = None) -> Lease:
        """Grant a lease of ``ttl`` seconds, kept alive by a daemon thread."""
        lease = Lease(self, ttl, keepalive=keepalive, on_expired=on_expired)
        self._leases.add(lease)
        return lease


def _rebuild(config: dict[str, Any]) -> EtcdClient:
    """An :class:`EtcdClient` from a pickle."""
    return EtcdClient(**config)
