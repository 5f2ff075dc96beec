"""A gRPC transport that a forked child swaps for the gateway, if gRPC ran in its parent.

gRPC's core is not fork-safe: a child inherits its poller and thread pools with
the parent's threads gone, and gRPC's own fork support stalls or fails while
streams (watches, keepalives) are open.  So a child forked from a process that
had opened gRPC channels never calls gRPC: its first call swaps the transport
for the JSON gateway, which etcd serves on the same port, with the same
endpoints, TLS files and credentials.  A child of a process that never opened
a gRPC channel keeps gRPC (what gRPC recommends: channels made after the fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..ops import Delete, Put, Range, Txn, WatchCreate
from ..records import (
    DeleteRangeResponse,
    LeaseGrant,
    LeaseInfo,
    Member,
    PutResponse,
    RangeResponse,
    Status,
    TxnResponse,
)
from .base import Cuttable, Transport, WatchStream
from .policy import Policy

__all__ = ["ForkSafe"]

_INHERITED: list[Any] = []  # a child's copies of the parent's gRPC transports: never touched


class ForkSafe:
    """``grpc`` until a forked child whose parent ran gRPC; ``gateway()`` from then on."""

    def __init__(self, grpc: Transport, gateway: Callable[[], Transport],
                 grpc_ran_before_fork: Callable[[], bool]):
        self._current = grpc
        self._gateway = gateway
        self._ran_before_fork = grpc_ran_before_fork
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _now(self) -> Transport:
        if self._pid != os.getpid():
            self._after_fork()
        return self._current

    def _after_fork(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._ran_before_fork():
                old = self._current
                _INHERITED.append(old)
                new = self._gateway()
                new.set_endpoints(old.endpoints_in_order())
                new.on_endpoint_failure = old.on_endpoint_failure
                self._current = new
            self._pid = os.getpid()

    @property
    def transport(self) -> Transport:
        """The transport calls go through now."""
        return self._now()

    # -- Transport, by delegation ------------------------------------------------------

    @property
    def timeout(self) -> float:
        return self._now().timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._now().timeout = seconds

    @property
    def on_endpoint_failure(self) -> Callable[[], None] | None:
        return self._now().on_endpoint_failure

    @on_endpoint_failure.setter
    def on_endpoint_failure(self, callback: Callable[[], None] | None) -> None:
        self._now().on_endpoint_failure = callback

    @property
    def policy(self) -> Policy:
        return self._now().policy

    @property
    def endpoints(self) -> list[str]:
        return self._now().endpoints

    @property
    def endpoint(self) -> str:
        return self._now().endpoint

    @property
    def has_credentials(self) -> bool:
        return self._now().has_credentials

    def endpoints_in_order(self) -> list[str]:
        return self._now().endpoints_in_order()

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        self._now().set_endpoints(endpoints)

    def fail_over(self, failed: str, attempt: int = 1) -> None:
        self._now().fail_over(failed, attempt)

    def reauthenticate(self) -> None:
        self._now().reauthenticate()

    def reset(self) -> None:
        self._now().reset()

    def close(self) -> None:
        self._now().close()

    def range(self, req: Range, *, endpoint: str | None = None, timeout: float | None = None,
              deadline: float | None = None) -> RangeResponse:
        return self._now().range(req, endpoint=endpoint, timeout=timeout, deadline=deadline)

    def ranges(self, reqs: Sequence[Range]) -> list[RangeResponse]:
        return self._now().ranges(reqs)

    def put(self, req: Put) -> PutResponse:
        return self._now().put(req)

    def delete_range(self, req: Delete) -> DeleteRangeResponse:
        return self._now().delete_range(req)

    def txn(self, req: Txn) -> TxnResponse:
        return self._now().txn(req)

    def compact(self, revision: int, physical: bool) -> None:
        self._now().compact(revision, physical)

    def lease_grant(self, ttl: int, lease_id: int) -> LeaseGrant:
        return self._now().lease_grant(ttl, lease_id)

    def lease_revoke(self, lease_id: int) -> int:
        return self._now().lease_revoke(lease_id)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None,
                        deadline: float | None = None) -> int:
        return self._now().lease_keepalive(lease_id, timeout=timeout, deadline=deadline)

    def lease_time_to_live(self, lease_id: int, keys: bool) -> LeaseInfo:
        return self._now().lease_time_to_live(lease_id, keys)

    def member_list(self) -> list[Member]:
        return self._now().member_list()

    def status(self, endpoint: str | None = None) -> Status:
        return self._now().status(endpoint)

    def version(self, endpoint: str | None = None) -> dict[str, str]:
        return self._now().version(endpoint)

    def watch(self, req: WatchCreate, *, endpoint: str | None = None,
              on_opening: Callable[[Cuttable], None] | None = None) -> WatchStream:
        return self._now().watch(req, endpoint=endpoint, on_opening=on_opening)
