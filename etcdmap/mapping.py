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
* **Keys that are not UTF-8** (written by other tools) are names with
  ``surrogateescape`` (``b"\\xff"`` is ``"\\udcff"``), which address them again.
* Keys with an empty path segment (``a//b``, written by other tools) cannot be
  addressed and are skipped by iteration, ``len`` and ``to_dict``.

Most methods are one round trip (one range, one delete or one transaction);
the exceptions are listed in the README ("What each spelling costs").
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._commit import commit
from ._live import LiveMixin
from ._plan import add_to_tree, key_bytes, key_name, parse_key
from ._scan import Children, fresh_len
from .client import EtcdClient, check_count
from .codecs import Codec, decode_value, encode_value, get_codec
from .errors import EtcdConflict, EtcdKeyError, EtcdProtocolError
from .ops import ALL_KEYS, Compare, Delete, Range, prefix_end
from .records import DeleteRangeResponse, KeyValue, RangeResponse
from .views import EtcdItemsView, EtcdKeysView, EtcdValuesView

if TYPE_CHECKING:
    from .cache import CachedMapping
    from .records import Event, TxnResponse

__all__ = ["EtcdMapping"]

T = TypeVar("T")
_MISSING: Any = object()
_CAS_RETRIES = 8  # a compare-and-swap gives up (EtcdConflict) after losing this many races
_POPITEM_TRIES = 64  # popitem() competes with other poppers for the same few items
_SPREAD = 16  # after a lost race, popitem() picks among this many first names


def _plain(value: Any) -> Any:
    """Nested mappings as plain dicts."""
    if isinstance(value, EtcdMapping):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class EtcdMapping(LiveMixin, MutableMapping[str, Any]):
    """A dict-like view of the keys under ``prefix`` in etcd."""

    _fresh: Any = None  # what the last iterator read, for the len() after it (see _scan)

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
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if not isinstance(sep, str):
            raise TypeError(f"sep must be a str, not {type(sep).__name__}")
        if not sep:
            raise ValueError("sep must not be empty")
        if client is not None and endpoints is not None:
            raise TypeError("give client or endpoints, not both")
        if client is not None and not isinstance(client, EtcdClient):
            raise TypeError(f"client must be an EtcdClient, not {type(client).__name__}")
        self._codec = get_codec(codec)
        self._page_size = check_count("page_size", page_size)
        try:
            base = key_bytes(prefix if not prefix or prefix.endswith(sep) else prefix + sep)
        except UnicodeEncodeError:
            raise ValueError(f"invalid prefix {prefix!r}: a lone surrogate is no etcd key") \
                from None
        self._owns_client = client is None
        self._client = client if client is not None else EtcdClient(endpoints)
        self._sep = sep
        self._bsep = sep.encode()
        self._base = base
        self._floor = base  # writes clear ancestor leaves down to here, not above

    def _derive(self, base: bytes) -> EtcdMapping:
        """A mapping like this one (same client, codec, lease, hooks) over ``base``."""
        child = object.__new__(type(self))
        child.__dict__.update(self.__dict__)
        child._owns_client = False
        child._base = base
        child._fresh = None
        return child

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

    def _probe(self, full: bytes, revision: int = 0) -> Range:
        """A range that finds the first key of the subtree at ``full``."""
        return Range(*self._dir_span(full), limit=1, keys_only=True, revision=revision)

    def _addressable(self, full: bytes, first: tuple[KeyValue, ...]) -> bool:
        """Whether the subtree at ``full`` holds an addressable key, given its first key."""
        if not first:
            return False
        rel = first[0].key[len(full) + len(self._bsep):]
        if rel and b"" not in rel.split(self._bsep):
            return True
        # Rare: keys with empty segments, written by other tools. Look further.
        return next(iter(self._derive(full + self._bsep)), None) is not None

    def _decode(self, kv: KeyValue) -> Any:
        return decode_value(self._codec, kv.value, kv.key)

    def _decode_at(self, data: bytes, key: bytes) -> Any:
        return decode_value(self._codec, data, key)

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
        return (_rebuild, (self._client, key_name(self._base), self._sep, self._codec,
                           self._page_size, self._ttl))

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> dict[Any, Any]:
        """``dict.fromkeys``: a plain dict (a mapping over etcd needs a prefix and client)."""
        return dict.fromkeys(iterable, value)

    # -- reads -----------------------------------------------------------------------

    def _leaf_and_below(self, full: bytes, below: Range, *, keys_only: bool = False,
                        revision: int = 0) -> tuple[RangeResponse, RangeResponse | None]:
        """The leaf at ``full`` and the answer to ``below``, read at one revision.

        One read-only transaction where that is safe; else the leaf first, and
        ``below`` (pinned to its revision) only when there is no leaf.
        """
        leaf_req = Range(full, keys_only=keys_only, revision=revision)
        if self._client.txn_reads:
            leaf, tree = self._client.range_many([leaf_req, below])
            return leaf, tree
        (leaf,) = self._client.range_many([leaf_req])
        if leaf.kvs:
            return leaf, None
        pinned = dataclasses.replace(below, revision=revision or leaf.revision)
        return leaf, self._client.range_many([pinned])[0]

    def _lookup(self, full: bytes, *, keys_only: bool = False,
                revision: int = 0) -> tuple[KeyValue | None, bool, int]:
        """The leaf at ``full``, whether a subtree is there, and the revision read at."""
        leaf, tree = self._leaf_and_below(full, self._probe(full), keys_only=keys_only,
                                          revision=revision)
        at = revision or leaf.revision
        if leaf.kvs:
            return leaf.kvs[0], False, at  # a leaf wins: no need to look at the subtree
        return None, tree is not None and self._addressable(full, tree.kvs), at

    def __getitem__(self, key: str) -> Any:
        full = self._base + parse_key(key, self._sep, write=False)
        kv, is_dir, _ = self._lookup(full)
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
            full = self._base + parse_key(key, self._sep, write=False)
        except KeyError:
            return False
        kv, is_dir, _ = self._lookup(full, keys_only=True)
        return kv is not None or is_dir

    def submapping(self, key: str) -> EtcdMapping:
        """The live sub-mapping at ``key``, whether or not anything is stored there."""
        full = self._base + parse_key(key, self._sep, write=True)
        return self._derive(full + self._bsep)

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
        start, end = self._span()
        first = self._client.range(start, end, limit=1, keys_only=True).kvs
        if not first:
            return False
        rel = first[0].key[len(self._base):]
        if rel and b"" not in rel.split(self._bsep):
            return True
        return next(iter(self), None) is not None  # rare: empty segments first

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

    def to_dict(self) -> dict[str, Any]:
        """The whole subtree as plain nested dicts, read at one revision."""
        return self._tree_at()[0]

    def _tree_at(self) -> tuple[dict[str, Any], int]:
        start, end = self._span()
        out: dict[str, Any] = {}
        revision = 0
        for page in self._client.pages(start, end, page_size=self._page_size):
            revision = page.revision
            add_to_tree(out, page.kvs, len(self._base), self._sep, self._decode_at)
        return out, revision

    def getitems(self, keys: Iterable[str]) -> dict[str, Any]:
        """The present ones of ``keys`` with their values, all read at one revision.

        In as few requests as is safe: see :meth:`EtcdClient.range_many`.
        """
        wanted = []
        for key in keys:
            try:
                wanted.append((key, self._base + parse_key(key, self._sep, write=False)))
            except KeyError:
                continue  # a malformed key is absent
        out: dict[str, Any] = {}
        if not wanted:
            return out
        if self._client.txn_reads:  # a leaf and a probe per key, in few transactions
            answers = self._client.range_many([op for _, full in wanted
                                               for op in (Range(full), self._probe(full))])
            found = [(leaf.kvs[0] if leaf.kvs else None, self._addressable(full, tree.kvs))
                     for (_, full), leaf, tree in zip(wanted, answers[::2], answers[1::2],
                                                      strict=True)]
        else:  # a key at a time, all at the first one's revision
            found, revision = [], 0
            for _, full in wanted:
                kv, is_dir, revision = self._lookup(full, revision=revision)
                found.append((kv, is_dir))
        for (key, full), (kv, is_dir) in zip(wanted, found, strict=True):
            if kv is not None:
                out[key] = self._decode(kv)
            elif is_dir:
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

    def _encode(self, value: Any, key: bytes) -> bytes:
        return encode_value(self._codec, value, key)

    def _commit(self, items: Iterable[tuple[bytes, Any]], compare: list[Compare] | None = None,
                failure: list[Range] | None = None) -> TxnResponse:
        return commit(self, items, compare, failure)

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

    # MutableMapping.pop is get-then-delete, racy and blind to what it deletes.
    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (a subtree as a plain dict).

        Atomic: the value is read and decoded first, and removed only if
        nothing under the name changed meanwhile; a value the codec cannot
        read raises :class:`EtcdCodecError` and stays in etcd.
        """
        try:
            full = self._base + parse_key(key, self._sep, write=False)
        except KeyError:
            if default is _MISSING:
                raise
            return default
        value = self._take(full)
        if value is _MISSING:
            if default is _MISSING:
                raise EtcdKeyError(key)
            return default
        return value

    def _take(self, full: bytes) -> Any:
        """Read, decode, then delete the value at ``full`` if it did not change; or _MISSING."""
        sub, end = self._dir_span(full)
        hooks = self._hooks
        if hooks is not None:
            hooks.before_write()
        for _ in range(_CAS_RETRIES):
            leaf, below = self._leaf_and_below(full, Range(sub, end))
            revision = leaf.revision
            tree = below.kvs if below is not None and not leaf.kvs else ()
            if not leaf.kvs and not self._addressable(full, tree):
                if hooks is not None:  # nothing to remove: as fresh as that answer, still
                    hooks.after_write(revision, False)
                return _MISSING
            # Decode everything before deleting anything: a failure leaves etcd as it was.
            decoded = {kv.key: self._decode(kv) for kv in (*leaf.kvs, *tree)}
            unchanged = [Compare(full, "MOD", "<", revision + 1),
                         Compare(sub, "MOD", "<", revision + 1, end)]
            resp = self._txn(unchanged, [Delete(full, prev_kv=True),
                                         Delete(sub, end, prev_kv=True)], [])
            if not resp.succeeded:
                continue  # written meanwhile: read again
            gone = [r for r in resp.responses if isinstance(r, DeleteRangeResponse)]
            leaf_gone, tree_gone = gone[0].prev_kvs, gone[1].prev_kvs
            if leaf_gone:
                return decoded[leaf_gone[0].key]
            out: dict[str, Any] = {}
            add_to_tree(out, tree_gone, len(sub), self._sep, decoded_at(decoded))
            return out if out else _MISSING  # all deleted by someone else meanwhile
        raise EtcdConflict(f"pop({key_name(full)!r}) lost to other writers "
                           f"{_CAS_RETRIES} times; try again")

    # MutableMapping.popitem is iter-then-pop; ours retries if another client
    # took the item first: a bounded number of times, spreading out over the
    # first few names (with a jittered pause) so that many poppers do not all
    # chase the same one.
    def popitem(self) -> tuple[str, Any]:
        """Remove and return some ``(name, value)`` pair (the first, when uncontended).

        ``KeyError`` when empty; :class:`EtcdConflict` if other clients took
        every item it tried, many times over.
        """
        if self._hooks is not None:
            self._hooks.before_write()  # refused before anything is sent
        for attempt in range(_POPITEM_TRIES):
            if attempt:
                time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))
            names = list(itertools.islice(
                self._children(_name, keys_only=True, page_size=_SPREAD if attempt else 1),
                _SPREAD if attempt else 1))
            if not names:
                raise EtcdKeyError("popitem(): mapping is empty")
            name = random.choice(names) if attempt else names[0]
            value = self._take(self._base + key_bytes(name))
            if value is not _MISSING:
                return name, value
        raise EtcdConflict(f"popitem() lost to other clients {_POPITEM_TRIES} times; "
                           "try again")

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
            leaf, tree = _ranges(resp)
            if leaf.kvs:
                return self._decode(leaf.kvs[0])
            if self._addressable(full, tree.kvs):
                return self._derive(sub)
            subtree_guard = Compare(sub, "MOD", "<", resp.revision + 1, end)
        raise EtcdConflict(f"setdefault({key!r}) lost to other writers {_CAS_RETRIES} times; "
                           "try again")

    def replace(self, key: str, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` only if it holds ``expected``; whether it did."""
        full = self._base + parse_key(key, self._sep, write=True)
        resp = self._commit([(full, new)], compare=[
            Compare(full, "VALUE", "==", self._encode(expected, full))])
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
        if self._hooks is not None:
            self._hooks.before_write()
        resp = self._client.delete_range(start, end)
        if self._hooks is not None:
            self._hooks.after_write(resp.revision, bool(resp.deleted))

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


def decoded_at(decoded: dict[bytes, Any]) -> Callable[[bytes, bytes], Any]:
    """A decode function that looks values up in what was decoded already."""
    def lookup(_: bytes, key: bytes) -> Any:
        return decoded[key]
    return lookup


def _name(name: str, kv: KeyValue | None) -> str:
    return name


def _ranges(resp: TxnResponse) -> list[RangeResponse]:
    """The range answers of a transaction made only of ranges."""
    out = [r for r in resp.responses if isinstance(r, RangeResponse)]
    if len(out) != len(resp.responses):
        raise EtcdProtocolError("a transaction of ranges got other answers")
    return out


def _rebuild(client: EtcdClient, prefix: str, sep: str, codec: Codec, page_size: int,
             ttl: int) -> EtcdMapping:
    """An :class:`EtcdMapping` from a pickle (with a client of its own)."""
    mapping = EtcdMapping(prefix, client=client, sep=sep, codec=codec, page_size=page_size)
    if ttl:
        mapping = mapping.with_ttl(ttl)
    mapping._owns_client = True
    return mapping
