"""The state behind a :class:`~etcdmap.cache.CachedMapping`: a local copy and its follower.

:class:`Mirror` loads the subtree at one revision, then a daemon thread
follows a watch from the next revision (snapshot-then-watch, like Go's
``mirror``), applying one revision at a time under a lock.  The copy is kept
twice: flat (``store``: key -> raw value) and as a tree of dict nodes, which
the :class:`CachedMapping` objects *are*, so that reads cost a dict lookup.

The follower holds the mirror only weakly, so a cache that is dropped
unclosed is collected (and its thread ends).  If the follower dies, the
copy is emptied and every read and write raises the cause.  After
``os.fork()`` the child's copy starts a follower of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._wire.keys import key_name
from .codecs import decode_or_raw, decode_value
from .errors import (
    EtcdClosed,
    EtcdCodecError,
    EtcdCompacted,
    EtcdConnectionError,
    EtcdError,
    EtcdTimeout,
    EtcdUnavailable,
    EtcdWatchError,
)
from .records import Event, KeyValue

if TYPE_CHECKING:
    from .cache import CachedMapping
    from .mapping import EtcdMapping
    from .watch import Watcher

__all__ = ["Mirror"]

log = logging.getLogger("etcdmap.cache")
OnChange = Callable[[list[Event[Any]]], None]
_RETRY_PAUSE = 1.0  # seconds between attempts to reload after a failure
_LIVE: weakref.WeakSet[Mirror] = weakref.WeakSet()


class Mirror:
    """The local copy of one subtree, what every node of one cache shares."""

    def __init__(self, mapping: EtcdMapping, on_change: OnChange | None,
                 make_node: Callable[[Mirror, EtcdMapping], CachedMapping]):
        self.mapping = mapping  # the root's mapping: writes, derived views
        self._make_node = make_node  # a node of the cache over a mapping
        self.base = mapping._base
        self.sep = mapping._bsep
        self.lock = threading.RLock()
        self.applied = threading.Condition(self.lock)
        self.store: dict[bytes, bytes] = {}     # full key -> raw value
        self.dirs: dict[bytes, int] = {}        # "a/b/" -> number of keys under it
        # The nodes below the root.  The root itself is held weakly: the user
        # holds it, and dropping it closes the cache (nothing else keeps it alive).
        self.nodes: dict[bytes, CachedMapping] = {}
        self.root: Callable[[], CachedMapping | None] = lambda: None
        self.undecodable: dict[bytes, EtcdCodecError] = {}
        self.revision = 0
        self.failure: BaseException | None = None  # why the follower died
        self.on_change = on_change
        self.closed = threading.Event()
        self.watcher: Watcher[Any] | None = None
        self.thread: threading.Thread | None = None
        _LIVE.add(self)

    # -- the copy ------------------------------------------------------------------

    def existing(self, prefix: bytes) -> CachedMapping | None:
        """The node of the directory ``prefix``, if there is one."""
        return self.root() if prefix == self.base else self.nodes.get(prefix)

    def node(self, prefix: bytes) -> CachedMapping:
        """The node of a directory below the root (made empty if new)."""
        node = self.nodes.get(prefix)
        if node is None:
            node = self._make_node(self, self.mapping._derive(prefix))
            self.nodes[prefix] = node
        return node

    def _refresh(self, key: bytes) -> None:
        """Recompute what the nodes show along ``key``'s path, top-down."""
        sep, parent = self.sep, self.base
        rest = key[len(parent):]
        while rest:
            name, found, rest = rest.partition(sep)
            if not name:
                return  # an empty segment: not addressable
            node = self.existing(parent)
            if node is None:
                if parent == self.base or not self.dirs.get(parent):
                    return
                node = self.node(parent)  # kept filled even while a leaf hides it
            full = parent + name
            self._show(node, key_name(name), full)
            if not found:
                return
            parent = full + sep

    def _show(self, node: CachedMapping, name: str, full: bytes) -> None:
        sub = full + self.sep
        self.undecodable.pop(full, None)
        if full in self.store:  # a leaf wins over a subtree at the same name
            try:
                value = decode_value(self.mapping._codec, self.store[full], full)
            except EtcdCodecError as exc:  # kept aside: reading it raises, nothing else breaks
                self.undecodable[full] = exc
                dict.pop(node, name, None)
            else:
                dict.__setitem__(node, name, value)
        elif self.dirs.get(sub):
            dict.__setitem__(node, name, self.node(sub))
        else:
            dict.pop(node, name, None)
            for prefix in [p for p in self.nodes if p.startswith(sub)]:
                dict.clear(self.nodes.pop(prefix))

    def _set_raw(self, key: bytes, value: bytes | None, refresh: bool = True) -> None:
        sep, root = self.sep, self.base
        existed = key in self.store
        if value is None:
            self.store.pop(key, None)
        else:
            self.store[key] = value
        rel = key[len(root):]
        if not rel or b"" in rel.split(sep):
            return
        if existed != (value is not None):
            step = 1 if value is not None else -1
            pos = key.find(sep, len(root))
            while pos != -1:
                prefix = key[:pos + len(sep)]
                self.dirs[prefix] = self.dirs.get(prefix, 0) + step
                if not self.dirs[prefix]:
                    del self.dirs[prefix]
                pos = key.find(sep, pos + len(sep))
        if refresh:
            self._refresh(key)

    def load(self) -> list[Event[Any]]:
        """Read the subtree afresh; the changes it made to the copy (as events)."""
        fresh: dict[bytes, bytes] = {}
        revision = 0
        start, end = self.mapping._span()
        for page in self.mapping._client.pages(start, end, page_size=self.mapping._page_size):
            revision = page.revision
            fresh.update((kv.key, kv.value) for kv in page.kvs)
        events: list[Event[Any]] = []
        with self.lock:
            for key in [k for k in self.store if k not in fresh]:
                events.append(Event(type="DELETE", key=key, value=None,
                                    prev_value=self.store[key], revision=revision,
                                    kv=KeyValue(key, b"", mod_revision=revision)))
                self._set_raw(key, None)
            for key, value in fresh.items():
                if self.store.get(key) != value:
                    events.append(Event(type="PUT", key=key, value=value,
                                        prev_value=self.store.get(key), revision=revision,
                                        kv=KeyValue(key, value, mod_revision=revision)))
                    self._set_raw(key, value)
            self.revision = revision
            self.applied.notify_all()
        return events

    def apply(self, batch: list[Event[Any]]) -> None:
        """Apply one revision's events, then tell ``on_change``."""
        with self.lock:
            for event in batch:
                self._set_raw(event.kv.key, None if event.type == "DELETE" else event.kv.value,
                              refresh=False)
            for key in dict.fromkeys(e.kv.key for e in batch):
                self._refresh(key)
            self.revision = max(self.revision, batch[-1].revision)
            self.applied.notify_all()
        self.notify(batch)

    def notify(self, batch: list[Event[Any]]) -> None:
        """Call ``on_change`` with ``batch`` as the mapping's events (never raises)."""
        if self.on_change is None or not batch:
            return
        codec, blen = self.mapping._codec, len(self.base)
        events = [Event(type=e.type, key=key_name(e.kv.key[blen:]),
                        value=None if e.value is None else decode_or_raw(codec, e.value),
                        prev_value=(None if e.prev_value is None
                                    else decode_or_raw(codec, e.prev_value)),
                        revision=e.revision, kv=e.kv) for e in batch]
        try:
            self.on_change(events)
        except Exception:
            log.exception("on_change callback failed")

    # -- health ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise why the copy cannot be trusted: the follower's death."""
        if self.failure is not None:
            raise self.failure

    def check_writable(self) -> None:
        """Raise if a write through the cache must not even be sent."""
        if self.closed.is_set():
            raise EtcdClosed(f"the cache of {key_name(self.base)!r} is closed")
        self.check()

    def die(self, cause: BaseException) -> None:
        """The follower cannot go on: empty the copy; reads and writes raise ``cause``."""
        log.error("the cache of %r stopped following etcd: %s", key_name(self.base), cause)
        with self.lock:
            self.failure = cause
            for node in [self.root(), *self.nodes.values()]:
                if node is not None:
                    dict.clear(node)
            self.applied.notify_all()

    # -- following ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the follower thread (which holds this mirror weakly)."""
        self.thread = threading.Thread(target=_follow, args=(weakref.ref(self),), daemon=True,
                                       name="etcdmap-cache")
        self.thread.start()

    def open_watch(self) -> Watcher[Any]:
        start, end = self.mapping._span()
        return self.mapping._client.watch_range(start, end, key_fn=_same, value_fn=_same,
                                                prev_kv=True, start_revision=self.revision + 1)

    def close(self) -> None:
        """Stop following (from any thread)."""
        self.closed.set()
        with self.lock:
            self.applied.notify_all()
        watcher = self.watcher
        if watcher is not None:
            watcher.close()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread() \
                and thread.is_alive():
            thread.join(timeout=5)

    def after_fork(self) -> None:
        """In a forked child: new locks and a follower of its own; same data."""
        self.lock = threading.RLock()
        self.applied = threading.Condition(self.lock)
        # The parent's watcher is the parent's (closing it here does not touch its socket).
        self.watcher = None
        if not self.closed.is_set() and self.failure is None:
            self.start()

    # -- read-your-writes ------------------------------------------------------------------

    def before_write(self) -> None:
        self.check_writable()

    def after_write(self, revision: int, changed: bool) -> None:
        """Return once the copy is as fresh as a write answered at ``revision``."""
        if threading.current_thread() is self.thread:
            # A write from on_change, in the follower itself: it shows once the
            # callback returns and the follower reads on.
            return
        timeout = self.mapping._client.timeout
        if changed:  # our own change is under the prefix: its event will come
            with self.lock:
                ok = self.applied.wait_for(lambda: self.revision >= revision
                                           or self.failure is not None
                                           or self.closed.is_set(), timeout)
        else:
            ok = self.wait_for(revision, timeout)
        if not ok and not self.closed.is_set():
            raise EtcdTimeout(f"etcd applied the write at revision {revision}, but the cache "
                              f"has not shown it within {timeout} s")

    def wait_for(self, revision: int, timeout: float | None = None) -> bool:
        """Block until the copy reflects ``revision`` (or later); whether it does."""
        self.check()
        if self.revision >= revision:
            return True
        # Nothing under the prefix may have changed up to ``revision``, and then
        # no event will come.  Ask etcd what the prefix looks like now: its
        # newest modification and its key count.  Once the copy has applied that
        # modification and holds that many keys, it reflects etcd's revision now
        # (any later events would be deletes, which the count tracks).
        start, end = self.mapping._span()
        now = self.mapping._client.range(start, end, limit=1, keys_only=True,
                                         sort_order="DESCEND", sort_target="MOD")
        newest = now.kvs[0].mod_revision if now.kvs else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            quiet = self.applied.wait_for(
                lambda: self.revision >= revision or self.failure is not None
                or (self.revision >= newest and len(self.store) == now.count), timeout)
            self.check()
            if quiet and self.revision < now.revision:
                self.revision = now.revision
                self.applied.notify_all()
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            # A revision etcd has not reached yet: wait for its events.
            done = self.applied.wait_for(
                lambda: self.revision >= revision or self.failure is not None, left)
            self.check()
            return done


def _same(data: bytes) -> bytes:
    return data


def _next_batch(ref: weakref.ref[Mirror]) -> list[Event[Any]] | None:
    """The next revision's events (``[]`` if none came yet); None once the cache is gone."""
    mirror = ref()
    if mirror is None or mirror.closed.is_set():
        return None
    watcher = mirror.watcher
    if watcher is None or watcher.closed:
        watcher = mirror.watcher = mirror.open_watch()
        if mirror.closed.is_set():  # closed while the watch was being opened
            watcher.close()
            return None
    del mirror  # hold the mirror only while applying
    return watcher.next_batch(0.5)


def _follow(ref: weakref.ref[Mirror]) -> None:
    """The follower thread: apply each revision the watch delivers, until closed."""
    while True:
        try:
            batch = _next_batch(ref)
            if batch is None:
                return
            if batch:
                mirror = ref()
                if mirror is None:
                    return
                mirror.apply(batch)
                del mirror
            continue
        except EtcdCompacted:
            mirror = ref()
            if mirror is None:
                return
            mirror.watcher = None
            log.warning("cache of %r fell behind compaction; reloading",
                        key_name(mirror.base))
            _reload(mirror)
        except (EtcdConnectionError, EtcdUnavailable) as exc:
            # Only a watch's set-up raises these (once up, it resumes by itself).
            mirror = ref()
            if mirror is None:
                return
            log.warning("cache of %r cannot watch: %s", key_name(mirror.base),
                        type(exc).__name__)
            mirror.watcher = None
            closed = mirror.closed
            del mirror
            closed.wait(_RETRY_PAUSE)
        except BaseException as exc:  # permission, auth, a bug ...: no retry will help
            mirror = ref()
            if mirror is not None and not mirror.closed.is_set():
                mirror.die(exc if isinstance(exc, EtcdError)
                           else EtcdWatchError(f"the cache's follower failed: {exc!r}"))
            return


def _reload(mirror: Mirror) -> None:
    while not mirror.closed.is_set():
        try:
            mirror.notify(mirror.load())
            return
        except EtcdError as exc:
            log.warning("reloading the cache of %r failed: %s", key_name(mirror.base),
                        type(exc).__name__)
            mirror.closed.wait(_RETRY_PAUSE)


def _after_fork_in_child() -> None:
    for mirror in list(_LIVE):
        with contextlib.suppress(Exception):  # one broken copy must not break the others
            mirror.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
