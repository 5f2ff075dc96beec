"""Small helpers that several test modules share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from etcdmap import Event, Watcher


def wait_until(condition: Callable[[], bool], timeout: float, what: str = "true") -> float:
    """Poll ``condition`` every 50 ms; the seconds it took to hold (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"still not {what} after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def collect(watcher: Watcher[Any], count: int, timeout: float = 5,
            quiet: float = 0.3) -> list[Event[Any]]:
    """The next ``count`` events, then proof that nothing else (no duplicate) follows."""
    deadline = time.monotonic() + timeout
    events: list[Event[Any]] = []
    while len(events) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(events)} of {count} events within {timeout} s: {events}"
        event = watcher.next_event(left)
        if event is not None:
            events.append(event)
    extra = watcher.next_event(quiet)
    assert extra is None, f"an unexpected (repeated?) event: {extra}"
    return events
