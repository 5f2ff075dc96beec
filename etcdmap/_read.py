"""How a mapping's reads become ranges: lookups, children in key order, whole subtrees.

A lookup reads the leaf at a name and whether a subtree is below it, at one
revision (see :meth:`EtcdClient.range_many` for how many requests that is).
Children come from pages of one range read at one revision: the first page
is read when a :class:`Children` iterator is made.  When that page holds the
whole subtree, the number of children is known at once, and a ``len()`` of
the same mapping that follows in the same thread before the iterator has
moved (what ``list()``, ``sorted()`` and ``tuple()`` do: iterator first, then
a length hint) is answered from it: one request instead of two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._settings import MAX_PAGE_SIZE
from ._tree import add_to_tree, many_keys
from ._wire.keys import key_name
from .ops import Range, prefix_end
from .records import KeyValue, RangeResponse

if TYPE_CHECKING:
    from .client import EtcdClient

__all__ = ["Children", "addressable", "fresh_len", "leaf_and_below", "lookup", "lookup_all",
           "has_children", "tree_at", "values_of"]

T = TypeVar("T")
Pages = Generator[RangeResponse, "bytes | None", None]


class _Owner(Protocol):
    _fresh: tuple[int, int | None, weakref.ref[Any]] | None


class Reader(Protocol):
    """What a mapping knows that its reads need."""

    _client: EtcdClient
    _base: bytes
    _bsep: bytes
    _sep: str
    _page_size: int

    def _span(self) -> tuple[bytes, bytes]: ...
    def _dir_span(self, full: bytes) -> tuple[bytes, bytes]: ...
    def _decode_at(self, data: bytes, key: bytes) -> Any: ...
    def _decode(self, kv: KeyValue) -> Any: ...
    def _subtree_names(self, full: bytes) -> Iterator[str]: ...
    def _full(self, key: object, *, write: bool) -> bytes: ...
    def _names(self, page_size: int) -> Iterator[str]: ...
    def _derive(self, base: bytes | None = None, **attrs: Any) -> Any: ...


def probe(m: Reader, full: bytes, revision: int = 0) -> Range:
    """A range that finds the first key of the subtree at ``full``."""
    return Range(*m._dir_span(full), limit=1, keys_only=True, revision=revision)


def addressable(m: Reader, full: bytes, first: tuple[KeyValue, ...]) -> bool:
    """Whether the subtree at ``full`` holds an addressable key, given its first key."""
    if not first:
        return False
    rel = first[0].key[len(full) + len(m._bsep):]
    if rel and b"" not in rel.split(m._bsep):
        return True
    # Rare: keys with empty segments, written by other tools. Look further.
    return next(m._subtree_names(full), None) is not None


def leaf_and_below(m: Reader, full: bytes, below: Range, *, keys_only: bool = False,
                   revision: int = 0) -> tuple[RangeResponse, RangeResponse | None]:
    """The leaf at ``full`` and the answer to ``below``, read at one revision.

    One read-only transaction where that is safe; else the leaf first, and
    ``below`` (pinned to its revision) only when there is no leaf.
    """
    client = m._client
    leaf_req = Range(full, keys_only=keys_only, revision=revision)
    if client.txn_reads:
        leaf, tree = client.range_many([leaf_req, below])
        return leaf, tree
    (leaf,) = client.range_many([leaf_req])
    if leaf.kvs:
        return leaf, None
    pinned = dataclasses.replace(below, revision=revision or leaf.revision)
    return leaf, client.range_many([pinned])[0]


def lookup(m: Reader, full: bytes, *, keys_only: bool = False,
           revision: int = 0) -> tuple[KeyValue | None, bool, int]:
    """The leaf at ``full``, whether a subtree is there, and the revision read at."""
    leaf, tree = leaf_and_below(m, full, probe(m, full), keys_only=keys_only, revision=revision)
    at = revision or leaf.revision
    if leaf.kvs:
        return leaf.kvs[0], False, at  # a leaf wins: no need to look at the subtree
    return None, tree is not None and addressable(m, full, tree.kvs), at


def lookup_all(m: Reader, fulls: list[bytes]) -> list[tuple[KeyValue | None, bool]]:
    """:func:`lookup` of each of ``fulls``, all at one revision, in few requests."""
    if not fulls:
        return []
    if m._client.txn_reads:  # a leaf and a probe per key, in few transactions
        answers = m._client.range_many([op for full in fulls
                                        for op in (Range(full), probe(m, full))])
        return [(leaf.kvs[0] if leaf.kvs else None, addressable(m, full, tree.kvs))
                for full, leaf, tree in zip(fulls, answers[::2], answers[1::2], strict=True)]
    # Every leaf, then a probe for each key without one, all at the first read's
    # revision (the transport may have many of them in flight at once).
    leaves = m._client.range_many([Range(full) for full in fulls])
    revision = leaves[0].revision
    bare = [full for full, leaf in zip(fulls, leaves, strict=True) if not leaf.kvs]
    trees = dict(zip(bare, m._client.range_many([probe(m, full, revision) for full in bare]),
                     strict=True))
    return [(leaf.kvs[0], False) if leaf.kvs else (None, addressable(m, full, trees[full].kvs))
            for full, leaf in zip(fulls, leaves, strict=True)]


def has_children(m: Reader) -> bool:
    """Whether the mapping has a child: its first key tells, but for empty segments."""
    start, end = m._span()
    first = m._client.range(start, end, limit=1, keys_only=True).kvs
    if not first:
        return False
    rel = first[0].key[len(m._base):]
    if rel and b"" not in rel.split(m._bsep):
        return True
    return next(m._names(m._page_size), None) is not None  # rare: empty segments first


def values_of(m: Reader, keys: Iterable[str]) -> dict[str, Any]:
    """``getitems``: the present ones of ``keys`` with their values, at one revision."""
    wanted = []
    for key in many_keys(keys):
        with contextlib.suppress(KeyError):  # a malformed key is absent
            wanted.append((key, m._full(key, write=False)))
    out: dict[str, Any] = {}
    found = lookup_all(m, [full for _, full in wanted])
    for (key, full), (kv, is_dir) in zip(wanted, found, strict=True):
        if kv is not None:
            out[key] = m._decode(kv)
        elif is_dir:
            out[key] = m._derive(full + m._bsep)
    return out


def tree_at(m: Reader, progress: Callable[[int, int], None] | None = None,
            ) -> tuple[dict[str, Any], int]:
    """The subtree as nested dicts and the revision it was read at.

    ``progress(keys read, keys in all)`` is called after each page.
    """
    start, end = m._span()
    out: dict[str, Any] = {}
    revision = done = total = 0
    # All of it is kept anyway: the largest pages from the start, fewest round trips
    # (unless someone watches the progress, which then moves page by page).
    first = m._page_size if progress is not None else max(m._page_size, MAX_PAGE_SIZE)
    for page in m._client.pages(start, end, page_size=first):
        revision = page.revision
        total = total or page.count
        add_to_tree(out, page.kvs, len(m._base), m._sep, m._decode_at)
        done += len(page.kvs)
        if progress is not None:
            progress(done, total)
    return out, revision


class Children(Iterator[T]):
    """``convert(name, leaf kv or None for a subtree)`` for each child once, in key order."""

    def __init__(self, owner: _Owner, pages: Pages, base: bytes, sep: bytes,
                 convert: Callable[[str, KeyValue | None], T]):
        self._base, self._sep, self._convert = base, sep, convert
        self.started = False
        first = next(pages, None)
        count: int | None = None
        if first is None or not first.more:
            listed = list(self._walk(first, None))
            count = len(listed)
            self._source: Iterator[tuple[str, KeyValue | None]] = iter(listed)
        else:
            self._source = self._walk(first, pages)
        owner._fresh = (threading.get_ident(), count, weakref.ref(self))

    def __iter__(self) -> Children[T]:
        return self

    def __next__(self) -> T:
        self.started = True
        name, kv = next(self._source)
        return self._convert(name, kv)

    def _walk(self, page: RangeResponse | None,
              pages: Pages | None) -> Iterator[tuple[str, KeyValue | None]]:
        base, sep, blen = self._base, self._sep, len(self._base)
        leaves: list[bytes] = []  # recent leaves that may also prefix a subtree
        skip: bytes | None = None
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
                    yield key_name(head), None
                else:
                    leaves.append(head)
                    yield key_name(head), kv
            if pages is None or not page.more:
                return
            # Don't page through a subtree we have already yielded; and let go of
            # this page before the next is read: one page in memory, not two.
            page = None
            page = pages.send(prefix_end(base + skip) if skip is not None else None)


def fresh_len(owner: _Owner) -> int | None:
    """The child count of ``owner``'s iterator made just before, if it can answer for it."""
    fresh, owner._fresh = owner._fresh, None
    if fresh is None:
        return None
    ident, count, ref = fresh
    children = ref()
    if ident != threading.get_ident() or count is None or children is None \
            or children.started:
        return None
    return count
