"""The transport: how requests reach etcd, and how failures come back.

:class:`~etcdmap._transport.http.Transport` (the JSON gateway over
``requests``) is the only code that talks to the network; ``stream`` reads a
streaming reply, ``guard`` bounds blocking socket calls.
"""

from .endpoints import normalize_endpoints as normalize_endpoints
from .http import Transport as Transport
from .stream import Stream as Stream

__all__ = ["Stream", "Transport", "normalize_endpoints"]
