"""A mapping's coordination: transactions over the dict, locks and elections.

:class:`Coordination` gives :class:`~etcdmap.mapping.EtcdMapping` its
``transaction()`` and ``atomic()`` (see :mod:`etcdmap.transaction`), ``lock()``
(:mod:`etcdmap.lock`), ``election()`` (:mod:`etcdmap.election`) and
``guarded()``, the view whose writes land only while a lock is held.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from ._fence import Fence
    from .election import Election
    from .lock import Lock
    from .mapping import EtcdMapping
    from .transaction import Transaction

__all__ = ["Coordination", "Fenced", "register"]

R = TypeVar("R")
RETRIES = 100  # atomic(): re-runs on conflict before EtcdConflict

# The recipes build on the mapping, so the mapping cannot import them: each
# registers itself here when imported (``import etcdmap`` imports them all).
_recipes: dict[str, Any] = {}


def register(**recipes: Any) -> None:
    """Make ``Transaction``, ``run_atomic``, ``Lock`` and ``Election`` known to mappings."""
    _recipes.update(recipes)


def _recipe(name: str) -> Any:
    try:
        return _recipes[name]
    except KeyError:
        raise RuntimeError(f"etcdmap's {name} is not loaded; import etcdmap") from None


class Fenced(Protocol):
    """What can guard writes: a :class:`~etcdmap.lock.Lock` or an
    :class:`~etcdmap.election.Election` (its :class:`~etcdmap._fence.Fence`)."""

    def fence(self) -> Fence: ...


class Coordination:
    """``transaction``, ``atomic``, ``lock``, ``election`` and ``guarded`` of a mapping."""

    if TYPE_CHECKING:
        def _derive(self, base: bytes | None = None, **attrs: Any) -> EtcdMapping: ...
        def _full(self, key: object, *, write: bool) -> bytes: ...

    def guarded(self, holder: Fenced) -> EtcdMapping:
        """A view whose every write lands only while ``holder`` (a lock or a leadership)
        is still held; otherwise it raises :class:`~etcdmap.errors.EtcdLockLost` and
        writes nothing.  Same as ``lock.guard(mapping)``."""
        return self._derive(_fence=holder.fence())

    @contextlib.contextmanager
    def transaction(self, *, fence: Fenced | None = None) -> Iterator[Transaction]:
        """A mapping view whose reads see one snapshot and whose writes commit together.

        On a clean exit the buffered writes are committed in one etcd transaction
        if nothing that was read has changed since; else
        :class:`~etcdmap.errors.EtcdConflict` and nothing is written.  An
        exception inside the block writes nothing.  With ``fence`` (a lock or an
        election), the commit also needs it still held
        (:class:`~etcdmap.errors.EtcdLockLost` otherwise).
        """
        owner = self._derive() if fence is None else self.guarded(fence)
        tx: Transaction = _recipe("Transaction")(owner)
        try:
            yield tx
        except BaseException:
            tx.abandon()
            raise
        tx.commit()

    @overload
    def atomic(self, fn: Callable[[Transaction], R], /, *, retries: int = RETRIES,
               fence: Fenced | None = None) -> R: ...
    @overload
    def atomic(self, fn: None = None, /, *, retries: int = RETRIES,
               fence: Fenced | None = None) -> Callable[[Callable[..., R]], Callable[..., R]]: ...

    def atomic(self, fn: Callable[..., R] | None = None, /, *, retries: int = RETRIES,
               fence: Fenced | None = None) -> Any:
        """Run ``fn(tx)`` in a :meth:`transaction`, again on each conflict; its result.

        Without ``fn``, a decorator: ``@cfg.atomic()`` (or ``@cfg.atomic(retries=5)``)
        makes ``f(*args)`` run ``f(tx, *args)`` that way.  Between runs it waits a
        jittered, growing pause; after ``retries`` conflicts in a row it raises
        :class:`~etcdmap.errors.EtcdConflict`.  ``fn`` may run more than once,
        so it should only read and write through ``tx``.
        """
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be an int, not {type(retries).__name__}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        if fn is None:
            return functools.partial(self._atomic_decorator, retries=retries, fence=fence)
        return _recipe("run_atomic")(self.transaction, fn, retries=retries, fence=fence)

    def _atomic_decorator(self, fn: Callable[..., R], *, retries: int,
                          fence: Fenced | None) -> Callable[..., R]:
        run_atomic = _recipe("run_atomic")

        @functools.wraps(fn)
        def atomically(*args: Any, **kwargs: Any) -> R:
            result: R = run_atomic(self.transaction, lambda tx: fn(tx, *args, **kwargs),
                                   retries=retries, fence=fence)
            return result
        return atomically

    def lock(self, name: str, *, ttl: int = 10, timeout: float | None = None,
             identifier: str | None = None,
             on_lost: Callable[[Lock], None] | None = None) -> Lock:
        """A distributed lock at ``name`` (its waiters' keys live under it), to use with
        ``with``; see :class:`~etcdmap.lock.Lock`."""
        lock: Lock = _recipe("Lock")(self._derive(), name, ttl=ttl, timeout=timeout,
                                     identifier=identifier, on_lost=on_lost)
        return lock

    def election(self, name: str, *, ttl: int = 10,
                 on_lost: Callable[[Election], None] | None = None) -> Election:
        """A leader election at ``name``; see :class:`~etcdmap.election.Election`."""
        election: Election = _recipe("Election")(self._derive(), name, ttl=ttl,
                                                  on_lost=on_lost)
        return election
