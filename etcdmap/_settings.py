"""A client's settings: its arguments, else etcdctl's environment, checked.

Pure: it reads ``os.environ`` (or the mapping it is given) and raises
``TypeError``/``ValueError`` naming a bad argument; it opens nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_ENDPOINT", "MAX_PAGE_SIZE", "MAX_TXN_OPS", "PAGE_SIZE", "READ_TIMEOUT",
           "TRANSPORTS", "Settings",
           "check_count", "check_seconds", "check_ttl", "check_wait", "go_duration",
           "txn_read_crashes"]

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
PAGE_SIZE = 1000  # keys in the first page of a scan (pages then double)
MAX_PAGE_SIZE = 8000  # keys in a page at the most
READ_TIMEOUT = 60.0  # seconds a watch waits in silence before it asks its member
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
TRANSPORTS = ("http", "grpc")  # the JSON gateway over requests (the default), or gRPC
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


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as seconds, or the ``TypeError``/``ValueError`` that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        kind = "a finite number of seconds >= 0" if zero else "a finite positive number of seconds"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    return float(value)


def check_wait(name: str, value: object) -> float | None:
    """``value`` as seconds to wait (``None``: for ever), or the error that names ``name``."""
    return None if value is None else check_seconds(name, value, zero=True)


def check_ttl(value: object) -> int:
    """``value`` as a lease's whole seconds, or the ``TypeError``/``ValueError`` that says so."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ttl must be an int of seconds, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"ttl must be a positive int of seconds, not {value!r}")
    return value


def check_count(name: str, value: object) -> int:
    """``value`` as a positive count, or the ``TypeError``/``ValueError`` that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return value


def txn_read_crashes(version: str) -> bool:
    """Whether an etcd server of ``version`` can crash on an abandoned read-only txn.

    etcd 3.5.0 to 3.5.6 (etcd-io/etcd#14110 and #14891); an unknown version
    counts as one of them.
    """
    parts = re.findall(r"\d+", version)[:3]
    if len(parts) < 3:
        return True
    major, minor, patch = (int(p) for p in parts)
    return (major, minor) == (3, 5) and patch <= 6


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an :class:`~etcdmap.EtcdClient` was given, with the environment's defaults."""

    endpoints: str | Sequence[str]
    timeout: float
    retry_deadline: float | None  # None: the timeout, and a short dial window
    ca_cert: str | None
    cert: str | None
    key: str | None
    verify: bool
    credentials: tuple[str, str] | None = dataclasses.field(repr=False)
    allow_redirects: bool
    auto_sync: bool
    max_txn_ops: int
    transport: str = "http"

    @property
    def tls_cert(self) -> str | tuple[str, str] | None:
        """``cert=`` for requests: the certificate, with its key file if separate."""
        return (self.cert, self.key) if self.cert and self.key else self.cert

    @property
    def tls_verify(self) -> bool | str:
        """``verify=`` for requests: the CA file, or whether to verify."""
        return (self.ca_cert or True) if self.verify else False

    def portable(self, endpoints: list[str]) -> dict[str, Any]:
        """The arguments that rebuild an equal client elsewhere: never the user or password."""
        return {"endpoints": endpoints, "timeout": self.timeout,
                "retry_deadline": self.retry_deadline, "ca_cert": self.ca_cert,
                "cert": self.cert, "key": self.key, "verify": self.verify,
                "allow_redirects": self.allow_redirects, "auto_sync": self.auto_sync,
                "max_txn_ops": self.max_txn_ops, "transport": self.transport}

    @classmethod
    def resolve(cls, *, endpoints: str | Sequence[str] | None = None,
                timeout: float | None = None, retry_deadline: float | None = None,
                username: str | None = None, password: str | None = None,
                ca_cert: str | None = None, cert: str | None = None, key: str | None = None,
                verify: bool = True, ssl_cert: str | None = None, ssl_key: str | None = None,
                allow_redirects: bool = False, auto_sync: bool = False,
                max_txn_ops: int = MAX_TXN_OPS, transport: str | None = None,
                env: Mapping[str, str] = os.environ) -> Settings:
        """The settings of these arguments, with etcdctl's variables where they are None."""
        if endpoints is None:
            endpoints = env.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINT
        if timeout is None:
            dial = env.get("ETCDCTL_DIAL_TIMEOUT")
            timeout = go_duration(dial) if dial else 5.0
        timeout = check_seconds("timeout", timeout)
        if retry_deadline is not None:
            retry_deadline = check_seconds("retry_deadline", retry_deadline, zero=True)
        for name, value in (("username", username), ("password", password),
                            ("ca_cert", ca_cert), ("cert", cert), ("key", key),
                            ("ssl_cert", ssl_cert), ("ssl_key", ssl_key)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be a bool (ca_cert= names a CA file), "
                            f"not {type(verify).__name__}")
        if cert or ssl_cert:  # an explicit certificate never pairs with the env's key
            cert, key = cert or ssl_cert, key or ssl_key
        else:
            cert, key = env.get("ETCDCTL_CERT"), key or ssl_key or env.get("ETCDCTL_KEY")
        return cls(endpoints=endpoints, timeout=timeout, retry_deadline=retry_deadline,
                   ca_cert=ca_cert or env.get("ETCDCTL_CACERT"), cert=cert, key=key,
                   verify=verify, credentials=_credentials(username, password, env),
                   allow_redirects=allow_redirects, auto_sync=auto_sync,
                   max_txn_ops=check_count("max_txn_ops", max_txn_ops),
                   transport=check_transport(transport, env))


def check_transport(transport: object, env: Mapping[str, str] = os.environ) -> str:
    """``transport=``, else ``ETCDMAP_TRANSPORT``, else ``"http"``; checked."""
    name = "transport"
    if transport is None:
        transport, name = env.get("ETCDMAP_TRANSPORT") or "http", "ETCDMAP_TRANSPORT"
    if not isinstance(transport, str):
        raise TypeError(f"transport must be a str, not {type(transport).__name__}")
    if transport.strip().lower() not in TRANSPORTS:
        raise ValueError(f"invalid {name} {transport!r}; expected one of {list(TRANSPORTS)}")
    return transport.strip().lower()


def _credentials(username: str | None, password: str | None,
                 env: Mapping[str, str]) -> tuple[str, str] | None:
    if username is None:
        user = env.get("ETCDCTL_USER")
        if user is None:
            return None
        username, sep, from_user = user.partition(":")
        if password is None:
            password = from_user if sep else env.get("ETCDCTL_PASSWORD", "")
    return (username, password or "")
