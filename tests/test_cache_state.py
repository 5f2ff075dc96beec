"""``CachedMapping`` against a plain nested ``dict``, with a second writer, driven by hypothesis.

The machine is :class:`machines.MappingMachine` (every rule the plain
mapping's machine runs, through the cache) plus a second, uncached
``EtcdMapping`` on its own client over the same prefix.  The cache must show
each of its own writes as soon as the write returns (read-your-writes, checked
before any wait), and another client's write once ``wait_for`` reaches that
write's revision.  One rule runs both writers at once.  After every step the
cache, the uncached mapping and the model agree.

Every example runs on a fresh prefix under the test's ``etcd_prefix``, with a
fresh cache.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test
from machines import NO_DEFAULT, SEGMENTS, MappingMachine, keys, scalars, segments, values
from nested_model import MISSING, assign, lookup

from etcdmap import EtcdClient, EtcdMapping
from etcdmap.cache import CachedMapping
from etcdmap.ops import Op
from etcdmap.records import DeleteRangeResponse, PutResponse, TxnResponse

WAIT = 10.0  # seconds the cache may take to show another client's write

# -- the second writer ---------------------------------------------------------------------


def _changed(resp: TxnResponse) -> bool:
    """Whether a txn wrote anything (else etcd's revision did not move)."""
    return any(isinstance(r, PutResponse) or (isinstance(r, DeleteRangeResponse) and r.deleted)
               for r in resp.responses)


class RecordingMapping(EtcdMapping):
    """An uncached mapping that remembers the revision of its last effective write."""

    last_write = 0

    def _txn(self, compare: Sequence[Any], success: Sequence[Op],
             failure: Sequence[Op]) -> TxnResponse:
        resp = super()._txn(compare, success, failure)
        if _changed(resp):
            self.last_write = resp.revision
        return resp


class CacheMachine(MappingMachine):
    def __init__(self, cached: CachedMapping, other: RecordingMapping,
                 closing: list[threading.Thread]):
        super().__init__(cached)
        self.cached = cached
        self.closing = closing
        self.other = other
        self.revision = cached.revision
        self.pool: ThreadPoolExecutor | None = None

    def teardown(self) -> None:
        # Each example has its own prefix (all emptied after the test), so no
        # clearing here.  close() can take half a second (the follower polls
        # its watch every 0.5 s): closing in the background keeps 100 examples fast.
        if self.pool is not None:
            self.pool.shutdown()
        closer = threading.Thread(target=self.cached.close)
        closer.start()
        self.closing.append(closer)

    def wrote(self) -> None:
        # Read-your-writes: the cache shows its own write as soon as it returns.
        assert self.cached.to_dict() == self.model

    def wrote_through_a_view(self) -> None:
        # Views derived from the cache (submapping()) keep read-your-writes too.
        self.wrote()

    def catch_up(self) -> None:
        """Wait until the cache shows the second writer's last write."""
        if self.other.last_write:
            assert self.cached.wait_for(self.other.last_write, WAIT), (
                f"the cache is stuck at {self.cached.revision}, "
                f"the other write was at {self.other.last_write}")

    # -- writes by the second, uncached writer ------------------------------------------------

    @rule(key=keys, value=values)
    def other_sets(self, key: str, value: Any) -> None:
        self.other[key] = value
        self.model = assign(self.model, key, value)
        self.catch_up()

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def other_updates(self, pairs: list[tuple[str, Any]]) -> None:
        self.update_through(self.other, pairs)
        self.catch_up()

    @rule(key=keys)
    def other_deletes(self, key: str) -> None:
        self.delete_through(self.other, key)
        self.catch_up()

    @rule(key=keys, value=values, mine_key=keys, mine_value=scalars)
    def other_then_mine(self, key: str, value: Any, mine_key: str, mine_value: str) -> None:
        # No waiting in between: the cache's own write (a put, so it always
        # changes something) comes later, so once it returns the cache shows
        # the other write too.  (Writes that change nothing: see test_cache.py.)
        self.other[key] = value
        self.model = assign(self.model, key, value)
        self.cached[mine_key] = mine_value
        self.model = assign(self.model, mine_key, mine_value)
        self.wrote()

    @rule(data=st.data(), mine=st.tuples(segments, keys, values), theirs=st.tuples(keys, values))
    def both_at_once(self, data: st.DataObject, mine: tuple[str, str, Any],
                     theirs: tuple[str, Any]) -> None:
        # The two writers race, on different top-level names so that either
        # order gives the same tree (and so the same model, whichever won: the
        # draws of later steps depend on the model only).
        head, rest, value = mine
        other_head = data.draw(st.sampled_from([s for s in SEGMENTS if s != head]))
        other_key, other_value = f"{other_head}/{theirs[0]}", theirs[1]
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="second-writer")
        future = self.pool.submit(self.other.__setitem__, other_key, other_value)
        self.cached[f"{head}/{rest}"] = value
        mine_now = self.cached.get(head, MISSING)
        future.result()
        expected_mine = lookup(assign(self.model, f"{head}/{rest}", value), head)
        assert (mine_now.to_dict() if isinstance(mine_now, CachedMapping) else mine_now) \
            == expected_mine
        self.model = assign(self.model, f"{head}/{rest}", value)
        self.model = assign(self.model, other_key, other_value)
        self.catch_up()

    # -- what only a cache (or two clients) can show ------------------------------------------

    @invariant()
    def is_a_dict_that_agrees_with_etcd(self) -> None:
        assert json.loads(json.dumps(self.cached)) == self.model
        for key in self.probes:  # from memory: as cheap as the dict it is
            expected = lookup(self.model, key)
            got = self.cached.get(key, NO_DEFAULT)
            assert got == (NO_DEFAULT if expected is MISSING else expected), key
        assert self.other.to_dict() == self.model
        assert self.cached.revision >= self.revision
        self.revision = self.cached.revision


@pytest.fixture
def second_client(etcd_endpoint: str) -> Iterator[EtcdClient]:
    with EtcdClient(etcd_endpoint) as client:
        yield client


# A passing run takes well under a minute with the "ci" profile.  Once it finds
# a bug, shrinking the example (hundreds of replays against etcd) can take two
# or three minutes; the timeout leaves room for it, so the report shows the
# shrunk example rather than a timeout.
@pytest.mark.timeout(600)
def test_the_cache_behaves_like_a_nested_dict_beside_a_second_writer(
        etcd_client: EtcdClient, second_client: EtcdClient, etcd_prefix: str) -> None:
    counter = itertools.count()
    closing: list[threading.Thread] = []
    before = cache_threads()

    def fresh_machine() -> CacheMachine:
        prefix = f"{etcd_prefix}/{next(counter)}"
        cached = EtcdMapping(prefix, client=etcd_client).cached()
        return CacheMachine(cached, RecordingMapping(prefix, client=second_client), closing)

    try:
        # max_examples comes from the active profile ("ci": 100).  One bug at a
        # time: shrinking several at once can outlast the test's timeout.
        run_state_machine_as_test(fresh_machine, settings=settings(
            stateful_step_count=20, report_multiple_bugs=False))
    finally:
        for closer in closing:
            closer.join(10)
    left = [t for t in cache_threads() - before if t.is_alive()]
    assert not left, f"{len(left)} cache threads outlived close()"


def cache_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name in ("etcdmap-cache", "etcdmap-watch")}
