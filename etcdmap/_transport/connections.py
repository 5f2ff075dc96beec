"""requests' adapter, with connections that honour a call's hard deadline.

Each connection hands its socket to the :class:`~.guard.Deadline` of the call
that uses it (set with :func:`deadline_of_this_call`), so the guard can shut
it down when the call overruns, whatever the server sends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import requests
import urllib3

from .guard import Deadline

__all__ = ["deadline_of_this_call", "new_session"]

_local = threading.local()


def _watch_socket(conn: Any) -> None:
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None and conn.sock is not None:
        deadline.watch(conn.sock)


class _Guarded:
    """A urllib3 connection whose socket the current call's deadline can shut down."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_socket(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.sock is not None:  # a pooled connection, already open
            _watch_socket(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Guarded, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Guarded, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that honour a call's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy/.netrc lookups on every call
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    return session


@contextlib.contextmanager
def deadline_of_this_call(deadline: Deadline) -> Iterator[None]:
    """Connections used in this thread until the block ends hand their sockets to ``deadline``."""
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = None
