"""``CachedMapping``: an :class:`EtcdMapping` read from memory, kept fresh by a watch.

It loads the subtree at one revision, then follows a watch from the next one
(snapshot-then-watch, like Go's ``mirror``), applying each watch message's
revisions under a lock.  Reads never touch the network: a cached node *is* a
``dict`` of its immediate children (sub-directories are nested cached nodes),
so ``m[k]`` costs what a dict lookup costs.  Writes go to etcd, and return once
the watch has applied them (read-your-writes).  Compaction triggers a resync;
member failover is the watch's own resume.

Multi-key reads (``to_dict``, ``items``, iteration, ``len``, ``==``) see whole
revisions; views and iterators are of the state when they were made.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from .client import EtcdClient
from .codecs import Codec, decode_or_raw
from .errors import EtcdCodecError, EtcdCompacted, EtcdError, EtcdKeyError, EtcdTimeout
from .mapping import EtcdMapping
from .records import DeleteRangeResponse, Event, KeyValue, PutResponse, TxnResponse
from .watch import Watcher

__all__ = ["CachedMapping"]

log = logging.getLogger(__name__)
_MISSING: Any = object()
OnChange = Callable[[list[Event[Any]]], None]


class _State:
    """What every node of one cache shares: the flat store and the watch."""

    def __init__(self, root: CachedMapping, on_change: OnChange | None):
        self.root = root
        self.lock = threading.RLock()
        self.applied = threading.Condition(self.lock)
        self.store: dict[bytes, bytes] = {}     # full key -> raw value
        self.dirs: dict[bytes, int] = {}        # "a/b/" -> number of keys under it
        self.nodes: dict[bytes, CachedMapping] = {root._base: root}
        self.undecodable: dict[bytes, EtcdCodecError] = {}
        self.revision = 0
        self.error: EtcdError | None = None
        self.on_change = on_change
        self.watcher: Watcher[Any] | None = None
        self.thread: threading.Thread | None = None
        self.closed = threading.Event()


class CachedMapping(dict, EtcdMapping):  # type: ignore[type-arg,misc]
    """A dict-fast, watch-fed local copy of the subtree under ``prefix``."""

    _state: _State

    def __init__(
        self,
        prefix: str = "",
        *,
        client: EtcdClient | None = None,
        endpoints: str | list[str] | None = None,
        sep: str = "/",
        codec: str | Codec = "str",
        page_size: int = 1000,
        on_change: OnChange | None = None,
    ):
        dict.__init__(self)
        EtcdMapping.__init__(self, prefix, client=client, endpoints=endpoints, sep=sep,
                             codec=codec, page_size=page_size)
        self._state = _State(self, on_change)
        self._load()
        self._start()
        ref = weakref.ref(self)

        def after_fork() -> None:
            cache = ref()
            if cache is not None and not cache._state.closed.is_set():
                cache._after_fork()

        os.register_at_fork(after_in_child=after_fork)

    # -- the local copy ------------------------------------------------------------

    def _node(self, prefix: bytes) -> CachedMapping:
        node = self._state.nodes.get(prefix)
        if node is None:
            node = dict.__new__(type(self))
            dict.__init__(node)
            node.__dict__.update(self.__dict__)
            node._base, node._owns_client = prefix, False
            self._state.nodes[prefix] = node
        return node

    def _refresh(self, key: bytes) -> None:
        """Recompute what the nodes show along ``key``'s path, top-down."""
        st, sep = self._state, self._bsep
        parent = st.root._base
        rest = key[len(parent):]
        while rest:
            name, found, rest = rest.partition(sep)
            if not name:
                return  # an empty segment: not addressable
            node = st.nodes.get(parent)
            if node is None:
                if not st.dirs.get(parent):
                    return
                node = self._node(parent)  # kept filled even while a leaf hides it
            full = parent + name
            self._show(node, name.decode("utf-8", "surrogateescape"), full)
            if not found:
                return
            parent = full + sep

    def _show(self, node: CachedMapping, name: str, full: bytes) -> None:
        st = self._state
        sub = full + self._bsep
        st.undecodable.pop(full, None)
        if full in st.store:  # a leaf wins over a subtree at the same name
            try:
                dict.__setitem__(node, name, self._codec.decode(st.store[full]))
            except EtcdCodecError as exc:
                st.undecodable[full] = exc
                dict.pop(node, name, None)
        elif st.dirs.get(sub):
            dict.__setitem__(node, name, self._node(sub))
        else:
            dict.pop(node, name, None)
            for prefix in [p for p in st.nodes if p.startswith(sub)]:
                dict.clear(st.nodes.pop(prefix))

    def _set_raw(self, key: bytes, value: bytes | None, refresh: bool = True) -> None:
        st, sep, root = self._state, self._bsep, self._state.root._base
        existed = key in st.store
        if value is None:
            st.store.pop(key, None)
        else:
            st.store[key] = value
        rel = key[len(root):]
        if not rel or b"" in rel.split(sep):
            return
        if existed != (value is not None):
            step = 1 if value is not None else -1
            pos = key.find(sep, len(root))
            while pos != -1:
                prefix = key[:pos + len(sep)]
                st.dirs[prefix] = st.dirs.get(prefix, 0) + step
                if not st.dirs[prefix]:
                    del st.dirs[prefix]
                pos = key.find(sep, pos + len(sep))
        if refresh:
            self._refresh(key)

    def _load(self) -> list[Event[Any]]:
        start, end = self._span()
        fresh: dict[bytes, bytes] = {}
        revision = 0
        for page in self._client.pages(start, end, page_size=self._page_size):
            revision = page.revision
            fresh.update((kv.key, kv.value) for kv in page.kvs)
        events: list[Event[Any]] = []
        with self._state.lock:
            st = self._state
            for key in [k for k in st.store if k not in fresh]:
                events.append(Event(type="DELETE", key=key, value=None,
                                    prev_value=st.store[key], revision=revision,
                                    kv=KeyValue(key, b"", mod_revision=revision)))
                self._set_raw(key, None)
            for key, value in fresh.items():
                if st.store.get(key) != value:
                    events.append(Event(type="PUT", key=key, value=value,
                                        prev_value=st.store.get(key), revision=revision,
                                        kv=KeyValue(key, value, mod_revision=revision)))
                    self._set_raw(key, value)
            st.revision = revision
            st.applied.notify_all()
        return events

    # -- following the watch ------------------------------------------------------------

    def _start(self) -> None:
        st = self._state
        thread = threading.Thread(target=self._follow, daemon=True, name="etcdmap-cache")
        st.thread = thread
        thread.start()

    def _follow(self) -> None:
        st = self._state
        blen = len(self._base)
        while not st.closed.is_set():
            start, end = self._span()
            try:
                watcher = self._client.watch_range(
                    start, end, key_fn=lambda k: k, value_fn=lambda v: v, prev_kv=True,
                    start_revision=st.revision + 1)
                st.watcher = watcher
                with watcher:
                    while not st.closed.is_set():
                        batch = watcher.next_batch(0.5)
                        if batch:
                            self._apply(batch, blen)
            except EtcdCompacted:
                log.warning("cache of %r fell behind compaction; reloading", self.prefix)
                try:
                    changed = self._load()
                    if changed:
                        self._notify(changed, blen)
                except EtcdError as exc:
                    st.error = exc
                    st.closed.wait(1.0)
            except EtcdError as exc:
                if st.closed.is_set():
                    return
                log.warning("cache of %r lost its watch: %s", self.prefix, type(exc).__name__)
                st.error = exc
                st.closed.wait(1.0)

    def _apply(self, batch: list[Event[Any]], blen: int) -> None:
        st = self._state
        with st.lock:
            for event in batch:
                self._set_raw(event.kv.key, None if event.type == "DELETE" else event.kv.value,
                              refresh=False)
            for key in dict.fromkeys(e.kv.key for e in batch):
                self._refresh(key)
            st.revision = max(st.revision, max(e.revision for e in batch))
            st.error = None
            st.applied.notify_all()
        self._notify(batch, blen)

    def _notify(self, batch: list[Event[Any]], blen: int) -> None:
        st = self._state
        if st.on_change is not None:
            codec = self._codec
            events = [Event(type=e.type, key=e.kv.key[blen:].decode("utf-8", "surrogateescape"),
                            value=None if e.value is None else decode_or_raw(codec, e.value),
                            prev_value=(None if e.prev_value is None
                                        else decode_or_raw(codec, e.prev_value)),
                            revision=e.revision, kv=e.kv) for e in batch]
            try:
                st.on_change(events)
            except Exception:
                log.exception("on_change callback failed")

    @property
    def revision(self) -> int:
        """The etcd revision the local copy reflects."""
        return self._state.revision

    def wait_for(self, revision: int, timeout: float | None = None) -> bool:
        """Block until the copy reflects ``revision`` (or later); whether it does."""
        st = self._state
        if st.revision >= revision:
            return True
        # Nothing under the prefix may have changed up to ``revision``, and then
        # no event will come.  Ask etcd what the prefix looks like now: its
        # newest modification and its key count.  Once the copy has applied that
        # modification and holds that many keys, it reflects etcd's revision now
        # (any later events would be deletes, which the count tracks).
        start, end = self._span()
        now = self._client.range(start, end, limit=1, keys_only=True,
                                 sort_order="DESCEND", sort_target="MOD")
        newest = now.kvs[0].mod_revision if now.kvs else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        with st.lock:
            quiet = st.applied.wait_for(
                lambda: st.revision >= revision
                or (st.revision >= newest and len(st.store) == now.count), timeout)
            if quiet and st.revision < now.revision:
                st.revision = now.revision
                st.applied.notify_all()
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            # A revision etcd has not reached yet: wait for its events.
            return st.applied.wait_for(lambda: st.revision >= revision, left)

    def close(self) -> None:
        """Stop following the watch (and close the client if this cache created it)."""
        st = self._state
        st.closed.set()
        if st.watcher is not None:
            st.watcher.close()
        if st.thread is not None and st.thread is not threading.current_thread():
            st.thread.join(timeout=5)
        EtcdMapping.close(self)

    def _after_fork(self) -> None:
        # The parent's threads and sockets are not ours: new ones, same data.
        st = self._state
        st.lock = threading.RLock()
        st.applied = threading.Condition(st.lock)
        st.closed = threading.Event()
        st.watcher = None
        self._client.reset_connections()
        self._start()

    # -- reads, from memory ---------------------------------------------------------------

    def __missing__(self, key: Any) -> Any:
        # Path keys ("db/host") walk the nodes; anything else is absent.
        if isinstance(key, str) and self._sep in key:
            head, _, rest = key.partition(self._sep)
            child = self._state.nodes.get(self._base + head.encode("utf-8", "surrogateescape")
                                          + self._bsep)
            if child is not None:
                return child[rest]
        full = self._base + key.encode("utf-8", "surrogateescape") if isinstance(key, str) else b""
        if full in self._state.undecodable:
            raise self._state.undecodable[full]
        raise EtcdKeyError(key)

    def get(self, key: Any, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when absent."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        return isinstance(key, str) and self._sep in key and self.get(key, _MISSING) is not _MISSING

    def _snapshot(self) -> dict[str, Any]:
        with self._state.lock:
            return dict(dict.items(self))

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot())

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        """The children's names, as of now."""
        return self._snapshot().keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        """``(name, value)`` pairs as of now; sub-directories are cached nodes."""
        return self._snapshot().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        """Values as of now; sub-directories are cached nodes."""
        return self._snapshot().values()

    def to_dict(self) -> dict[str, Any]:
        """The subtree as plain nested dicts, at one revision."""
        with self._state.lock:
            return {k: v.to_dict() if isinstance(v, CachedMapping) else v
                    for k, v in dict.items(self)}

    def snapshot(self) -> tuple[dict[str, Any], int]:
        """``(to_dict(), revision)`` from memory."""
        with self._state.lock:
            return self.to_dict(), self._state.revision

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        with self._state.lock:
            return dict.__eq__(self, other) if isinstance(other, dict) else \
                self.to_dict() == {k: other[k] for k in other}

    def __repr__(self) -> str:
        return f"CachedMapping(prefix={self.prefix!r}, revision={self._state.revision})"

    def _derive(self, base: bytes) -> EtcdMapping:
        # TTL views, leases and submapping() write through a plain mapping.
        view = object.__new__(EtcdMapping)
        view.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_state"})
        view._base, view._owns_client = base, False
        return view

    # -- writes: to etcd, then wait until the watch has applied them ---------------------------

    def _txn(self, compare: Any, success: Any, failure: Any) -> TxnResponse:
        resp = EtcdMapping._txn(self, compare, success, failure)
        self._catch_up(resp.revision, changed=_changed(resp))
        return resp

    def clear(self) -> None:
        """Remove every key under the prefix (one delete-range)."""
        start, end = self._span()
        resp = self._client.delete_range(start, end)
        self._catch_up(resp.revision, changed=bool(resp.deleted))

    def _catch_up(self, revision: int, *, changed: bool) -> None:
        """Return once the copy is as fresh as a write answered at ``revision``."""
        timeout = self._client.timeout
        st = self._state
        if changed:  # our own change is under the prefix: its event will come
            with st.lock:
                ok = st.applied.wait_for(lambda: st.revision >= revision, timeout)
        else:
            ok = self.wait_for(revision, timeout)
        if not ok:
            raise EtcdTimeout(f"etcd answered at revision {revision}, but the cache has not "
                              f"caught up within {timeout} s")

    __setitem__ = EtcdMapping.__setitem__
    __delitem__ = EtcdMapping.__delitem__
    pop = EtcdMapping.pop
    popitem = EtcdMapping.popitem
    setdefault = EtcdMapping.setdefault
    update = EtcdMapping.update
    __ior__ = EtcdMapping.__ior__  # type: ignore[assignment]

    def __len__(self) -> int:
        with self._state.lock:  # never mid-revision
            return dict.__len__(self)

    def _scan(self, *, keys_only: bool, page_size: int | None = None) -> Any:
        # popitem() picks its victim from memory: the first name in key order,
        # as EtcdMapping.popitem does (not the first one the watch happened to apply).
        names = self._snapshot()
        return iter([(min(names, key=_etcd_order), None)] if names else [])

    @classmethod
    def fromkeys(cls, *args: Any, **kwargs: Any) -> Any:
        """Not supported: a cache is made from a prefix."""
        raise TypeError("CachedMapping.fromkeys is not supported")


def _changed(resp: TxnResponse) -> bool:
    """Whether a write txn changed anything (else the revision did not move)."""
    for r in resp.responses:
        if isinstance(r, PutResponse) or (isinstance(r, DeleteRangeResponse) and r.deleted):
            return True
        if isinstance(r, TxnResponse) and _changed(r):
            return True
    return False


def _etcd_order(name: str) -> bytes:
    """The sort key etcd uses for a name: its bytes."""
    return name.encode("utf-8", "surrogateescape")
