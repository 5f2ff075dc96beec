"""``CachedMapping``: a ``dict`` of a subtree's children, kept fresh by a watch.

A cached node *is* a ``dict`` of its immediate children (sub-directories are
nested nodes), so ``m[k]`` costs what a dict lookup costs; a
:class:`~etcdmap._mirror.Mirror` behind the nodes loads the subtree and
follows its watch.  The node *holds* an :class:`~etcdmap.mapping.EtcdMapping`
over its prefix and sends every write through it; those writes, and those of
every view derived from the cache (``with_ttl``, ``lease()``,
``submapping``), return once the copy shows them (read-your-writes).

Every method ``dict`` would run on the raw data is restated here, under the
copy's lock: multi-key reads (``to_dict``, ``items``, iteration, ``len``,
``==``) see whole revisions, in key order, like the mapping's.  A closed
cache keeps its last copy for reading and refuses writes
(:class:`~etcdmap.errors.EtcdClosed`); if its follower died, reads and
writes raise the cause.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from ._mirror import Mirror
from ._settings import READ_TIMEOUT
from ._tree import many_keys, plain
from ._wire.keys import key_bytes
from .client import EtcdClient
from .errors import EtcdKeyError
from .lease import Lease
from .mapping import EtcdMapping
from .records import Event
from .watch import Watcher

__all__ = ["CachedMapping"]

_MISSING: Any = object()
OnChange = Callable[[list[Event[Any]]], None]


def _etcd_order(item: tuple[str, Any]) -> bytes:
    return key_bytes(item[0])


class CachedMapping(dict):  # type: ignore[type-arg]
    """A dict-fast, watch-fed local copy of the subtree under ``prefix``."""

    _mirror: Mirror
    _mapping: EtcdMapping
    _root: bool

    def __init__(self, mapping: EtcdMapping | str = "", *, on_change: OnChange | None = None,
                 endpoints: str | list[str] | None = None):
        """A cache of ``mapping`` (or of an :class:`EtcdMapping` made from a prefix and
        ``endpoints``); ``mapping.cached()`` is the usual way to make one."""
        dict.__init__(self)
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, not {type(on_change).__name__}")
        if isinstance(mapping, EtcdMapping):  # a view of its own: the hooks stay on it
            mapping = mapping._derive()
        else:
            mapping = EtcdMapping(mapping, endpoints=endpoints)
        self._root = True
        self._mapping = mapping
        self._mirror = mirror = Mirror(mapping, on_change, CachedMapping._node)
        mapping._hooks = mirror  # views derived from it inherit the hooks
        mirror.root = weakref.ref(self)
        try:
            mirror.load()
            mirror.start()
        except BaseException:
            mirror.closed.set()
            mapping.close()
            raise

    @classmethod
    def _node(cls, mirror: Mirror, mapping: EtcdMapping) -> CachedMapping:
        """A node below the root (made by the mirror)."""
        node = dict.__new__(cls)
        dict.__init__(node)
        node._root = False
        node._mapping = mapping
        node._mirror = mirror
        return node

    # -- lifecycle ------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The etcd key prefix of this node, ending in the separator."""
        return self._mapping.prefix

    @property
    def client(self) -> EtcdClient:
        """The client the cache uses."""
        return self._mapping.client

    @property
    def mapping(self) -> EtcdMapping:
        """The uncached mapping over this node's prefix (its writes keep the cache fresh)."""
        return self._mapping

    @property
    def revision(self) -> int:
        """The etcd revision the local copy reflects."""
        return self._mirror.revision

    def wait_for(self, revision: int, timeout: float | None = None) -> bool:
        """Block until the copy reflects ``revision`` (or later); whether it does."""
        return self._mirror.wait_for(revision, timeout)

    def close(self) -> None:
        """Stop following (and close the client if the cache created it).

        The last copy stays readable; writes raise :class:`EtcdClosed`.
        """
        self._mirror.close()
        self._mirror.mapping.close()

    def __enter__(self) -> CachedMapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_root", False):
            return
        mirror = self._mirror
        if mirror.closed.is_set():
            return
        warnings.warn(f"unclosed {self!r}; use it as a context manager or call close()",
                      ResourceWarning, source=self, stacklevel=2)
        # No joining threads in a finalizer: the follower ends at its next look.
        mirror.closed.set()
        watcher = mirror.watcher
        if watcher is not None:
            watcher.close(wait=False)

    def __repr__(self) -> str:
        return f"CachedMapping(prefix={self.prefix!r}, revision={self._mirror.revision})"

    def __reduce__(self) -> Any:
        raise TypeError("a CachedMapping follows a live watch and cannot be pickled; pickle "
                        "its .mapping and call .cached() where it is loaded")

    # -- reads, from memory ---------------------------------------------------------------

    def _locate(self, key: object) -> tuple[CachedMapping, str] | None:
        """The node that holds ``key``'s last segment, and that segment."""
        if not isinstance(key, str):
            return None
        node, sep = self, self._mapping._sep
        *parents, name = key.split(sep)
        nodes, bsep = self._mirror.nodes, self._mapping._bsep
        try:
            for part in parents:
                # By prefix, not through the parent's dict: a leaf at "x" hides
                # the node of "x/" there, and the mapping still reaches "x/y".
                child = nodes.get(node._mapping._base + key_bytes(part) + bsep)
                if child is None:
                    return None
                node = child
        except UnicodeEncodeError:
            return None
        return node, name

    def __missing__(self, key: Any) -> Any:
        # Path keys ("db/host") walk the nodes; anything else is absent.
        mirror = self._mirror
        mirror.check()
        found = self._locate(key)
        if found is not None:
            node, name = found
            if node is not self:
                with contextlib.suppress(KeyError):
                    return dict.__getitem__(node, name)
            with contextlib.suppress(UnicodeEncodeError):
                full = node._mapping._base + key_bytes(name)
                if full in mirror.undecodable:
                    raise mirror.undecodable[full]
        raise EtcdKeyError(key)

    # dict.get would not walk paths, and raises TypeError for unhashable keys.
    def get(self, key: Any, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when absent."""
        try:
            return self[key]
        except (KeyError, TypeError):
            self._mirror.check()
            return default

    # dict.__contains__ would not walk paths, nor see undecodable values.
    def __contains__(self, key: object) -> bool:
        self._mirror.check()
        found = self._locate(key)
        if found is None:
            return False
        node, name = found
        if dict.__contains__(node, name):
            return True
        try:
            return node._mapping._base + key_bytes(name) in self._mirror.undecodable
        except UnicodeEncodeError:
            return False

    def _items(self) -> list[tuple[str, Any]]:
        """This node's children as of now, in key order."""
        mirror = self._mirror
        with mirror.lock:
            mirror.check()
            items = list(dict.items(self))
        items.sort(key=_etcd_order)
        return items

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items()])

    def __reversed__(self) -> Iterator[str]:
        return iter([name for name, _ in reversed(self._items())])

    def __len__(self) -> int:
        with self._mirror.lock:  # never mid-revision
            self._mirror.check()
            return dict.__len__(self)

    def __bool__(self) -> bool:
        return len(self) > 0

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        """The children's names, as of now."""
        return dict(self._items()).keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        """``(name, value)`` pairs as of now; sub-directories are cached nodes."""
        return dict(self._items()).items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        """Values as of now; sub-directories are cached nodes."""
        return dict(self._items()).values()

    def getitems(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values (from memory)."""
        out = {}
        for key in many_keys(keys):
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """The subtree as plain nested dicts, at one revision, in key order."""
        with self._mirror.lock:
            return {k: v.to_dict() if isinstance(v, CachedMapping) else v
                    for k, v in self._items()}

    def snapshot(self) -> tuple[dict[str, Any], int]:
        """``(to_dict(), revision)`` from memory."""
        with self._mirror.lock:
            return self.to_dict(), self._mirror.revision

    # Like EtcdMapping.copy(): a snapshot as plain nested dicts.
    def copy(self) -> dict[str, Any]:
        """The subtree as plain nested dicts (changing it changes nothing)."""
        return self.to_dict()

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> dict[Any, Any]:
        """``dict.fromkeys``: a plain dict."""
        return dict.fromkeys(iterable, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return bool(self.to_dict() == plain(other))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self.to_dict(), **plain(other)}

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**plain(other), **self.to_dict()}

    # -- writes: to etcd through the mapping, whose hooks wait for the copy -----------------

    def __setitem__(self, key: str, value: Any) -> None:
        self._mapping[key] = value

    def __delitem__(self, key: str) -> None:
        del self._mapping[key]

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (a subtree as a plain dict)."""
        if default is _MISSING:
            return self._mapping.pop(key)
        return self._mapping.pop(key, default)

    def popitem(self) -> tuple[str, Any]:
        """Remove and return some ``(name, value)`` pair (the first in key order)."""
        return self._mapping.popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else store ``default`` atomically and return it."""
        value = self._mapping.setdefault(key, default)
        if isinstance(value, EtcdMapping):  # a subtree: its cached node (none if it is empty)
            return self.get(key, value)
        return value

    def replace(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` only if it holds ``expected``; whether it did."""
        return self._mapping.replace(key, expected, new)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Assign many keys at once, atomically when they fit in one transaction."""
        self._mapping.update(other, **kwargs)

    def __ior__(self, other: Any) -> CachedMapping:
        self.update(other)
        return self

    def clear(self) -> None:
        """Remove every key under the prefix (one delete-range)."""
        self._mapping.clear()

    # -- what the mapping offers besides -----------------------------------------------

    def submapping(self, key: str) -> EtcdMapping:
        """The live (uncached) sub-mapping at ``key``; its writes keep the cache fresh."""
        return self._mapping.submapping(key)

    def with_ttl(self, seconds: int) -> EtcdMapping:
        """A view whose writes expire after ``seconds``; they keep the cache fresh."""
        return self._mapping.with_ttl(seconds)

    def lease(self, ttl: int, *, keepalive: bool = True,
              on_expired: Callable[[Lease], None] | None = None,
              ) -> contextlib.AbstractContextManager[EtcdMapping]:
        """A view whose writes share one lease while the block runs (see EtcdMapping.lease)."""
        return self._mapping.lease(ttl, keepalive=keepalive, on_expired=on_expired)

    def ttl(self, key: str) -> int | None:
        """Seconds left on ``key``'s lease (asks etcd)."""
        return self._mapping.ttl(key)

    def watch(self, key: str | None = None, *, start_revision: int | None = None,
              prev_kv: bool = False, read_timeout: float = READ_TIMEOUT) -> Watcher[Any]:
        """Changes under this node, as :meth:`EtcdMapping.watch`."""
        return self._mapping.watch(key, start_revision=start_revision, prev_kv=prev_kv,
                                   read_timeout=read_timeout)


EtcdMapping.cache_type = CachedMapping  # what EtcdMapping.cached() makes
