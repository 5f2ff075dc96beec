"""How a mapping's assignments become etcd transactions.

:func:`commit` sends the ops of :func:`~etcdmap._plan.plan_ops` (deletes of
what a nested dict could not keep beside the new values, then puts):

1. When they all fit in one transaction, as one transaction.
2. Otherwise, when the puts fit, as one transaction that *guards* the regions
   to clear (``version == 0`` over each) instead of deleting them blindly:
   writing new names costs one op each.  If a guard fails, the same
   transaction again with deletes for the regions that hold keys.
3. Otherwise (more leaves than one transaction holds), as ordered chunks:
   not atomic; readers may see the write half done, and a failure raises
   :class:`~etcdmap.errors.EtcdPartialWrite` saying exactly what was written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._plan import chunk_ops, key_name, plan_ops
from .errors import EtcdError, EtcdIndeterminateWrite, EtcdPartialWrite, EtcdRequestTooLarge
from .ops import ALL_KEYS, Compare, Delete, Op, Put, Range
from .records import RangeResponse

if TYPE_CHECKING:
    from .client import EtcdClient
    from .records import TxnResponse

__all__ = ["commit"]

# etcd's default --max-request-bytes is 1.5 MiB; keep a margin for framing.
CHUNK_BYTES = 1_400_000
_GUARD_ROUNDS = 4  # guarded attempts before falling back to chunks


class _Writer(Protocol):
    _client: EtcdClient
    _floor: bytes
    _bsep: bytes

    def _encode(self, value: Any, key: bytes) -> bytes: ...
    def _txn(self, compare: Sequence[Compare], success: Sequence[Op],
             failure: Sequence[Op]) -> TxnResponse: ...


def _fits(ops: Sequence[Put | Delete], max_ops: int) -> bool:
    return len(chunk_ops(list(ops), max_ops, CHUNK_BYTES)) == 1


def commit(m: _Writer, items: Iterable[tuple[bytes, Any]], compare: list[Compare] | None,
           failure: Sequence[Op] | None) -> TxnResponse:
    """Assign ``items`` (full key, value) in order; with ``compare``, only if it holds."""
    ops = plan_ops(m._floor, m._bsep, m._encode, items)
    limit = m._client.max_txn_ops
    if _fits(ops, limit):
        return m._txn(compare or [], ops, failure or [])
    if compare is not None:
        # A conditional write cannot be split: refuse before writing anything.
        raise EtcdRequestTooLarge(
            f"a conditional write of {len(ops)} ops does not fit in one transaction "
            f"(max_txn_ops={limit})")
    clears = [op for op in ops if isinstance(op, Delete)]
    puts = [op for op in ops if isinstance(op, Put)]
    if len(clears) <= limit and _fits(puts, limit):
        resp = _guarded(m, clears, puts, limit)
        if resp is not None:
            return resp
    # Not atomic anyway: one keys-only read spares the deletes that match nothing.
    return _chunks(m, chunk_ops(_pruned(m._client, ops), limit, CHUNK_BYTES))


def _guarded(m: _Writer, clears: list[Delete], puts: list[Put],
             limit: int) -> TxnResponse | None:
    """One transaction: the puts, if the regions to clear are empty (else deleted too)."""
    busy: list[Delete] = []
    quiet = clears
    for _ in range(_GUARD_ROUNDS):
        ops: list[Put | Delete] = [*busy, *puts]
        if not _fits(ops, limit):
            return None  # too many regions to clear as well
        resp = m._txn([Compare(d.key, "VERSION", "==", 0, d.range_end) for d in quiet], ops,
                      [Range(d.key, d.range_end, count_only=True) for d in quiet])
        if resp.succeeded:
            return resp
        counts = [r.count if isinstance(r, RangeResponse) else 0 for r in resp.responses]
        busy += [d for d, n in zip(quiet, counts, strict=True) if n]
        quiet = [d for d, n in zip(quiet, counts, strict=True) if not n]
    return None


def _pruned(client: EtcdClient, ops: list[Put | Delete]) -> list[Put | Delete]:
    """``ops`` without the deletes whose range holds no key now."""
    deletes = [op for op in ops if isinstance(op, Delete)]  # sorted, disjoint
    if not deletes:
        return ops
    ends = [d.range_end or d.key + b"\0" for d in deletes]
    used: set[int] = set()
    i = 0
    for kv in client.range_iter(deletes[0].key, ends[-1], keys_only=True, page_size=8000):
        while i < len(deletes) and ends[i] != ALL_KEYS and ends[i] <= kv.key:
            i += 1
        if i == len(deletes):
            break
        if deletes[i].key <= kv.key:
            used.add(i)
    keep = {deletes[i] for i in used}
    return [op for op in ops if not isinstance(op, Delete) or op in keep]


def _chunks(m: _Writer, chunks: list[list[Put | Delete]]) -> TxnResponse:
    """Ordered transactions; on failure, say exactly what was written."""
    def names(ops: list[Put | Delete], kind: type, show: Callable[[Any], str]) -> list[str]:
        return [show(op) for op in ops if isinstance(op, kind)]

    def put_name(op: Put) -> str:
        return key_name(op.key)

    def delete_name(op: Delete) -> str:
        return key_name(op.key) + ("*" if op.range_end else "")

    written: list[str] = []
    deleted: list[str] = []
    resp = None
    for i, chunk in enumerate(chunks):
        try:
            resp = m._txn([], chunk, [])
        except EtcdError as exc:
            unknown = isinstance(exc, EtcdIndeterminateWrite)
            raise EtcdPartialWrite(
                f"write stopped at transaction {i + 1} of {len(chunks)}: {exc}",
                written=written, deleted=deleted,
                uncertain=names(chunk, Put, put_name) if unknown else [],
                unwritten=[n for c in chunks[i + unknown:]
                           for n in names(c, Put, put_name)]) from exc
        written += names(chunk, Put, put_name)
        deleted += names(chunk, Delete, delete_name)
    assert resp is not None
    return resp
