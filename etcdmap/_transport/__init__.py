"""The transport: how etcd's calls reach a member, and how failures come back.

:mod:`.base` is the seam (requests in, records out) that the client calls;
:class:`~etcdmap._transport.gateway.GatewayTransport` implements it over the
JSON gateway, on :class:`~etcdmap._transport.http.HTTPTransport` (``requests``:
endpoints, failover, auth and deadlines); ``stream`` reads a streaming reply,
``guard`` bounds blocking socket calls.
"""

from .base import Cuttable as Cuttable
from .base import Transport as Transport
from .base import WatchStream as WatchStream
from .endpoints import normalize_endpoints as normalize_endpoints
from .gateway import GatewayTransport as GatewayTransport
from .http import HTTPTransport as HTTPTransport

__all__ = ["Cuttable", "GatewayTransport", "HTTPTransport", "Transport", "WatchStream",
           "normalize_endpoints"]
