"""Building the transport a client's settings ask for: the gateway, or gRPC if installed.

The gRPC transport is imported only here and only when asked for, so
``import etcdmap`` never imports ``grpc``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .._settings import Settings
from .base import Transport
from .forked import ForkSafe
from .gateway import GatewayTransport
from .http import HTTPTransport

if TYPE_CHECKING:
    import requests

__all__ = ["GRPC_MISSING", "open_transport"]

GRPC_MISSING = ("the gRPC transport needs grpcio and protobuf, which are not installed: "
                "pip install 'etcdmap[grpc]'")


def open_transport(settings: Settings, *, session: requests.Session | None = None) -> Transport:
    """The transport of ``settings`` (``"http"``: the JSON gateway; ``"grpc"``)."""
    explicit = settings.retry_deadline
    # retry_deadline defaults to the timeout; with nothing listening anywhere,
    # wait long only if asked to (the dial window).
    retry_deadline = settings.timeout if explicit is None else explicit
    if settings.transport == "grpc":
        if session is not None or settings.allow_redirects:
            raise ValueError("session= and allow_redirects= are HTTP settings; "
                             "the gRPC transport takes neither")
        try:
            module = importlib.import_module("etcdmap._transport.grpc.transport")
        except ImportError as exc:
            raise ImportError(f"{GRPC_MISSING} ({exc})") from None
        if module.grpc_ran_before_fork():
            # gRPC's core cannot run in a child of a process that ran it: see .forked
            return _gateway(settings, None)
        grpc: Transport = module.GrpcTransport(
            settings.endpoints, timeout=settings.timeout, retry_deadline=retry_deadline,
            dial_window=explicit, ca_cert=settings.ca_cert, cert=settings.cert,
            key=settings.key, verify=settings.verify, credentials=settings.credentials)
        return ForkSafe(grpc, lambda: _gateway(settings, None),
                        module.grpc_ran_before_fork)
    return _gateway(settings, session)


def _gateway(settings: Settings, session: requests.Session | None) -> Transport:
    explicit = settings.retry_deadline
    return GatewayTransport(HTTPTransport(
        settings.endpoints, timeout=settings.timeout,
        retry_deadline=settings.timeout if explicit is None else explicit,
        dial_window=explicit, session=session, verify=settings.tls_verify,
        cert=settings.tls_cert, credentials=settings.credentials,
        allow_redirects=settings.allow_redirects))
