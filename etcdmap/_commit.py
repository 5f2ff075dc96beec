"""How a mapping's writes become etcd transactions.

:func:`commit` sends the ops of :func:`~etcdmap._tree.plan_ops` (deletes of
what a nested dict could not keep beside the new values, then puts):

1. When they all fit in one transaction, as one transaction.
2. Otherwise, when the puts fit, as one transaction that *guards* the regions
   to clear (``version == 0`` over each) instead of deleting them blindly:
   writing new names costs one op each.  If a guard fails, the same
   transaction again with deletes for the regions that hold keys.
3. Otherwise (more leaves than one transaction holds), as ordered chunks:
   not atomic; readers may see the write half done, and a failure raises
   :class:`~etcdmap.errors.EtcdPartialWrite` saying exactly what was written.

Removals (:func:`take`) read and decode first, then delete only what they
read, and only if nothing under the name changed meanwhile, so a value the
codec cannot read is never lost; :func:`put_if_absent` is ``setdefault``.
Every compare-and-swap loop here is bounded (:class:`EtcdConflict`).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._read import Reader, addressable, leaf_and_below, probe
from ._settings import MAX_PAGE_SIZE
from ._tree import add_to_tree, chunk_ops, plan_ops
from ._wire.keys import key_bytes, key_name
from .errors import (
    EtcdConflict,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdKeyError,
    EtcdPartialWrite,
    EtcdProtocolError,
    EtcdRequestTooLarge,
)
from .ops import ALL_KEYS, Compare, Delete, Op, Put, Range
from .records import DeleteRangeResponse, KeyValue, RangeResponse

if TYPE_CHECKING:
    from .client import EtcdClient
    from .records import TxnResponse

__all__ = ["ABSENT", "commit", "put_if_absent", "take", "take_first"]

# etcd's default --max-request-bytes is 1.5 MiB; keep a margin for framing.
CHUNK_BYTES = 1_400_000
_GUARD_ROUNDS = 4  # guarded attempts before falling back to chunks
_CAS_RETRIES = 8  # a compare-and-swap gives up (EtcdConflict) after losing this many races
_POPITEM_TRIES = 64  # take_first() competes with other poppers for the same few items
_SPREAD = 16  # after a lost race, take_first() picks among this many first names
ABSENT: Any = object()  # what take() returns when there was nothing to take


class WriteHooks(Protocol):
    """What a mapping tells before and after each write it sends (a cached view waits)."""

    def before_write(self) -> None:
        """Raise to refuse the write before anything is sent."""

    def after_write(self, revision: int, changed: bool) -> None:
        """The write was applied at ``revision`` (``changed``: it changed something)."""


class _Writer(Reader, Protocol):
    _floor: bytes
    _hooks: WriteHooks | None

    def _encode(self, value: Any, key: bytes) -> bytes: ...
    def _decode(self, kv: KeyValue) -> Any: ...
    def _txn(self, compare: Sequence[Compare], success: Sequence[Op],
             failure: Sequence[Op]) -> TxnResponse: ...
    def _names(self, page_size: int) -> Iterator[str]: ...


def _fits(ops: Sequence[Put | Delete], max_ops: int) -> bool:
    return len(chunk_ops(list(ops), max_ops, CHUNK_BYTES)) == 1


Progress = Callable[[int, int], None]


def commit(m: _Writer, items: Iterable[tuple[bytes, Any]], compare: list[Compare] | None,
           failure: Sequence[Op] | None, *, clear: tuple[bytes, bytes] | None = None,
           progress: Progress | None = None) -> TxnResponse:
    """Assign ``items`` (full key, value) in order, after clearing ``[clear)`` if given.

    With ``compare``, only if it holds.  ``progress(ops done, ops in all)`` is
    called after each transaction.
    """
    ops = plan_ops(m._floor, m._bsep, m._encode, items, clear)
    limit = m._client.max_txn_ops
    if _fits(ops, limit):
        return _report(m._txn(compare or [], ops, failure or []), progress, len(ops))
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
            return _report(resp, progress, len(ops))
    # Not atomic anyway: one keys-only read spares the deletes that match nothing,
    # and the new values go first, so a reader never finds a name missing on the way.
    ops = _pruned(m._client, ops)
    ops = [op for op in ops if isinstance(op, Put)] + [op for op in ops if isinstance(op, Delete)]
    return _chunks(m, chunk_ops(ops, limit, CHUNK_BYTES), progress)


def _report(resp: TxnResponse, progress: Progress | None, ops: int) -> TxnResponse:
    if progress is not None:
        progress(ops, ops)
    return resp


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
    for kv in client.range_iter(deletes[0].key, ends[-1], keys_only=True,
                                page_size=MAX_PAGE_SIZE):
        while i < len(deletes) and ends[i] != ALL_KEYS and ends[i] <= kv.key:
            i += 1
        if i == len(deletes):
            break
        if deletes[i].key <= kv.key:
            used.add(i)
    keep = {deletes[i] for i in used}
    return [op for op in ops if not isinstance(op, Delete) or op in keep]


def _chunks(m: _Writer, chunks: list[list[Put | Delete]],
            progress: Progress | None = None) -> TxnResponse:
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
        if progress is not None:
            progress(sum(map(len, chunks[:i + 1])), sum(map(len, chunks)))
    assert resp is not None
    return resp


# -- removals and conditional puts --------------------------------------------------------


def take(m: _Writer, full: bytes) -> Any:
    """Remove the value at ``full`` (a subtree as a plain dict) and return it; or ABSENT."""
    sub, end = m._dir_span(full)
    hooks = m._hooks
    if hooks is not None:
        hooks.before_write()
    for _ in range(_CAS_RETRIES):
        leaf, below = leaf_and_below(m, full, Range(sub, end))
        revision = leaf.revision
        tree = below.kvs if below is not None and not leaf.kvs else ()
        if not leaf.kvs and not addressable(m, full, tree):
            if hooks is not None:  # nothing to remove: as fresh as that answer, still
                hooks.after_write(revision, False)
            return ABSENT
        # Decode everything before deleting anything: a failure leaves etcd as it was.
        decoded = {kv.key: m._decode(kv) for kv in (*leaf.kvs, *tree)}
        unchanged = [Compare(full, "MOD", "<", revision + 1),
                     Compare(sub, "MOD", "<", revision + 1, end)]
        resp = m._txn(unchanged, [Delete(full, prev_kv=True), Delete(sub, end, prev_kv=True)],
                      [])
        if not resp.succeeded:
            continue  # written meanwhile: read again
        gone = [r for r in resp.responses if isinstance(r, DeleteRangeResponse)]
        leaf_gone, tree_gone = gone[0].prev_kvs, gone[1].prev_kvs
        if leaf_gone:
            return decoded[leaf_gone[0].key]
        out: dict[str, Any] = {}
        add_to_tree(out, tree_gone, len(sub), m._sep, _already(decoded))
        return out if out else ABSENT  # all deleted by someone else meanwhile
    raise EtcdConflict(f"pop({key_name(full)!r}) lost to other writers {_CAS_RETRIES} times; "
                       "try again")


def take_first(m: _Writer) -> tuple[str, Any]:
    """``popitem()``: take the first child; after a lost race, one of the first few.

    Spreading out (with a jittered pause) keeps many poppers from all chasing
    the same item; the number of tries is bounded.
    """
    if m._hooks is not None:
        m._hooks.before_write()  # refused before anything is sent
    for attempt in range(_POPITEM_TRIES):
        if attempt:
            time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
        spread = _SPREAD if attempt else 1
        names = list(itertools.islice(m._names(spread), spread))
        if not names:
            raise EtcdKeyError("popitem(): mapping is empty")
        name = random.choice(names) if attempt else names[0]
        value = take(m, m._base + key_bytes(name))
        if value is not ABSENT:
            return name, value
    raise EtcdConflict(f"popitem() lost to other clients {_POPITEM_TRIES} times; try again")


def put_if_absent(m: _Writer, full: bytes, default: Any) -> tuple[str, Any]:
    """``setdefault``, atomically: ``("stored", default)``, ``("leaf", its value)`` or
    ``("subtree", None)`` for what was there."""
    sub, end = m._dir_span(full)
    # First try "nothing at all under this name"; if only unaddressable keys
    # are there, retry with "the subtree has not changed since we checked".
    subtree_guard = Compare(sub, "VERSION", "==", 0, end)
    for _ in range(_CAS_RETRIES):
        resp = commit(m, [(full, default)],
                      [Compare(full, "VERSION", "==", 0), subtree_guard],
                      [Range(full), probe(m, full)])
        if resp.succeeded:
            return "stored", default
        leaf, tree = _ranges(resp)
        if leaf.kvs:
            return "leaf", m._decode(leaf.kvs[0])
        if addressable(m, full, tree.kvs):
            return "subtree", None
        subtree_guard = Compare(sub, "MOD", "<", resp.revision + 1, end)
    raise EtcdConflict(f"setdefault({key_name(full)!r}) lost to other writers {_CAS_RETRIES} "
                       "times; try again")


def _ranges(resp: TxnResponse) -> list[RangeResponse]:
    out = [r for r in resp.responses if isinstance(r, RangeResponse)]
    if len(out) != len(resp.responses):
        raise EtcdProtocolError("a transaction of ranges got other answers")
    return out


def _already(decoded: dict[bytes, Any]) -> Callable[[bytes, bytes], Any]:
    """A decode function that looks values up in what was decoded already."""
    def lookup(_: bytes, key: bytes) -> Any:
        return decoded[key]
    return lookup
