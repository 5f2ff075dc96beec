"""``EtcdMapping``: a ``MutableMapping`` over the keys under an etcd prefix.

Keys are paths: ``cfg["db/host"]`` is the etcd key ``<prefix>/db/host``, and
``cfg["db"]`` is a live sub-mapping over ``<prefix>/db/``.  The mapping models
a nested dict:

* **Leaf and prefix.**  Other tools can store both ``app/db`` and ``app/db/x``.
  Then the leaf wins: ``cfg["db"]`` is the leaf's value, iteration yields
  ``"db"`` once, and ``to_dict()`` holds the leaf; ``cfg.submapping("db")``
  still reaches the subtree.  ``del``/``pop`` remove both.
* **No empty directories.**  etcd stores keys, not directories, so assigning
  ``{}`` stores nothing and leaves no key behind.
* Keys with an empty path segment (``a//b``, written by other tools) cannot be
  addressed and are skipped by iteration, ``len`` and ``to_dict``.

Every method is one round trip (one range, one delete or one transaction),
except: scans of large subtrees, which page at one pinned revision; ``popitem``
(find a key, then pop it atomically); and ``list(m)``, for which Python calls
``len`` before iterating.  Keys with an empty path segment cost extra reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._live import LiveMixin
from ._plan import add_to_tree, chunk_ops, parse_key, plan_ops
from .client import MAX_PAGE_SIZE, EtcdClient
from .codecs import Codec, get_codec
from .errors import (
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdKeyError,
    EtcdPartialWrite,
    EtcdRequestTooLarge,
    EtcdUnavailable,
)
from .ops import ALL_KEYS, Compare, Delete, Op, Put, Range, prefix_end
from .records import DeleteRangeResponse, KeyValue, RangeResponse
from .views import EtcdItemsView, EtcdValuesView

if TYPE_CHECKING:
    from .cache import CachedMapping
    from .records import Event, TxnResponse

__all__ = ["EtcdMapping"]

T = TypeVar("T")
_MISSING: Any = object()
_CHUNK_BYTES = 1_400_000  # etcd's default --max-request-bytes is 1.5 MiB
_CAS_RETRIES = 8


def _plain(value: Any) -> Any:
    """Nested mappings as plain dicts."""
    if isinstance(value, EtcdMapping):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class EtcdMapping(LiveMixin, MutableMapping[str, Any]):
    """A dict-like view of the keys under ``prefix`` in etcd."""

    def __init__(
        self,
        prefix: str = "",
        *,
        client: EtcdClient | None = None,
        endpoints: str | list[str] | None = None,
        sep: str = "/",
        codec: str | Codec = "str",
        page_size: int = 1000,
    ):
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if not sep:
            raise ValueError("sep must not be empty")
        if client is not None and endpoints is not None:
            raise TypeError("give client or endpoints, not both")
        self._owns_client = client is None
        self._client = client if client is not None else EtcdClient(endpoints)
        self._sep = sep
        self._bsep = sep.encode()
        self._codec = get_codec(codec)
        self._page_size = page_size
        self._base = (prefix if not prefix or prefix.endswith(sep) else prefix + sep).encode()
        self._floor = self._base  # writes clear ancestor leaves down to here, not above

    def _derive(self, base: bytes) -> EtcdMapping:
        """A mapping like this one (same client, codec, lease) over ``base``."""
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child._owns_client = False
        child._base = base
        return child

    # -- plumbing ------------------------------------------------------------------

    @property
    def client(self) -> EtcdClient:
        """The client this mapping (and its sub-mappings) share."""
        return self._client

    @property
    def prefix(self) -> str:
        """The etcd key prefix of this mapping, ending in the separator."""
        return self._base.decode("utf-8", "surrogateescape")

    def _span(self) -> tuple[bytes, bytes]:
        return (self._base or ALL_KEYS), prefix_end(self._base)

    def _probe(self, full: bytes) -> Range:
        """A range that finds the first key of the subtree at ``full``."""
        return Range(*self._dir_span(full), limit=1, keys_only=True)

    def _has_subtree(self, full: bytes, probe: RangeResponse) -> bool:
        """Whether the subtree at ``full`` holds an addressable key, given its probe."""
        if not probe.kvs:
            return False
        rel = probe.kvs[0].key[len(full) + len(self._bsep):]
        if rel and b"" not in rel.split(self._bsep):
            return True
        # Rare: keys with empty segments, written by other tools. Look further.
        return next(self._derive(full + self._bsep)._scan(keys_only=True), None) is not None

    def _dir_span(self, full: bytes) -> tuple[bytes, bytes]:
        sub = full + self._bsep
        return sub, prefix_end(sub)

    def close(self) -> None:
        """Close the client, if this mapping created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        endpoints = self._client.endpoints
        return f"{type(self).__name__}(prefix={self.prefix!r}, endpoints={endpoints!r})"

    # -- reads -----------------------------------------------------------------------

    def _lookup(self, full: bytes, *, keys_only: bool = False) -> tuple[KeyValue | None, bool]:
        # One txn reads both the leaf and whether a subtree exists.
        resp = self._client.txn(success=[Range(full, keys_only=keys_only), self._probe(full)])
        leaf, tree = resp.responses
        assert isinstance(leaf, RangeResponse) and isinstance(tree, RangeResponse)
        if leaf.kvs:
            return leaf.kvs[0], False  # a leaf wins: no need to look at the subtree
        return None, self._has_subtree(full, tree)

    def __getitem__(self, key: str) -> Any:
        full = self._base + parse_key(key, self._sep, write=False)
        kv, is_dir = self._lookup(full)
        if kv is not None:
            return self._codec.decode(kv.value)
        if is_dir:
            return self._derive(full + self._bsep)
        raise EtcdKeyError(key)

    # Mapping.get would work through __getitem__; restated so a bad key type
    # gives the default like dict.get, and outages still raise.
    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when the key is absent."""
        try:
            return self[key]
        except KeyError:
            return default

    # Mapping.__contains__ would decode the value; a count-only lookup is enough.
    def __contains__(self, key: object) -> bool:
        try:
            full = self._base + parse_key(key, self._sep, write=False)
        except KeyError:
            return False
        kv, is_dir = self._lookup(full, keys_only=True)
        return kv is not None or is_dir

    def submapping(self, key: str) -> EtcdMapping:
        """The live sub-mapping at ``key``, whether or not anything is stored there."""
        full = self._base + parse_key(key, self._sep, write=True)
        return self._derive(full + self._bsep)

    def _scan(self, *, keys_only: bool,
              page_size: int | None = None) -> Iterator[tuple[str, KeyValue | None]]:
        """Each child once, in key order: ``(name, leaf kv)`` or ``(name, None)`` for a subtree."""
        start, end = self._span()
        base, sep, blen = self._base, self._bsep, len(self._base)
        pages = self._client.pages(start, end, keys_only=keys_only,
                                   page_size=page_size or self._page_size)
        leaves: list[bytes] = []  # recent leaves that may also prefix a subtree
        skip: bytes | None = None
        page = next(pages, None)
        while page is not None:
            for kv in page.kvs:
                rel = kv.key[blen:]
                if skip is not None and rel.startswith(skip):
                    continue
                head, found, rest = rel.partition(sep)
                leaves = [leaf for leaf in leaves if rel.startswith(leaf)]
                if not head or (found and (not rest or b"" in rest.split(sep))):
                    continue  # an empty segment: not addressable
                if found:
                    skip = head + sep
                    if head in leaves:
                        continue  # the leaf already stood for this name
                    yield head.decode("utf-8", "surrogateescape"), None
                else:
                    leaves.append(head)
                    yield head.decode("utf-8", "surrogateescape"), kv
            # Don't page through a subtree we have already yielded.
            jump = prefix_end(base + skip) if skip is not None else None
            page = pages.send(jump) if page.more else None

    def __iter__(self) -> Iterator[str]:
        for name, _ in self._scan(keys_only=True):
            yield name

    # Mapping.__len__ is abstract; counting children needs one keys-only scan.
    def __len__(self) -> int:
        return sum(1 for _ in self._scan(keys_only=True))

    # Mapping.items()/values() would call __getitem__ per key: one scan instead.
    def items(self) -> EtcdItemsView:
        """Live (name, value) pairs; a subtree's value is its sub-mapping."""
        return EtcdItemsView(self)

    def values(self) -> EtcdValuesView:
        """Live values; a subtree's value is its sub-mapping."""
        return EtcdValuesView(self)

    def _iter_items(self) -> Iterator[tuple[str, Any]]:
        decode = self._codec.decode
        for name, kv in self._scan(keys_only=False):
            if kv is None:
                yield name, self._derive(self._base + name.encode("utf-8", "surrogateescape")
                                         + self._bsep)
            else:
                yield name, decode(kv.value)

    def to_dict(self) -> dict[str, Any]:
        """The whole subtree as plain nested dicts, read at one revision."""
        return self._tree_at()[0]

    def _tree_at(self) -> tuple[dict[str, Any], int]:
        start, end = self._span()
        out: dict[str, Any] = {}
        revision = 0
        for page in self._client.pages(start, end, page_size=self._page_size):
            revision = page.revision
            add_to_tree(out, page.kvs, len(self._base), self._sep, self._codec.decode)
        return out, revision

    def getitems(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values, in as few transactions as fit."""
        wanted = []
        for key in keys:
            try:
                wanted.append((key, self._base + parse_key(key, self._sep, write=False)))
            except KeyError:
                continue  # a malformed key is absent
        out: dict[str, Any] = {}
        step = max(self._client.max_txn_ops // 2, 1)  # two ranges per key
        for i in range(0, len(wanted), step):
            chunk = wanted[i:i + step]
            ops: list[Op] = []
            for _, full in chunk:
                ops += [Range(full), self._probe(full)]
            resp = self._client.txn(success=ops)
            for n, (key, full) in enumerate(chunk):
                leaf, tree = resp.responses[2 * n], resp.responses[2 * n + 1]
                assert isinstance(leaf, RangeResponse) and isinstance(tree, RangeResponse)
                if leaf.kvs:
                    out[key] = self._codec.decode(leaf.kvs[0].value)
                elif self._has_subtree(full, tree):
                    out[key] = self._derive(full + self._bsep)
        return out

    # Mapping.__eq__ would read key by key; one consistent read instead.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return bool(self.to_dict() == _plain(other))

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self.to_dict(), **_plain(other)}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**_plain(other), **self.to_dict()}

    def __ior__(self, other: Any) -> EtcdMapping:  # type: ignore[misc]
        self.update(other)
        return self

    # -- writes -------------------------------------------------------------------------

    def _commit(self, items: Iterable[tuple[bytes, Any]],
                compare: list[Compare] | None = None,
                failure: list[Op] | None = None) -> TxnResponse:
        ops = plan_ops(self._floor, self._bsep, self._codec.encode, items)
        chunks = chunk_ops(ops, self._client.max_txn_ops, _CHUNK_BYTES)
        if len(chunks) == 1:
            return self._txn(compare or [], chunks[0], failure or [])
        if compare is not None:
            # A conditional write cannot be split: refuse before writing anything.
            raise EtcdRequestTooLarge(
                f"a conditional write of {len(ops)} ops does not fit in one transaction "
                f"(max_txn_ops={self._client.max_txn_ops})")
        # Not atomic anyway: one keys-only read spares the deletes that match nothing.
        ops = self._pruned(ops)
        return self._commit_chunks(chunk_ops(ops, self._client.max_txn_ops, _CHUNK_BYTES))

    def _pruned(self, ops: list[Put | Delete]) -> list[Put | Delete]:
        """``ops`` without the deletes whose range holds no key now."""
        deletes = [op for op in ops if isinstance(op, Delete)]  # sorted, disjoint
        if not deletes:
            return ops
        ends = [d.range_end or d.key + b"\0" for d in deletes]
        used: set[int] = set()
        i = 0
        for kv in self._client.range_iter(deletes[0].key, ends[-1], keys_only=True,
                                          page_size=MAX_PAGE_SIZE):
            while i < len(deletes) and ends[i] != ALL_KEYS and ends[i] <= kv.key:
                i += 1
            if i == len(deletes):
                break
            if deletes[i].key <= kv.key:
                used.add(i)
        keep = {deletes[i] for i in used}
        return [op for op in ops if not isinstance(op, Delete) or op in keep]

    def _commit_chunks(self, chunks: list[list[Put | Delete]]) -> TxnResponse:
        """Ordered transactions; on failure, say exactly what was written."""
        def text(key: bytes) -> str:
            return key.decode("utf-8", "surrogateescape")

        def puts(ops: list[Put | Delete]) -> list[str]:
            return [text(op.key) for op in ops if isinstance(op, Put)]

        def deletes(ops: list[Put | Delete]) -> list[str]:
            return [text(op.key) + ("*" if op.range_end else "")
                    for op in ops if isinstance(op, Delete)]

        written: list[str] = []
        deleted: list[str] = []
        resp = None
        for i, chunk in enumerate(chunks):
            try:
                resp = self._txn([], chunk, [])
            except EtcdError as exc:
                unknown = isinstance(exc, EtcdIndeterminateWrite)
                raise EtcdPartialWrite(
                    f"write stopped at transaction {i + 1} of {len(chunks)}: {exc}",
                    written=written, deleted=deleted,
                    uncertain=puts(chunk) if unknown else [],
                    unwritten=[n for c in chunks[i + unknown:] for n in puts(c)]) from exc
            written += puts(chunk)
            deleted += deletes(chunk)
        assert resp is not None
        return resp

    def __setitem__(self, key: str, value: Any) -> None:
        full = self._base + parse_key(key, self._sep, write=True)
        self._commit([(full, value)])

    def __delitem__(self, key: str) -> None:
        full = self._base + parse_key(key, self._sep, write=False)
        resp = self._txn([], [Delete(full), Delete(*self._dir_span(full))], [])
        if not any(isinstance(r, DeleteRangeResponse) and r.deleted for r in resp.responses):
            raise EtcdKeyError(key)

    @overload
    def pop(self, key: str) -> Any: ...
    @overload
    def pop(self, key: str, default: Any) -> Any: ...

    # MutableMapping.pop is get-then-delete (racy, 2 round trips): one txn with prev_kv.
    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (a subtree as a plain dict)."""
        try:
            full = self._base + parse_key(key, self._sep, write=False)
        except KeyError:
            if default is _MISSING:
                raise
            return default
        resp = self._txn([], [Delete(full, prev_kv=True),
                              Delete(*self._dir_span(full), prev_kv=True)], [])
        leaf, tree = resp.responses
        assert isinstance(leaf, DeleteRangeResponse) and isinstance(tree, DeleteRangeResponse)
        if leaf.prev_kvs:
            return self._codec.decode(leaf.prev_kvs[0].value)
        if tree.prev_kvs:
            out: dict[str, Any] = {}
            add_to_tree(out, tree.prev_kvs, len(full + self._bsep), self._sep, self._codec.decode)
            return out
        if default is _MISSING:
            raise EtcdKeyError(key)
        return default

    # MutableMapping.popitem is iter-then-pop; ours retries if another client won the race.
    def popitem(self) -> tuple[str, Any]:
        """Remove and return some ``(name, value)`` pair; ``KeyError`` when empty."""
        while True:
            first = next(self._scan(keys_only=True, page_size=1), None)
            if first is None:
                raise EtcdKeyError("popitem(): mapping is empty")
            value = self.pop(first[0], _MISSING_POP)
            if value is not _MISSING_POP:
                return first[0], value

    # MutableMapping.setdefault is get-then-set (racy): one txn, put only if absent.
    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else store ``default`` atomically and return it."""
        full = self._base + parse_key(key, self._sep, write=True)
        sub, end = self._dir_span(full)
        # First try "nothing at all under this name"; if only unaddressable keys
        # are there, retry with "the subtree has not changed since we checked".
        subtree_guard = Compare(sub, "VERSION", "==", 0, end)
        for _ in range(_CAS_RETRIES):
            resp = self._commit([(full, default)],
                                compare=[Compare(full, "VERSION", "==", 0), subtree_guard],
                                failure=[Range(full), self._probe(full)])
            if resp.succeeded:
                return self._derive(sub) if isinstance(default, Mapping) else default
            leaf, tree = resp.responses
            assert isinstance(leaf, RangeResponse) and isinstance(tree, RangeResponse)
            if leaf.kvs:
                return self._codec.decode(leaf.kvs[0].value)
            if self._has_subtree(full, tree):
                return self._derive(sub)
            subtree_guard = Compare(sub, "MOD", "<", resp.revision + 1, end)
        raise EtcdUnavailable(f"setdefault({key!r}) kept losing races; try again")

    def replace(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` only if it holds ``expected``; whether it did."""
        full = self._base + parse_key(key, self._sep, write=True)
        resp = self._commit([(full, new)],
                            compare=[Compare(full, "VALUE", "==", self._codec.encode(expected))])
        return resp.succeeded

    def cached(self, *, on_change: Callable[[list[Event[Any]]], None] | None = None,
               ) -> CachedMapping:
        """A local copy of this subtree, kept fresh by a watch; reads at dict speed."""
        from .cache import CachedMapping

        return CachedMapping(self.prefix, client=self._client, sep=self._sep,
                             codec=self._codec, page_size=self._page_size,
                             on_change=on_change)

    # MutableMapping.clear loops popitem (2N round trips): one delete-range.
    def clear(self) -> None:
        """Remove every key under the prefix."""
        start, end = self._span()
        self._client.delete_range(start, end)

    # MutableMapping.update sets key by key: one transaction (or ordered chunks).
    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Assign many keys at once, atomically when they fit in one transaction."""
        if isinstance(other, EtcdMapping):
            pairs: Iterable[tuple[Any, Any]] = other.to_dict().items()
        elif isinstance(other, Mapping):
            pairs = other.items()
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]  # noqa: SIM118 (dict's protocol)
        else:
            pairs = other
        items = [(self._base + parse_key(k, self._sep, write=True), v)
                 for k, v in [*pairs, *kwargs.items()]]
        if items:
            self._commit(items)


_MISSING_POP: Any = object()
