"""The endpoint list: which member a request goes to, and moving on when one fails."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["Endpoints", "normalize_endpoints"]

# A member that failed is passed over for this long while another one is healthy.
COOLDOWN = 5.0


def normalize_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"http://a:2379,http://b:2379"`` or a list, as URLs without a trailing slash."""
    if isinstance(endpoints, str):
        items = endpoints.split(",")
    else:
        wrong = TypeError(f"endpoints must be a str or a list of str URLs, "
                          f"not {type(endpoints).__name__}")
        if isinstance(endpoints, (bytes, bytearray)):
            raise wrong
        try:
            items = list(endpoints)
        except TypeError:
            raise wrong from None
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"endpoints are str URLs, not {type(item).__name__}")
        item = item.strip()
        if not item:
            continue
        if "://" not in item:
            item = "http://" + item
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"invalid etcd endpoint {parts.scheme}://{parts.hostname}")
        if parts.username or parts.password:
            # Never keep secrets in URLs: they would show in reprs and errors.
            raise ValueError("pass credentials as username=/password=, not in the endpoint URL")
        try:
            port = parts.port  # a number from 0 to 65535, or None
        except ValueError:
            port = 0
        if port == 0 or (port is None and parts.netloc.endswith(":")):
            raise ValueError(f"invalid port in etcd endpoint {item!r}")
        out.append(f"{parts.scheme}://{parts.netloc}")
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


class Endpoints:
    """The members' URLs, the current one first in line, with a cooldown for failed ones."""

    def __init__(self, endpoints: str | Sequence[str]):
        self.urls = normalize_endpoints(endpoints)
        self._current = 0
        self._failed: dict[str, float] = {}  # endpoint -> when its cooldown ends
        self._lock = threading.Lock()  # guards urls, _current and _failed

    @property
    def current(self) -> str:
        """The endpoint requests go to now."""
        urls = self.urls
        return urls[self._current % len(urls)]

    def in_order(self) -> list[str]:
        """Every endpoint, the current one first."""
        urls, i = self.urls, self._current % len(self.urls)
        return urls[i:] + urls[:i]

    def replace(self, endpoints: Sequence[str]) -> None:
        """A new list, keeping the current endpoint first if it is still listed."""
        new = normalize_endpoints(endpoints)
        with self._lock:
            current = self.current
            if current in new:
                new.remove(current)
                new.insert(0, current)
            self._current = 0
            self.urls = new

    def failed(self, failed: str, *, rotate: bool = True) -> bool:
        """Put ``failed`` on cooldown; move to the next healthy endpoint.  Whether it moved."""
        with self._lock:
            now = time.monotonic()
            self._failed[failed] = now + COOLDOWN
            urls = self.urls
            if not rotate or self.current != failed:
                return False  # pinned, or another thread already moved on
            n = len(urls)
            for step in range(1, n + 1):
                i = (self._current + step) % n
                if self._failed.get(urls[i], 0.0) <= now:
                    break
            else:  # every member failed lately: plain round robin
                i = (self._current + 1) % n
            self._current = i
        return True

    def answered(self, endpoint: str) -> None:
        """``endpoint`` answered: its cooldown is over."""
        if self._failed:
            self._failed.pop(endpoint, None)

    def backoff(self, attempt: int, deadline: float | None = None) -> None:
        """After a full round of failures, sleep (jittered, growing, within ``deadline``)."""
        n = len(self.urls)
        if attempt < n:
            return
        delay = min(0.05 * 2 ** (attempt // n), 1.0) * random.uniform(0.5, 1.0)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(delay)

    def after_fork(self) -> None:
        """A lock held at fork time stays held in the child: a new one."""
        self._lock = threading.Lock()
