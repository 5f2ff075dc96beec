"""What a mapping does over time: TTL views, lease contexts, watches, snapshots."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._plan import key_name, parse_key
from .codecs import decode_or_raw
from .errors import EtcdError, EtcdKeyError, EtcdLeaseExpired, EtcdLeaseNotFound
from .lease import Lease
from .ops import Op, Put
from .records import DeleteRangeResponse, PutResponse, TxnResponse
from .watch import Watcher

if TYPE_CHECKING:
    from .client import EtcdClient
    from .codecs import Codec
    from .mapping import EtcdMapping

__all__ = ["LiveMixin"]


class WriteHooks(Protocol):
    """What a mapping tells before and after each write it sends."""

    def before_write(self) -> None:
        """Raise to refuse the write before anything is sent."""

    def after_write(self, revision: int, changed: bool) -> None:
        """The write was applied at ``revision`` (``changed``: it changed something)."""


class LiveMixin:
    """TTLs, leases and watches for :class:`~etcdmap.mapping.EtcdMapping`."""

    _client: EtcdClient
    _base: bytes
    _sep: str
    _bsep: bytes
    _codec: Codec
    _ttl: int = 0
    _lease_obj: Lease | None = None
    # Told before and after every write (a cached view refuses or waits there).
    _hooks: WriteHooks | None = None

    if TYPE_CHECKING:
        def _derive(self, base: bytes) -> EtcdMapping: ...
        def _span(self) -> tuple[bytes, bytes]: ...
        def _tree_at(self) -> tuple[dict[str, Any], int]: ...

    # -- TTLs and leases ---------------------------------------------------------------

    def with_ttl(self, seconds: int) -> EtcdMapping:
        """A view of the same keys whose writes expire ``seconds`` after each write."""
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            raise ValueError(f"ttl must be a positive int of seconds, not {seconds!r}")
        view = self._derive(self._base)
        view._ttl, view._lease_obj = seconds, None
        return view

    @contextlib.contextmanager
    def lease(self, ttl: int, *, keepalive: bool = True,
              on_expired: Callable[[Lease], None] | None = None) -> Iterator[EtcdMapping]:
        """A view whose writes share one lease, kept alive while the block runs.

        The lease is revoked when the block ends (its keys vanish at once).  If
        it lapses meanwhile, writes through the view raise
        :class:`~etcdmap.errors.EtcdLeaseExpired` and ``on_expired`` is called.
        """
        lease = self._client.lease(ttl, keepalive=keepalive, on_expired=on_expired)
        view = self._derive(self._base)
        view._ttl, view._lease_obj = 0, lease
        try:
            yield view
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
        """The lease writes through this view attach to, if any."""
        return self._lease_obj

    def ttl(self, key: str) -> int | None:
        """Seconds left on ``key``'s lease, or ``None`` when it has none."""
        full = self._base + parse_key(key, self._sep, write=False)
        resp = self._client.range(full)
        if not resp.kvs:
            raise EtcdKeyError(key)
        lease_id = resp.kvs[0].lease
        if not lease_id:
            return None
        left = self._client.lease_time_to_live(lease_id).ttl
        if left < 0:
            raise EtcdKeyError(key)  # expired between the two reads
        return left

    def _leased(self, ops: Sequence[Op]) -> list[Op]:
        """``ops`` with this view's lease on every put (one fresh lease per write)."""
        if not any(isinstance(op, Put) for op in ops):
            return list(ops)
        if self._lease_obj is not None:
            lease_id = self._lease_obj.check()
        elif self._ttl:
            lease_id = self._client.lease_grant(self._ttl).id
        else:
            return list(ops)
        return [dataclasses.replace(op, lease=lease_id) if isinstance(op, Put) else op
                for op in ops]

    def _txn(self, compare: Sequence[Any], success: Sequence[Op],
             failure: Sequence[Op]) -> TxnResponse:
        if self._hooks is not None:
            self._hooks.before_write()
        try:
            resp = self._client.txn(compare, self._leased(success), failure)
        except EtcdLeaseNotFound as exc:
            if self._lease_obj is None:
                raise
            self._lease_obj.mark_expired("the server rejected it")
            raise EtcdLeaseExpired(f"lease {self._lease_obj.id:x} has expired") from exc
        if self._hooks is not None:
            self._hooks.after_write(resp.revision, _changed(resp))
        return resp

    # -- watching ------------------------------------------------------------------------

    def watch(self, key: str | None = None, *, start_revision: int | None = None,
              prev_kv: bool = False, read_timeout: float = 60.0) -> Watcher[Any]:
        """Changes under this mapping (or at ``key`` and below), keys relative to it.

        Values are decoded with the mapping's codec (a DELETE has ``None``).  To
        recover from :class:`~etcdmap.errors.EtcdCompacted`, take a
        :meth:`snapshot` and watch again from its revision + 1.
        """
        base, sep, blen = self._base, self._bsep, len(self._base)
        start, end = self._span()
        accept: Callable[[bytes], bool] | None = None
        if key is not None:
            full = base + parse_key(key, self._sep, write=False)
            start = full
            end = self._derive(full + sep)._span()[1]

            def accept(k: bytes) -> bool:
                return k == full or k.startswith(full + sep)

        def key_fn(k: bytes) -> str:
            return key_name(k[blen:])

        def value_fn(v: bytes) -> Any:
            # An undecodable value must not kill the watch: it arrives as bytes.
            return decode_or_raw(self._codec, v)

        return self._client.watch_range(start, end, key_fn=key_fn, value_fn=value_fn,
                                        accept=accept, start_revision=start_revision,
                                        prev_kv=prev_kv, read_timeout=read_timeout)

    def snapshot(self) -> tuple[dict[str, Any], int]:
        """``(to_dict(), revision)``: the subtree and the revision it was read at."""
        return self._tree_at()


def _changed(resp: TxnResponse) -> bool:
    """Whether a write txn changed anything (else the revision did not move)."""
    for r in resp.responses:
        if isinstance(r, PutResponse) or (isinstance(r, DeleteRangeResponse) and r.deleted):
            return True
        if isinstance(r, TxnResponse) and _changed(r):
            return True
    return False
