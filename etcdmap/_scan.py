"""A mapping's children, in key order, from pages of a range read at one revision.

The first page is read when a :class:`Children` iterator is made.  When that
page holds the whole subtree, the number of children is known at once, and a
``len()`` of the same mapping that follows in the same thread before the
iterator has moved (what ``list()``, ``sorted()`` and ``tuple()`` do: iterator
first, then a length hint) is answered from it: one request instead of two.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol, TypeVar

from ._plan import key_name
from .ops import prefix_end
from .records import KeyValue, RangeResponse

__all__ = ["Children", "fresh_len"]

T = TypeVar("T")
Pages = Generator[RangeResponse, "bytes | None", None]


class _Owner(Protocol):
    _fresh: tuple[int, int | None, weakref.ref[Any]] | None


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
            # Don't page through a subtree we have already yielded.
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
