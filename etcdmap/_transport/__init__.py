"""The transport: how etcd's calls reach a member, and how failures come back.

:mod:`.base` is the seam (requests in, records out) that the client calls;
:class:`~etcdmap._transport.gateway.GatewayTransport` implements it over the
JSON gateway, on :class:`~etcdmap._transport.http.HTTPTransport` (``requests``:
endpoints, failover, auth and deadlines); ``stream`` reads a streaming reply,
``guard`` bounds blocking socket calls; ``policy`` holds the retry rules
every transport follows.  :func:`open_transport` builds the transport a
client asks for; the optional gRPC one (``grpc/``) is imported only then.
"""

from .base import Cuttable as Cuttable
from .base import Transport as Transport
from .base import WatchStream as WatchStream
from .endpoints import normalize_endpoints as normalize_endpoints
from .gateway import GatewayTransport as GatewayTransport
from .http import HTTPTransport as HTTPTransport
from .select import open_transport as open_transport

__all__ = ["Cuttable", "GatewayTransport", "HTTPTransport", "Transport", "WatchStream",
           "normalize_endpoints", "open_transport"]
