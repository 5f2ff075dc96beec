"""``EtcdClient``: etcd's v3 JSON gateway, and the classic etcd-py calls on top of it.

The client knows keys, values, revisions and leases; it knows nothing of
mappings.  Keys and values are ``str`` (UTF-8) or ``bytes``: what goes in as
``bytes`` comes back as ``bytes``.
"""

from __future__ import annotations

import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import requests

from ._classic import ClassicMixin, like
from ._transport import Transport
from .errors import EtcdError, EtcdUnavailable
from .lease import Lease
from .ops import (
    ALL_KEYS,
    Compare,
    Delete,
    Op,
    Put,
    Range,
    SortOrder,
    SortTarget,
    Txn,
    prefix_end,
    to_bytes,
)
from .parse import (
    guarded,
    parse_delete,
    parse_keepalive,
    parse_lease_grant,
    parse_members,
    parse_put,
    parse_range,
    parse_status,
    parse_time_to_live,
    parse_txn,
)
from .records import (
    DeleteRangeResponse,
    KeyValue,
    LeaseGrant,
    LeaseInfo,
    Member,
    PutResponse,
    RangeResponse,
    Status,
    TxnResponse,
)
from .watch import Watcher

__all__ = ["EtcdClient"]

K = TypeVar("K", str, bytes)
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
PAGE_SIZE = 1000
MAX_PAGE_SIZE = 8000
SYNC_INTERVAL = 5.0
log = logging.getLogger(__name__)
T = TypeVar("T")


def _ignore(body: Mapping[str, Any]) -> None:
    """For replies that carry nothing but a header."""


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> float:
    """Seconds in a Go duration such as ``"2s"``, ``"500ms"`` or ``"1m30s"`` (or plain seconds)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 5s, 500ms or 1m30s)")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _env_credentials(username: str | None, password: str | None) -> tuple[str, str] | None:
    if username is None:
        user = os.environ.get("ETCDCTL_USER")
        if user is None:
            return None
        username, sep, from_user = user.partition(":")
        if password is None:
            password = from_user if sep else os.environ.get("ETCDCTL_PASSWORD", "")
    return (username, password or "")


class EtcdClient(ClassicMixin):
    """A client for one etcd cluster, over its v3 JSON gateway.

    ``endpoints`` is a URL, a comma-separated string or a list of URLs; unset it
    reads ``ETCDCTL_ENDPOINTS``, else uses ``http://127.0.0.1:2379``.  TLS
    (``ca_cert``, ``cert``/``key``, or etcd-py's ``ssl_cert``/``ssl_key``) and
    the user (``username``/``password``) likewise fall back to etcdctl's
    environment variables.  ``timeout`` bounds each request; a request fails
    over to the next endpoint while it is safe and ``retry_deadline`` has not
    passed.  ``auto_sync`` relearns the endpoints from the member list.
    ``allow_redirects`` follows HTTP redirects (keeping method and body).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        retry_deadline: float | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        verify: bool = True,
        ssl_cert: str | None = None,
        ssl_key: str | None = None,
        session: requests.Session | None = None,
        allow_redirects: bool = False,
        auto_sync: bool = False,
        max_txn_ops: int = 128,
    ):
        env = os.environ
        if endpoints is None:
            endpoints = env.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINT
        if timeout is None:
            dial = env.get("ETCDCTL_DIAL_TIMEOUT")
            timeout = go_duration(dial) if dial else 5.0
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        ca_cert = ca_cert or env.get("ETCDCTL_CACERT")
        if cert or ssl_cert:  # an explicit certificate never pairs with the env's key
            cert, key = cert or ssl_cert, key or ssl_key
        else:
            cert, key = env.get("ETCDCTL_CERT"), key or ssl_key or env.get("ETCDCTL_KEY")
        tls_cert: str | tuple[str, str] | None = (cert, key) if cert and key else cert
        tls_verify: bool | str = (ca_cert or True) if verify else False
        self.max_txn_ops = max_txn_ops
        self._auto_sync = auto_sync
        self._sync_due = auto_sync  # the first request learns the cluster's members
        self._last_sync = 0.0
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._transport = Transport(
            endpoints,
            timeout=timeout,
            retry_deadline=timeout if retry_deadline is None else retry_deadline,
            session=session,
            verify=tls_verify,
            cert=tls_cert,
            credentials=_env_credentials(username, password),
            allow_redirects=allow_redirects,
        )
        if auto_sync:
            self._transport.on_endpoint_failure = self._mark_sync_due

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop lease keepalives and release the HTTP connections."""
        for lease in list(self._leases):
            lease.close()
        self._transport.close()

    def reset_connections(self) -> None:
        """Drop pooled connections without closing them (e.g. in a forked child)."""
        self._transport.reset()

    def __repr__(self) -> str:
        return f"EtcdClient(endpoints={self._transport.endpoints!r})"

    @property
    def endpoints(self) -> list[str]:
        """The endpoints in use, current first."""
        t = self._transport
        return t.endpoints[t._current:] + t.endpoints[:t._current]

    @property
    def timeout(self) -> float:
        """Seconds to wait for one answer."""
        return self._transport.timeout

    # -- the v3 KV API ----------------------------------------------------------

    def _rpc(self, path: str, body: dict[str, Any], parse: Callable[[Mapping[str, Any]], T], *,
             idempotent: bool, endpoint: str | None = None) -> T:
        if self._sync_due:
            self._auto_sync_now()
        reply = self._transport.call(path, body, idempotent=idempotent, endpoint=endpoint)
        return guarded(parse, reply, path)

    def _mark_sync_due(self) -> None:
        # After a failover, relearn the members (at most every few seconds).
        if time.monotonic() - self._last_sync > SYNC_INTERVAL:
            self._sync_due = True

    def _auto_sync_now(self) -> None:
        self._sync_due = False
        self._last_sync = time.monotonic()
        try:
            self.sync_endpoints()
        except EtcdError as exc:  # keep the endpoints we have
            log.warning("endpoint auto-sync failed: %s", type(exc).__name__)

    def range(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        serializable: bool = False,
        sort_order: SortOrder = "NONE",
        sort_target: SortTarget = "KEY",
    ) -> RangeResponse:
        """Keys ``key``, or ``[key, range_end)``, or every key starting with ``key``."""
        k, end = self._span(key, range_end, prefix)
        req = Range(k, end, limit=limit, revision=revision, keys_only=keys_only,
                    count_only=count_only, serializable=serializable,
                    sort_order=sort_order, sort_target=sort_target)
        return self._rpc("/v3/kv/range", req.to_wire(), parse_range, idempotent=True)

    def range_iter(
        self,
        key: str | bytes,
        range_end: str | bytes | None = None,
        *,
        prefix: bool = False,
        revision: int = 0,
        keys_only: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[KeyValue]:
        """Every key of a range, paged with ``limit`` at the first page's revision."""
        k, end = self._span(key, range_end, prefix)
        for page in self.pages(k, end, revision=revision, keys_only=keys_only,
                               page_size=page_size):
            yield from page.kvs

    def pages(self, key: bytes, range_end: bytes | None, *, revision: int = 0,
              keys_only: bool = False,
              page_size: int = PAGE_SIZE) -> Generator[RangeResponse, bytes | None, None]:
        """Pages of ``[key, range_end)`` at one revision; each page's ``revision`` is it.

        Send a new start key into the generator to skip ahead.  Pages start at
        ``page_size`` keys and double up to ``MAX_PAGE_SIZE`` (or ``page_size``
        if larger): etcd counts the rest of the range for every page, so few
        large pages are much faster than many small ones, and memory stays
        bounded by one page whatever the size of the range.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        limit, ceiling = page_size, max(page_size, MAX_PAGE_SIZE)
        while True:
            page = self.range(key, range_end, limit=limit, revision=revision,
                              keys_only=keys_only)
            limit = min(limit * 2, ceiling)
            revision = revision or page.revision
            page = RangeResponse(page.kvs, page.count, page.more, revision)
            skip_to = yield page
            if not page.more or not page.kvs:
                return
            key = page.kvs[-1].key + b"\0"
            if skip_to is not None and skip_to > key:
                key = skip_to
                if range_end not in (None, ALL_KEYS) and key >= range_end:
                    return

    def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0,
            prev_kv: bool = False) -> PutResponse:
        """Store ``value`` at ``key``."""
        req = Put(to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)
        return self._rpc("/v3/kv/put", req.to_wire(), parse_put, idempotent=False)

    def delete_range(self, key: str | bytes, range_end: str | bytes | None = None, *,
                     prefix: bool = False, prev_kv: bool = False) -> DeleteRangeResponse:
        """Delete ``key``, or ``[key, range_end)``, or every key starting with ``key``."""
        k, end = self._span(key, range_end, prefix)
        req = Delete(k, end, prev_kv=prev_kv)
        return self._rpc("/v3/kv/deleterange", req.to_wire(), parse_delete, idempotent=False)

    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResponse:
        """Run ``success`` if every compare holds, else ``failure``, atomically."""
        body = Txn(compare, success, failure).to_wire()
        read_only = all(isinstance(op, Range) for op in (*success, *failure))
        return self._rpc("/v3/kv/txn", body, parse_txn, idempotent=read_only)

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard the history before ``revision``."""
        body: dict[str, Any] = {"revision": revision}
        if physical:
            body["physical"] = True
        self._rpc("/v3/kv/compaction", body, _ignore, idempotent=False)

    @staticmethod
    def _span(key: str | bytes, range_end: str | bytes | None,
              prefix: bool) -> tuple[bytes, bytes | None]:
        k = to_bytes(key)
        if prefix:
            if range_end is not None:
                raise TypeError("give range_end or prefix=True, not both")
            return (k or ALL_KEYS), prefix_end(k)
        if not k:
            raise ValueError("the key must not be empty")
        return k, None if range_end is None else to_bytes(range_end)

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int, *, lease_id: int = 0) -> LeaseGrant:
        """A new lease of ``ttl`` seconds (the server may round it up)."""
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise ValueError(f"ttl must be a positive int, not {ttl!r}")
        body: dict[str, Any] = {"TTL": ttl}
        if lease_id:
            body["ID"] = lease_id
        return self._rpc("/v3/lease/grant", body, parse_lease_grant, idempotent=False)

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease; its keys are deleted at once."""
        self._rpc("/v3/lease/revoke", {"ID": lease_id}, _ignore, idempotent=True)

    def lease_keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease; the new TTL, or 0 when the lease is gone."""
        return self._rpc("/v3/lease/keepalive", {"ID": lease_id}, parse_keepalive,
                         idempotent=True)

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """A lease's remaining TTL (-1 when it is gone) and, optionally, its keys."""
        return self._rpc("/v3/lease/timetolive", {"ID": lease_id, "keys": keys},
                         parse_time_to_live, idempotent=True)

    # -- cluster -----------------------------------------------------------------

    def members(self) -> list[Member]:
        """The cluster's members."""
        return self._rpc("/v3/cluster/member/list", {}, parse_members, idempotent=True)

    def status(self, endpoint: str | None = None) -> Status:
        """One member's status (the current endpoint's unless given)."""
        return self._rpc("/v3/maintenance/status", {}, parse_status, idempotent=True,
                         endpoint=endpoint.rstrip("/") if endpoint else None)

    def version(self) -> dict[str, str]:
        """``{"etcdserver": ..., "etcdcluster": ...}`` of the current endpoint."""
        return {k: str(v) for k, v in self._transport.get("/version").items()}

    def machines(self) -> list[str]:
        """The client URLs of every member."""
        return [url for m in self.members() for url in m.client_urls]

    def leader(self) -> str:
        """The client URL of the current leader."""
        members = self.members()
        leader_id = self.status().leader
        for m in members:
            if m.id == leader_id and m.client_urls:
                return m.client_urls[0]
        raise EtcdUnavailable("the cluster has no leader right now")

    def sync_endpoints(self) -> list[str]:
        """Replace the endpoint list with the members' client URLs."""
        urls = [url for m in self.members() if not m.is_learner for url in m.client_urls]
        if urls:
            self._transport.set_endpoints(urls)
        return self.endpoints

    # -- watch ---------------------------------------------------------------------

    def watch_iter(self, key: K, *, prefix: bool = False, start_revision: int | None = None,
                   prev_kv: bool = False, read_timeout: float = 60.0) -> Watcher[K]:
        """Iterate the changes of ``key`` (or of every key under it); resumes on failure.

        Without ``start_revision`` it sees changes made after it returns.
        """
        k, end = self._span(key, None, prefix)

        def conv(data: bytes) -> Any:
            return like(key, data)

        return self.watch_range(k, end, key_fn=conv, value_fn=conv,
                                start_revision=start_revision, prev_kv=prev_kv,
                                read_timeout=read_timeout)

    def watch_range(self, key: bytes, range_end: bytes | None, *,
                    key_fn: Callable[[bytes], Any], value_fn: Callable[[bytes], Any],
                    accept: Callable[[bytes], bool] | None = None,
                    start_revision: int | None = None, prev_kv: bool = False,
                    read_timeout: float = 60.0) -> Watcher[Any]:
        """Watch ``[key, range_end)``, converting keys and values with the given functions.

        ``accept`` filters events by their raw key.
        """
        return Watcher(self._transport, key, range_end, key_fn=key_fn, value_fn=value_fn,
                       accept=accept, start_revision=start_revision, prev_kv=prev_kv,
                       read_timeout=read_timeout)

    def lease(self, ttl: int, *, keepalive: bool = True,
              on_expired: Callable[[Lease], None] | None = None) -> Lease:
        """Grant a lease of ``ttl`` seconds, kept alive by a daemon thread."""
        lease = Lease(self, ttl, keepalive=keepalive, on_expired=on_expired)
        self._leases.add(lease)
        return lease
