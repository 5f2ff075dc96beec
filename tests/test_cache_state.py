"""``CachedMapping`` against a plain nested ``dict``, with a second writer, driven by hypothesis.

The machine writes through the cache (which must show each write as soon as
it returns: read-your-writes) and through a second, uncached ``EtcdMapping``
on its own client over the same prefix (which the cache shows once
``wait_for`` reaches that write's revision).  One rule runs both writers at
once.  Whenever the machine is synced, the cache, the uncached mapping and
the model agree.

The model is the nested dict a mapping claims to be: path keys address nested
dicts, a scalar replaces a subtree, a path through a scalar replaces it by a
dict, and empty dicts do not exist.  Keys come from three segments at depth
1-3, so leaves and subtrees collide often.  Every example runs on a fresh
prefix under the test's ``etcd_prefix``, with a fresh cache.
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
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from nested_model import MISSING, assign, lookup, prune, remove

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


# -- strategies ------------------------------------------------------------------------------

SEGMENTS = ["a", "b", "c"]
segments = st.sampled_from(SEGMENTS)
keys = st.lists(segments, min_size=1, max_size=3).map("/".join)
scalars = st.sampled_from(["", "0", "1", "é"])
trees = st.dictionaries(
    segments, st.one_of(scalars, st.dictionaries(segments, scalars, max_size=2)), max_size=3)
values = st.one_of(scalars, trees)
PROBES = ["a", "b", "c", "a/b", "b/c", "c/a/b", "a/a/a"]
NO_DEFAULT = "<default>"


class CacheMachine(RuleBasedStateMachine):
    def __init__(self, cached: CachedMapping, other: RecordingMapping,
                 closing: list[threading.Thread]):
        super().__init__()
        self.cached = cached
        self.closing = closing
        self.other = other
        self.model: dict[str, Any] = {}
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

    def mine(self, key: str, value: Any) -> None:
        """The model after the cache's own write: the cache shows it already."""
        self.model = assign(self.model, key, value)
        self.shows_the_model()

    def shows_the_model(self) -> None:
        assert self.cached.to_dict() == self.model

    def catch_up(self) -> None:
        """Wait until the cache shows the second writer's last write."""
        if self.other.last_write:
            assert self.cached.wait_for(self.other.last_write, WAIT), (
                f"the cache is stuck at {self.cached.revision}, "
                f"the other write was at {self.other.last_write}")

    # -- writes through the cache ------------------------------------------------------------

    @rule(key=keys, value=scalars)
    def set_scalar(self, key: str, value: str) -> None:
        self.cached[key] = value
        self.mine(key, value)

    @rule(key=keys, tree=trees)
    def set_tree(self, key: str, tree: dict[str, Any]) -> None:
        self.cached[key] = tree
        self.mine(key, tree)

    @precondition(lambda self: any(isinstance(v, dict) for v in self.model.values()))
    @rule(data=st.data(), rest=keys, value=values)
    def set_through_a_node(self, data: st.DataObject, rest: str, value: Any) -> None:
        head = data.draw(st.sampled_from(sorted(
            k for k, v in self.model.items() if isinstance(v, dict))))
        node = self.cached[head]
        assert isinstance(node, CachedMapping)
        assert node.to_dict() == self.model[head]
        node[rest] = value
        self.mine(f"{head}/{rest}", value)

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def update(self, pairs: list[tuple[str, Any]]) -> None:
        batch = dict(pairs)
        self.cached.update(batch)
        for key, value in batch.items():
            self.model = assign(self.model, key, value)
        self.shows_the_model()

    @rule()
    def clear(self) -> None:
        self.cached.clear()
        self.model = {}
        assert len(self.cached) == 0
        self.shows_the_model()

    @rule(key=keys)
    def delitem(self, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            del self.cached[key]
        except KeyError:
            assert expected is MISSING, f"del {key!r} raised KeyError but the model has it"
        else:
            assert expected is not MISSING, f"del {key!r} succeeded but the model lacks it"
            self.model = remove(self.model, key)
        assert key not in self.cached
        self.shows_the_model()

    @rule(key=keys)
    def pop(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.cached.pop(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
        else:
            assert got == expected
            self.model = remove(self.model, key)
        self.shows_the_model()

    @rule()
    def popitem(self) -> None:
        try:
            key, value = self.cached.popitem()
        except KeyError:
            assert self.model == {}
        else:
            assert value == self.model[key]
            self.model = remove(self.model, key)
        self.shows_the_model()

    @rule(key=keys, default=values)
    def setdefault(self, key: str, default: Any) -> None:
        expected = lookup(self.model, key)
        got = self.cached.setdefault(key, default)
        if expected is not MISSING:
            assert got == expected
        else:
            self.model = assign(self.model, key, default)
            assert got == (prune(default) if isinstance(default, dict) else default)
        self.shows_the_model()

    @rule(data=st.data(), key=keys, new=values)
    def replace(self, data: st.DataObject, key: str, new: Any) -> None:
        current = lookup(self.model, key)
        candidates = [current] if isinstance(current, str) else []
        expected = data.draw(st.one_of(st.sampled_from(candidates), scalars) if candidates
                             else scalars)
        hit = current == expected
        assert self.cached.replace(key, expected, new) is hit
        if hit:
            self.model = assign(self.model, key, new)
        self.shows_the_model()

    # -- writes by the second, uncached writer ------------------------------------------------

    @rule(key=keys, value=values)
    def other_sets(self, key: str, value: Any) -> None:
        self.other[key] = value
        self.model = assign(self.model, key, value)
        self.catch_up()

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def other_updates(self, pairs: list[tuple[str, Any]]) -> None:
        batch = dict(pairs)
        self.other.update(batch)
        for key, value in batch.items():
            self.model = assign(self.model, key, value)
        self.catch_up()

    @rule(key=keys)
    def other_deletes(self, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            del self.other[key]
        except KeyError:
            assert expected is MISSING
        else:
            assert expected is not MISSING
            self.model = remove(self.model, key)
        self.catch_up()

    @rule(key=keys, value=values, mine_key=keys, mine_value=scalars)
    def other_then_mine(self, key: str, value: Any, mine_key: str, mine_value: str) -> None:
        # No waiting in between: the cache's own write (a put, so it always
        # changes something) comes later, so once it returns the cache shows
        # the other write too.  (Writes that change nothing: see test_cache.py.)
        self.other[key] = value
        self.model = assign(self.model, key, value)
        self.cached[mine_key] = mine_value
        self.mine(mine_key, mine_value)

    @rule(data=st.data(), mine=st.tuples(segments, keys, values), theirs=st.tuples(keys, values))
    def both_at_once(self, data: st.DataObject, mine: tuple[str, str, Any],
                     theirs: tuple[str, Any]) -> None:
        # The two writers race, on different top-level names so that either
        # order gives the same tree.
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

    # -- reads -------------------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.cached.get(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
            assert key not in self.cached
        else:
            assert got == expected
            assert isinstance(got, CachedMapping) == isinstance(expected, dict)
            assert key in self.cached

    @invariant()
    def agrees_with_the_model(self) -> None:
        cached, model = self.cached, self.model
        assert cached.to_dict() == model
        assert cached == model
        assert len(cached) == len(model)
        assert sorted(cached) == sorted(model)
        assert json.loads(json.dumps(cached)) == model
        for key in PROBES:
            expected = lookup(model, key)
            assert (key in cached) == (expected is not MISSING), key
            got = cached.get(key, NO_DEFAULT)
            assert got == (NO_DEFAULT if expected is MISSING else expected), key
        assert self.other.to_dict() == model
        assert cached.revision >= self.revision
        self.revision = cached.revision


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
