"""Transactions over the mapping: one snapshot to read, one etcd transaction to write.

Software transactional memory as Go's ``concurrency.NewSTM`` does it, shaped as
a dict.  A :class:`Transaction` reads at one revision, pinned by its first
read, and remembers what it saw: each key with its mod revision (0 when it was
absent) and each subtree it listed.  Writes and deletes are planned (as a
mapping plans them: :class:`~etcdmap._tree.WritePlan`) and seen by later reads
of the same transaction.  :meth:`Transaction.commit` sends them in one etcd
transaction guarded by what was read:

* ``mod_revision == seen`` for every key read (absent ones: ``== 0``, which a
  key created meanwhile fails), which also catches a key deleted meanwhile;
* ``mod_revision < snapshot + 1`` over every subtree listed, which catches a
  key added to it.

So it commits only if everything it read is as it was: serializable, and
never half-written.  Keys that were only written are not compared (a blind
write does not conflict, as in Go's STM).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Generator, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._commit import CHUNK_BYTES
from ._read import Children
from ._tree import WritePlan, add_to_tree, parse_key
from ._wire.keys import key_name
from .errors import EtcdClosed, EtcdCompacted, EtcdConflict, EtcdKeyError, EtcdRequestTooLarge
from .ops import ALL_KEYS, Compare, Put, prefix_end
from .records import KeyValue, RangeResponse

if TYPE_CHECKING:
    from ._coordination import Fenced
    from .mapping import EtcdMapping

__all__ = ["Transaction", "run_atomic"]

R = TypeVar("R")
BACKOFF_FIRST = 0.002  # seconds; the pause before a re-run doubles up to BACKOFF_MAX
BACKOFF_MAX = 0.25
_MISSING: Any = object()  # pop() without a default


class _State:
    """What a transaction and its sub-views share: the snapshot, what was read, the plan."""

    def __init__(self, owner: EtcdMapping):
        self.owner = owner
        self.revision = 0  # the snapshot's, once the first read pinned it
        self.seen: dict[bytes, int] = {}  # key -> mod revision read (0: absent)
        self.known: dict[bytes, KeyValue | None] = {}  # keys read one by one
        self.spans: dict[tuple[bytes, bytes], tuple[KeyValue, ...]] = {}  # listed subtrees
        self.plan = WritePlan(owner._floor, owner._bsep, owner._encode)
        self.ended = False

    def check(self) -> None:
        if self.ended:
            raise EtcdClosed("the transaction has ended")

    def _range(self, start: bytes, end: bytes | None) -> RangeResponse:
        try:
            resp = self.owner._client.range(start, end, revision=self.revision)
        except EtcdCompacted as exc:
            raise EtcdConflict(f"the transaction's snapshot (revision {self.revision}) was "
                               "compacted away before it finished reading") from exc
        self.revision = self.revision or resp.revision
        return resp

    def leaf(self, full: bytes) -> KeyValue | None:
        """The key ``full`` as the transaction sees it (its own writes included)."""
        if full in self.plan.puts:
            return KeyValue(full, self.plan.puts[full])
        if self.plan.removed(full):
            return None
        if full in self.known:
            return self.known[full]
        for (start, end), kvs in self.spans.items():
            if start <= full and (end == ALL_KEYS or full < end):  # listed already
                return next((kv for kv in kvs if kv.key == full), None)
        kvs = self._range(full, None).kvs
        kv = self.known[full] = kvs[0] if kvs else None
        self.seen[full] = kv.mod_revision if kv is not None else 0
        return kv

    def span(self, start: bytes, end: bytes) -> list[KeyValue]:
        """The keys in ``[start, end)`` as the transaction sees them, in key order."""
        kvs = self.spans.get((start, end))
        if kvs is None:
            kvs = self._range(start, end).kvs
            self.spans[(start, end)] = kvs
            for kv in kvs:
                self.seen.setdefault(kv.key, kv.mod_revision)
        plan = self.plan
        merged = {kv.key: kv for kv in kvs if not plan.removed(kv.key)}
        merged.update((k, KeyValue(k, v)) for k, v in plan.puts.items()
                      if start <= k and (end == ALL_KEYS or k < end))
        return [merged[k] for k in sorted(merged)]

    def compares(self) -> list[Compare]:
        """What must still hold at commit for the reads to be current."""
        out = [Compare(key, "MOD", "==", mod) for key, mod in sorted(self.seen.items())]
        out += [Compare(start, "MOD", "<", self.revision + 1, range_end=end)
                for start, end in sorted(self.spans)]
        return out


class Transaction(MutableMapping[str, Any]):
    """A mapping view inside ``cfg.transaction()``: snapshot reads, buffered writes.

    Paths, sub-mappings (``tx["db"]`` is a sub-view of the same transaction) and
    the codec are the mapping's.  Use it from one thread, inside its block.
    """

    _fresh: Any = None  # Children notes its first page here (unused: reads are local)

    def __init__(self, owner: EtcdMapping, *, _state: _State | None = None,
                 _base: bytes | None = None):
        self._state = _state if _state is not None else _State(owner)
        self._owner = owner
        self._base = owner._base if _base is None else _base
        self._sep, self._bsep = owner._sep, owner._bsep

    def __repr__(self) -> str:
        state = "ended" if self._state.ended else f"at revision {self._state.revision or '-'}"
        return f"<Transaction prefix={key_name(self._base)!r} {state}>"

    @property
    def revision(self) -> int:
        """The revision of the snapshot the reads see (0 before the first read)."""
        return self._state.revision

    @property
    def prefix(self) -> str:
        """The etcd key prefix of this view, ending in the separator."""
        return key_name(self._base)

    # -- reads -----------------------------------------------------------------------

    def _full(self, key: object, *, write: bool) -> bytes:
        self._state.check()
        return self._base + parse_key(key, self._sep, write=write)

    def _subtree(self, full: bytes) -> list[KeyValue]:
        start = full + self._bsep
        return self._state.span(start, prefix_end(start))

    def _children(self, kvs: list[KeyValue]) -> Children[tuple[str, KeyValue | None]]:
        def one_page() -> Generator[RangeResponse, bytes | None, None]:
            yield RangeResponse(tuple(kvs), len(kvs), False, self._state.revision)

        return Children(self, one_page(), self._base, self._bsep, lambda name, kv: (name, kv))

    def _sub(self, full: bytes) -> Transaction:
        return Transaction(self._owner, _state=self._state, _base=full + self._bsep)

    def __getitem__(self, key: str) -> Any:
        full = self._full(key, write=False)
        kv = self._state.leaf(full)
        if kv is not None:
            return self._owner._decode_at(kv.value, full)
        if next(iter(self._sub(full)), None) is not None:
            return self._sub(full)
        raise EtcdKeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            full = self._full(key, write=False)
        except KeyError:
            return False
        return self._state.leaf(full) is not None or next(iter(self._sub(full)), None) is not None

    def _listing(self) -> list[KeyValue]:
        self._state.check()
        return self._state.span(self._base or ALL_KEYS, prefix_end(self._base))

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._children(self._listing()))

    def __len__(self) -> int:
        return sum(1 for _ in self._children(self._listing()))

    def to_dict(self) -> dict[str, Any]:
        """This view's subtree as plain nested dicts, as the transaction sees it."""
        out: dict[str, Any] = {}
        add_to_tree(out, self._listing(), len(self._base), self._sep, self._owner._decode_at)
        return out

    def submapping(self, key: str) -> Transaction:
        """The sub-view at ``key``, whether or not anything is stored there."""
        return self._sub(self._full(key, write=True))

    # -- writes (planned; sent by commit) -------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        self._state.plan.assign(self._full(key, write=True), value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise EtcdKeyError(key)
        full = self._full(key, write=False)
        self._state.plan.clear(full, full + b"\0")
        sub = full + self._bsep
        self._state.plan.clear(sub, prefix_end(sub))

    # MutableMapping.clear would pop item by item: a clear needs no read.
    def clear(self) -> None:
        """Remove every key of this view (at commit)."""
        self._state.check()
        start = self._base or ALL_KEYS
        self._state.plan.clear(start, prefix_end(self._base))

    # MutableMapping.pop and popitem would return a subtree as a sub-view of this
    # transaction, which the removal they plan then empties: as from the mapping,
    # a subtree comes back as a plain dict.
    @overload
    def pop(self, key: str) -> Any: ...
    @overload
    def pop(self, key: str, default: Any) -> Any: ...

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` (at commit) and return its value (a subtree as a plain dict)."""
        try:
            value = self[key]
        except KeyError:
            if default is _MISSING:
                raise
            return default
        if isinstance(value, Transaction):
            value = value.to_dict()
        del self[key]
        return value

    def popitem(self) -> tuple[str, Any]:
        """Remove (at commit) and return the first ``(name, value)`` in key order."""
        for key in self:
            return key, self.pop(key)
        raise EtcdKeyError("popitem(): the mapping is empty")

    # -- the end -------------------------------------------------------------------------

    def abandon(self) -> None:
        """End the transaction without writing anything."""
        self._state.ended = True

    def commit(self) -> int:
        """Send the planned writes if nothing read has changed; the revision they got.

        A transaction that wrote nothing sends nothing (its reads were one
        snapshot already) and returns its snapshot's revision.
        :class:`EtcdConflict` when something read had changed (nothing is
        written); :class:`EtcdRequestTooLarge`, before sending anything, when the
        transaction needs more compares or writes than etcd takes in one.
        """
        state = self._state
        state.check()
        state.ended = True
        ops = state.plan.ops()
        if not ops:
            return state.revision
        compares = state.compares()
        client = state.owner._client
        limit = client.max_txn_ops
        # The request's size as etcd counts it: raw keys and values plus framing.
        size = sum(16 + len(op.key) + len(op.value if isinstance(op, Put) else
                                          op.range_end or b"") for op in ops)
        size += sum(16 + len(c.key) + len(c.range_end or b"") for c in compares)
        if len(compares) > limit or len(ops) > limit or size > CHUNK_BYTES:
            raise EtcdRequestTooLarge(
                f"the transaction read {len(compares)} keys or subtrees and writes "
                f"{len(ops)} ops; one etcd transaction takes at most {limit} of each "
                f"(max_txn_ops) and about {CHUNK_BYTES // 1000} kB: nothing was written")
        resp = state.owner._txn(compares, ops, [])
        if not resp.succeeded:
            raise EtcdConflict("the transaction's reads changed before it committed: "
                               "nothing was written")
        return resp.revision


def run_atomic(transaction: Callable[..., AbstractContextManager[Transaction]],
               fn: Callable[[Transaction], R], *, retries: int,
               fence: Fenced | None) -> R:
    """``fn(tx)`` in a transaction, re-run after each conflict (at most ``retries`` times)."""
    for attempt in itertools.count():
        try:
            with transaction(fence=fence) as tx:
                result = fn(tx)
            return result
        except EtcdConflict:
            if attempt >= retries:
                raise
        # Jittered and growing: contenders that collided spread out.
        time.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt)))
    raise AssertionError("unreachable")
