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
* **Keys other tools wrote** that are not UTF-8 are names with ``surrogateescape``;
  keys with an empty path segment (``a//b``) cannot be addressed and are skipped.

This module is the dict surface: reads become ranges in :mod:`._read`, writes
transactions in :mod:`._commit`, paths and write plans are the pure :mod:`._tree`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._commit import ABSENT, commit, put_if_absent, take, take_first
from ._coordination import Coordination
from ._over_time import OverTime
from ._read import Children, fresh_len, has_children, lookup, tree_at, values_of
from ._settings import PAGE_SIZE, check_count
from ._tree import pairs_of, parse_key, plain, prefix_bytes
from ._wire.keys import key_bytes, key_name
from ._wire.replies import changed
from .client import EtcdClient
from .codecs import Codec, decode_value, encode_value, get_codec
from .errors import EtcdKeyError, EtcdLeaseNotFound
from .lease import PerWrite
from .ops import ALL_KEYS, Compare, Delete, Op, prefix_end
from .records import DeleteRangeResponse, KeyValue, TxnResponse
from .views import EtcdItemsView, EtcdKeysView, EtcdValuesView

if TYPE_CHECKING:
    from .cache import CachedMapping
    from .records import Event

__all__ = ["EtcdMapping"]

T = TypeVar("T")
_MISSING: Any = object()


def _name(name: str, kv: KeyValue | None) -> str:
    return name


class EtcdMapping(OverTime, Coordination, MutableMapping[str, Any]):
    """A dict-like view of the keys under ``prefix`` in etcd."""

    _fresh: Any = None  # what the last iterator read, for the len() after it (see _read)
    # The cache class, registered by etcdmap.cache (which builds on this module).
    cache_type: Callable[..., CachedMapping] | None = None

    def __init__(
        self,
        prefix: str = "",
        *,
        client: EtcdClient | None = None,
        endpoints: str | list[str] | None = None,
        sep: str = "/",
        codec: str | Codec = "str",
        page_size: int = PAGE_SIZE,
        transport: str | None = None,
    ):
        if client is not None and (endpoints is not None or transport is not None):
            raise TypeError("give client, or endpoints and transport, not both")
        if client is not None and not isinstance(client, EtcdClient):
            raise TypeError(f"client must be an EtcdClient, not {type(client).__name__}")
        self._codec = get_codec(codec)
        self._page_size = check_count("page_size", page_size)
        base = prefix_bytes(prefix, sep)
        self._owns_client = client is None
        self._client = client if client is not None else EtcdClient(endpoints,
                                                                    transport=transport)
        self._sep = sep
        self._bsep = sep.encode()
        self._base = base
        self._floor = base  # writes clear ancestor leaves down to here, not above

    def _derive(self, base: bytes | None = None, **attrs: Any) -> EtcdMapping:
        """A view like this one (same client, codec, lease, hooks) over ``base``."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.__dict__.update(attrs, _owns_client=False, _fresh=None)
        if base is not None:
            view._base = base
        return view

    # -- plumbing ------------------------------------------------------------------

    @property
    def client(self) -> EtcdClient:
        """The client this mapping (and its sub-mappings) share."""
        return self._client

    @property
    def prefix(self) -> str:
        """The etcd key prefix of this mapping, ending in the separator."""
        return key_name(self._base)

    def _span(self) -> tuple[bytes, bytes]:
        return (self._base or ALL_KEYS), prefix_end(self._base)

    def _dir_span(self, full: bytes) -> tuple[bytes, bytes]:
        sub = full + self._bsep
        return sub, prefix_end(sub)

    def _subtree_names(self, full: bytes) -> Iterator[str]:
        return iter(self._derive(full + self._bsep))

    def _names(self, page_size: int) -> Iterator[str]:
        return self._children(_name, keys_only=True, page_size=page_size)

    def _decode(self, kv: KeyValue) -> Any:
        return decode_value(self._codec, kv.value, kv.key)

    def _decode_at(self, data: bytes, key: bytes) -> Any:
        return decode_value(self._codec, data, key)

    def _encode(self, value: Any, key: bytes) -> bytes:
        return encode_value(self._codec, value, key)

    def _full(self, key: object, *, write: bool) -> bytes:
        return self._base + parse_key(key, self._sep, write=write)

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

    # -- copies and pickles ------------------------------------------------------------

    # Like dict.copy(): a snapshot, here read at one revision as plain nested dicts.
    def copy(self) -> dict[str, Any]:
        """The subtree as plain nested dicts (a snapshot; changing it changes nothing)."""
        return self.to_dict()

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return self.to_dict()

    def __reduce__(self) -> Any:
        # What rebuilds an equal view elsewhere (a spawn worker): the client's
        # endpoints, TLS files and timeouts, never its user or password.
        if self.current_lease is not None:
            raise TypeError("a lease() view is bound to a lease kept alive in this process "
                            "and cannot be pickled; pickle the mapping it came from")
        ttl = self._policy.ttl if isinstance(self._policy, PerWrite) else 0
        return (_rebuild, (self._client, key_name(self._base), self._sep, self._codec,
                           self._page_size, ttl))

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> dict[Any, Any]:
        """``dict.fromkeys``: a plain dict (a mapping over etcd needs a prefix and client)."""
        return dict.fromkeys(iterable, value)

    # -- reads -----------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        full = self._full(key, write=False)
        kv, is_dir, _ = lookup(self, full)
        if kv is not None:
            return self._decode(kv)
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

    # Mapping.__contains__ would decode the value; a keys-only lookup is enough.
    def __contains__(self, key: object) -> bool:
        try:
            full = self._full(key, write=False)
        except KeyError:
            return False
        kv, is_dir, _ = lookup(self, full, keys_only=True)
        return kv is not None or is_dir

    def submapping(self, key: str) -> EtcdMapping:
        """The live sub-mapping at ``key``, whether or not anything is stored there."""
        return self._derive(self._full(key, write=True) + self._bsep)

    def _children(self, convert: Callable[[str, KeyValue | None], T], *, keys_only: bool,
                  page_size: int | None = None) -> Children[T]:
        start, end = self._span()
        pages = self._client.pages(start, end, keys_only=keys_only,
                                   page_size=page_size or self._page_size)
        return Children(self, pages, self._base, self._bsep, convert)

    def _item(self, name: str, kv: KeyValue | None) -> tuple[str, Any]:
        if kv is None:
            return name, self._derive(self._base + key_bytes(name) + self._bsep)
        return name, self._decode(kv)

    # The iterator reads the first page at once, so that the len() that list()
    # and sorted() ask for right after it is answered from that page (one request).
    def __iter__(self) -> Iterator[str]:
        return self._children(_name, keys_only=True)

    # Mapping.__len__ is abstract; counting children needs one keys-only scan.
    def __len__(self) -> int:
        fresh = fresh_len(self)
        if fresh is not None:
            return fresh
        return sum(1 for _ in self._children(_name, keys_only=True))

    # Mapping would be truthy through __len__ (a scan): the first key is enough.
    def __bool__(self) -> bool:
        return has_children(self)

    def __reversed__(self) -> Iterator[str]:
        return reversed(list(self))

    # KeysView/ItemsView/ValuesView would call __getitem__ once per key.
    def keys(self) -> EtcdKeysView:
        """Live names of the children."""
        return EtcdKeysView(self)

    def items(self) -> EtcdItemsView:
        """Live (name, value) pairs; a subtree's value is its sub-mapping."""
        return EtcdItemsView(self)

    def values(self) -> EtcdValuesView:
        """Live values; a subtree's value is its sub-mapping."""
        return EtcdValuesView(self)

    def _iter_items(self) -> Iterator[tuple[str, Any]]:
        return self._children(self._item, keys_only=False)

    def to_dict(self, *, progress: Callable[[int, int], None] | None = None
                ) -> dict[str, Any]:
        """The whole subtree as plain nested dicts, read at one revision.

        ``progress(keys read, keys in all)`` is called after each page.
        """
        return tree_at(self, progress)[0]

    def snapshot(self) -> tuple[dict[str, Any], int]:
        """``(to_dict(), revision)``: the subtree and the revision it was read at."""
        return tree_at(self)

    def getitems(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values, all read at one revision.

        In as few requests as is safe: see :meth:`EtcdClient.range_many`.
        """
        return values_of(self, keys)

    # Mapping.__eq__ would read key by key; one consistent read instead.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return bool(self.to_dict() == plain(other))

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self.to_dict(), **plain(other)}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**plain(other), **self.to_dict()}

    def __ior__(self, other: Any) -> EtcdMapping:  # type: ignore[misc]
        self.update(other)
        return self

    # -- writes -------------------------------------------------------------------------

    def _txn(self, compare: Sequence[Compare], success: Sequence[Op],
             failure: Sequence[Op]) -> TxnResponse:
        """The one way a mapping writes: the view's lease on each put, then its hooks."""
        hooks, policy = self._hooks, self._policy
        if hooks is not None:
            hooks.before_write()
        if policy is not None:
            success = policy.attach(success)
        try:
            resp = self._fence.run(self._client, compare, success, failure)
        except EtcdLeaseNotFound as exc:
            if policy is None:
                raise
            raise policy.refused(exc) from exc
        if hooks is not None:
            hooks.after_write(resp.revision, changed(resp))
        return resp

    def __setitem__(self, key: str, value: Any) -> None:
        commit(self, [(self._full(key, write=True), value)], None, None)

    def __delitem__(self, key: str) -> None:
        full = self._full(key, write=False)
        resp = self._txn([], [Delete(full), Delete(*self._dir_span(full))], [])
        if not any(isinstance(r, DeleteRangeResponse) and r.deleted for r in resp.responses):
            raise EtcdKeyError(key)

    @overload
    def pop(self, key: str) -> Any: ...
    @overload
    def pop(self, key: str, default: Any) -> Any: ...

    # MutableMapping.pop is get-then-delete, racy and blind to what it deletes.
    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (a subtree as a plain dict).

        Atomic: the value is read and decoded first, and removed only if
        nothing under the name changed meanwhile; a value the codec cannot
        read raises :class:`EtcdCodecError` and stays in etcd.
        """
        try:
            full = self._full(key, write=False)
        except KeyError:
            if default is _MISSING:
                raise
            return default
        value = take(self, full)
        if value is ABSENT:
            if default is _MISSING:
                raise EtcdKeyError(key)
            return default
        return value

    # MutableMapping.popitem is iter-then-pop; ours retries (boundedly) when
    # another client took the item first.
    def popitem(self) -> tuple[str, Any]:
        """Remove and return some ``(name, value)`` pair (the first, when uncontended).

        ``KeyError`` when empty; :class:`EtcdConflict` if other clients took
        every item it tried, many times over.
        """
        return take_first(self)

    # MutableMapping.setdefault is get-then-set (racy): one txn, put only if absent.
    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else store ``default`` atomically and return it."""
        full = self._full(key, write=True)
        found, value = put_if_absent(self, full, default)
        if found == "subtree" or (found == "stored" and isinstance(default, Mapping)):
            return self._derive(full + self._bsep)  # a subtree: its live sub-mapping
        return value

    def replace(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` only if it holds ``expected``; whether it did."""
        full = self._full(key, write=True)
        resp = commit(self, [(full, new)],
                      [Compare(full, "VALUE", "==", self._encode(expected, full))], None)
        return resp.succeeded

    # MutableMapping.clear loops popitem (2N round trips): one delete-range.
    def clear(self) -> None:
        """Remove every key under the prefix."""
        start, end = self._span()
        if self._fence.compares:  # a guarded view: only through the fence
            self._txn([], [Delete(start, end)], [])
            return
        if self._hooks is not None:
            self._hooks.before_write()
        resp = self._client.delete_range(start, end)
        if self._hooks is not None:
            self._hooks.after_write(resp.revision, bool(resp.deleted))

    # MutableMapping.update sets key by key: one transaction (or ordered chunks).
    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Assign many keys at once, atomically when they fit in one transaction."""
        items = [(self._full(k, write=True), v) for k, v in pairs_of(other, kwargs)]
        if items:
            commit(self, items, None, None)

    def write(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
              replace: bool = False, progress: Callable[[int, int], None] | None = None,
              ) -> None:
        """Assign many paths at once, like :meth:`update`; with ``replace`` the subtree
        becomes exactly ``items`` (what they do not hold is removed).

        One transaction when it fits; else ordered chunks (readers may see it
        half done; :class:`EtcdPartialWrite` says what was written), with
        ``progress(ops done, ops in all)`` after each.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        full = [(self._full(k, write=True), v) for k, v in pairs]
        commit(self, full, None, None, clear=self._span() if replace else None,
               progress=progress)

    # -- a cached copy ---------------------------------------------------------------

    def cached(self, *, on_change: Callable[[list[Event[Any]]], None] | None = None,
               ) -> CachedMapping:
        """A local copy of this subtree, kept fresh by a watch; reads at dict speed."""
        assert EtcdMapping.cache_type is not None, "etcdmap.cache registers itself on import"
        return EtcdMapping.cache_type(self, on_change=on_change)


def _rebuild(client: EtcdClient, prefix: str, sep: str, codec: Codec, page_size: int,
             ttl: int) -> EtcdMapping:
    """An :class:`EtcdMapping` from a pickle (with a client of its own)."""
    mapping = EtcdMapping(prefix, client=client, sep=sep, codec=codec, page_size=page_size)
    if ttl:
        mapping = mapping.with_ttl(ttl)
    mapping._owns_client = True
    return mapping
