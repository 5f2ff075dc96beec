"""A mapping's views over time: writes that expire, writes that share a lease, watches.

:class:`OverTime` gives :class:`~etcdmap.mapping.EtcdMapping` its
``with_ttl`` and ``lease()`` views (a :class:`~etcdmap.lease.LeasePolicy`
that the mapping's one write primitive applies), ``ttl()`` and ``watch()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._fence import NO_FENCE, Fence
from ._settings import READ_TIMEOUT
from ._wire.keys import key_name
from .codecs import Codec, decode_or_raw
from .errors import EtcdError, EtcdKeyError
from .lease import Lease, LeasePolicy, PerWrite, Shared
from .ops import prefix_end
from .watch import Watcher

if TYPE_CHECKING:
    from ._commit import WriteHooks
    from .client import EtcdClient
    from .mapping import EtcdMapping

__all__ = ["OverTime"]


class OverTime:
    """TTL and lease views, ``ttl()`` and ``watch()`` of a mapping."""

    _client: EtcdClient
    _base: bytes
    _bsep: bytes
    _codec: Codec
    _policy: LeasePolicy | None = None  # with_ttl() and lease() views attach leases
    _hooks: WriteHooks | None = None  # a cached view refuses or waits around writes
    _fence: Fence = NO_FENCE  # a guarded view writes only while a lock is held

    if TYPE_CHECKING:
        def _derive(self, base: bytes | None = None, **attrs: Any) -> EtcdMapping: ...
        def _span(self) -> tuple[bytes, bytes]: ...
        def _full(self, key: object, *, write: bool) -> bytes: ...

    def with_ttl(self, seconds: int) -> EtcdMapping:
        """A view of the same keys whose writes expire ``seconds`` after each write."""
        return self._derive(_policy=PerWrite(self._client, seconds))

    @contextlib.contextmanager
    def lease(self, ttl: int, *, keepalive: bool = True,
              on_expired: Callable[[Lease], None] | None = None) -> Iterator[EtcdMapping]:
        """A view whose writes share one lease, kept alive while the block runs.

        The lease is revoked when the block ends (its keys vanish at once).  If
        it lapses meanwhile, writes through the view raise
        :class:`~etcdmap.errors.EtcdLeaseExpired` and ``on_expired`` is called.
        """
        lease = self._client.lease(ttl, keepalive=keepalive, on_expired=on_expired)
        try:
            yield self._derive(_policy=Shared(lease))
        except BaseException:
            # Revoke, but never let a failed revoke hide the block's own error.
            try:
                lease.revoke()
            except EtcdError:
                lease.close()
            raise
        revision = lease.revoke()
        if revision and self._hooks is not None:  # the revoke deleted the view's keys
            self._hooks.after_write(revision, False)

    @property
    def current_lease(self) -> Lease | None:
        """The lease writes through this view share, if it is a ``lease()`` view."""
        return self._policy.lease if self._policy is not None else None

    def ttl(self, key: str) -> int | None:
        """Seconds left on ``key``'s lease, or ``None`` when it has none."""
        resp = self._client.range(self._full(key, write=False))
        if not resp.kvs:
            raise EtcdKeyError(key)
        lease_id = resp.kvs[0].lease
        if not lease_id:
            return None
        left = self._client.lease_time_to_live(lease_id).ttl
        if left < 0:
            raise EtcdKeyError(key)  # expired between the two reads
        return left

    def watch(self, key: str | None = None, *, start_revision: int | None = None,
              prev_kv: bool = False, read_timeout: float = READ_TIMEOUT) -> Watcher[Any]:
        """Changes under this mapping (or at ``key`` and below), keys relative to it.

        Values are decoded with the mapping's codec (a DELETE has ``None``; a
        value the codec cannot read arrives as ``bytes``).  To recover from
        :class:`~etcdmap.errors.EtcdCompacted`, take a :meth:`snapshot` and
        watch again from its revision + 1.
        """
        sep, blen, codec = self._bsep, len(self._base), self._codec
        start, end = self._span()
        accept: Callable[[bytes], bool] | None = None
        if key is not None:
            full = self._full(key, write=False)
            start, end = full, prefix_end(full + sep)

            def accept(k: bytes) -> bool:
                return k == full or k.startswith(full + sep)

        def key_fn(k: bytes) -> str:
            return key_name(k[blen:])

        def value_fn(v: bytes) -> Any:
            return decode_or_raw(codec, v)

        return self._client.watch_range(start, end, key_fn=key_fn, value_fn=value_fn,
                                        accept=accept, start_revision=start_revision,
                                        prev_kv=prev_kv, read_timeout=read_timeout)
