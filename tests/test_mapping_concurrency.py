"""Atomic methods under contention: threads racing on the same keys.

Each thread has its own client (as separate processes would), except where
a test says it shares one mapping.  A barrier releases the threads together
so the calls really overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TypeVar

import pytest

from etcdmap import EtcdClient, EtcdMapping

T = TypeVar("T")


@pytest.fixture
def mappings(etcd_endpoint: str, etcd_prefix: str) -> Iterator[Callable[[int], list[EtcdMapping]]]:
    """``mappings(n)``: n mappings over the test's prefix, each with its own client."""
    with ExitStack() as stack:
        def make(n: int) -> list[EtcdMapping]:
            return [EtcdMapping(etcd_prefix, client=stack.enter_context(EtcdClient(etcd_endpoint)))
                    for _ in range(n)]
        yield make


def race(n: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0) .. work(n - 1)`` in n threads released together; their results."""
    barrier = threading.Barrier(n)

    def start(i: int) -> T:
        barrier.wait(timeout=30)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(start, range(n)))


def test_racing_setdefault_all_get_the_stored_value(
        mappings: Callable[[int], list[EtcdMapping]], etcd_client: EtcdClient,
        etcd_prefix: str) -> None:
    ms = mappings(8)
    for round_ in range(10):
        key = f"leader-{round_}"
        got = race(8, lambda i, key=key: ms[i].setdefault(key, f"thread-{i}"))
        stored = etcd_client.get(f"{etcd_prefix}/{key}").value
        assert got == [stored] * 8
        assert stored in {f"thread-{i}" for i in range(8)}


def test_racing_setdefault_with_a_dict_default_keeps_one_whole_default(
        mappings: Callable[[int], list[EtcdMapping]]) -> None:
    ms = mappings(8)
    got = race(8, lambda i: ms[i].setdefault("cfg", {"owner": f"thread-{i}", "n": str(i)}))
    winner = ms[0]["cfg"].to_dict()
    assert winner in [{"owner": f"thread-{i}", "n": str(i)} for i in range(8)]
    assert all(g == winner for g in got)


def test_counter_with_a_replace_retry_loop_loses_no_increment(
        mappings: Callable[[int], list[EtcdMapping]]) -> None:
    ms = mappings(4)
    ms[0]["counter"] = "0"

    def increment_25_times(i: int) -> None:
        m = ms[i]
        for _ in range(25):
            while True:
                current = m["counter"]
                if m.replace("counter", current, str(int(current) + 1)):
                    break

    race(4, increment_25_times)
    assert ms[0]["counter"] == "100"


def test_concurrent_popitem_returns_each_item_exactly_once(
        etcd_prefix: str, etcd_client: EtcdClient) -> None:
    # One mapping (and client) shared by all four threads.
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    items = {f"k{i:02}": f"v{i}" for i in range(30)}
    items.update({f"d{i}": {"x": str(i), "y": {"z": str(i)}} for i in range(10)})
    m.update(items)
    assert len(m) == 40

    def pop_until_empty(_: int) -> list[tuple[str, object]]:
        popped = []
        while True:
            try:
                popped.append(m.popitem())
            except KeyError:
                return popped

    per_thread = race(4, pop_until_empty)
    popped = [pair for pairs in per_thread for pair in pairs]
    assert len(popped) == 40
    assert dict(popped) == items
    assert len(m) == 0


def test_concurrent_popitem_across_clients_returns_each_item_exactly_once(
        mappings: Callable[[int], list[EtcdMapping]]) -> None:
    ms = mappings(4)
    items = {f"k{i:02}": f"v{i}" for i in range(40)}
    ms[0].update(items)

    def pop_until_empty(i: int) -> list[tuple[str, object]]:
        popped = []
        while True:
            try:
                popped.append(ms[i].popitem())
            except KeyError:
                return popped

    popped = [pair for pairs in race(4, pop_until_empty) for pair in pairs]
    assert sorted(popped) == sorted(items.items())
