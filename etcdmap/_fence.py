"""Writes that land only while a lock (or leadership) is still held.

A :class:`Fence` is the compares that prove it: the holder's key still exists
with the create revision it was given (the fencing token).  A guarded view
sends each of its writes as ``if fence: txn(...)``, one nested transaction,
so a holder that lost its lock cannot overwrite the next holder's work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import EtcdError, EtcdProtocolError
from .ops import Compare, Op, Txn
from .records import TxnResponse

if TYPE_CHECKING:
    from .client import EtcdClient

__all__ = ["NO_FENCE", "Fence"]


class Fence:
    """``compares`` every guarded write must pass; ``lost()`` is the error when they fail.

    ``check()``, if given, runs before anything is sent (a lease known to have
    lapsed raises there, without a round trip).
    """

    def __init__(self, compares: Sequence[Compare], lost: Callable[[], EtcdError],
                 check: Callable[[], None] | None = None):
        self.compares = tuple(compares)
        self.lost = lost
        self.check = check

    def run(self, client: EtcdClient, compare: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op]) -> TxnResponse:
        """``client.txn(compare, success, failure)``, if the fence holds; else ``lost()``."""
        if not self.compares:
            return client.txn(compare, success, failure)
        if self.check is not None:
            self.check()
        resp = client.txn(self.compares, [Txn(compare, success, failure)], [])
        if not resp.succeeded:
            raise self.lost()
        inner = resp.responses[0] if resp.responses else None
        if not isinstance(inner, TxnResponse):
            raise EtcdProtocolError("a guarded write got no reply to its inner transaction")
        return TxnResponse(inner.succeeded, resp.revision, inner.responses)


# What an unguarded view writes through: the plain transaction.
NO_FENCE = Fence((), lambda: EtcdError("no fence to lose"))
