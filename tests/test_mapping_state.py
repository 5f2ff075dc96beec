"""``EtcdMapping`` against a plain nested ``dict``, driven by hypothesis.

The model is the nested dict the mapping claims to be: path keys address
nested dicts, a scalar replaces a subtree, a path through a scalar replaces
it by a dict, and empty dicts do not exist (etcd stores keys, not
directories), so the model is kept pruned of them.  Keys come from three
segments and depth 1-3, so leaves and subtrees collide often.

Every example runs on a fresh prefix under the test's ``etcd_prefix``.
"""

from __future__ import annotations

import itertools
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

# -- strategies ------------------------------------------------------------------------------

segments = st.sampled_from(["a", "b", "c"])
keys = st.lists(segments, min_size=1, max_size=3).map("/".join)
scalars = st.sampled_from(["", "0", "1", "é"])
trees = st.dictionaries(
    segments, st.one_of(scalars, st.dictionaries(segments, scalars, max_size=2)), max_size=3)
values = st.one_of(scalars, trees)
PROBES = ["a", "b/c", "c/a/b"]
NO_DEFAULT = "<default>"


class MappingMachine(RuleBasedStateMachine):
    def __init__(self, m: EtcdMapping):
        super().__init__()
        self.m = m
        self.model: dict[str, Any] = {}

    def teardown(self) -> None:
        self.m.clear()

    # -- writes -------------------------------------------------------------------------

    @rule(key=keys, value=scalars)
    def set_scalar(self, key: str, value: str) -> None:
        self.m[key] = value
        self.model = assign(self.model, key, value)

    @rule(key=keys, tree=trees)
    def set_tree(self, key: str, tree: dict[str, Any]) -> None:
        self.m[key] = tree
        self.model = assign(self.model, key, tree)

    @precondition(lambda self: any(isinstance(v, dict) for v in self.model.values()))
    @rule(data=st.data(), rest=keys, value=values)
    def set_through_sub_mapping(self, data: st.DataObject, rest: str, value: Any) -> None:
        head = data.draw(st.sampled_from(sorted(
            k for k, v in self.model.items() if isinstance(v, dict))))
        sub = self.m[head]
        assert isinstance(sub, EtcdMapping)
        sub[rest] = value
        self.model = assign(self.model, f"{head}/{rest}", value)

    @rule(head=keys, rest=keys, value=scalars)
    def set_through_submapping_method(self, head: str, rest: str, value: str) -> None:
        self.m.submapping(head)[rest] = value
        self.model = assign(self.model, f"{head}/{rest}", value)

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def update(self, pairs: list[tuple[str, Any]]) -> None:
        batch = dict(pairs)
        self.m.update(batch)
        for key, value in batch.items():
            self.model = assign(self.model, key, value)

    @rule()
    def clear(self) -> None:
        self.m.clear()
        self.model = {}

    # -- removals ----------------------------------------------------------------------

    @rule(key=keys)
    def delitem(self, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            del self.m[key]
        except KeyError:
            assert expected is MISSING, f"del {key!r} raised KeyError but the model has it"
        else:
            assert expected is not MISSING, f"del {key!r} succeeded but the model lacks it"
            self.model = remove(self.model, key)

    @rule(key=keys)
    def pop(self, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            got = self.m.pop(key)
        except KeyError:
            assert expected is MISSING
        else:
            assert expected is not MISSING
            assert got == expected
            self.model = remove(self.model, key)

    @rule(key=keys)
    def pop_with_default(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.m.pop(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
        else:
            assert got == expected
            self.model = remove(self.model, key)

    @rule()
    def popitem(self) -> None:
        try:
            key, value = self.m.popitem()
        except KeyError:
            assert self.model == {}
        else:
            assert key in self.model
            assert value == self.model[key]
            self.model = remove(self.model, key)

    # -- conditional writes ------------------------------------------------------------------

    @rule(key=keys, default=values)
    def setdefault(self, key: str, default: Any) -> None:
        expected = lookup(self.model, key)
        got = self.m.setdefault(key, default)
        if expected is not MISSING:
            assert got == expected
            assert isinstance(got, EtcdMapping) == isinstance(expected, dict)
        else:
            self.model = assign(self.model, key, default)
            if isinstance(default, dict):
                assert isinstance(got, EtcdMapping)
                assert got == prune(default)
            else:
                assert got == default

    @rule(data=st.data(), key=keys, new=values)
    def replace(self, data: st.DataObject, key: str, new: Any) -> None:
        current = lookup(self.model, key)
        candidates = [current] if isinstance(current, str) else []
        expected = data.draw(st.one_of(st.sampled_from(candidates), scalars) if candidates
                             else scalars)
        hit = current == expected
        assert self.m.replace(key, expected, new) is hit
        if hit:
            self.model = assign(self.model, key, new)

    # -- reads ----------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.m.get(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
        else:
            assert got == expected
            assert isinstance(got, EtcdMapping) == isinstance(expected, dict)

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.m.to_dict() == self.model
        assert len(self.m) == len(self.model)
        assert sorted(iter(self.m)) == sorted(self.model)
        for key in PROBES:
            assert (key in self.m) == (lookup(self.model, key) is not MISSING), key


# Passing takes well under a minute with the "ci" profile; the generous timeout
# lets hypothesis finish shrinking a failure (it gives up after 5 minutes).
@pytest.mark.timeout(600)
def test_mapping_behaves_like_a_nested_dict(etcd_client: EtcdClient, etcd_prefix: str) -> None:
    counter = itertools.count()

    def fresh_machine() -> MappingMachine:
        return MappingMachine(EtcdMapping(f"{etcd_prefix}/{next(counter)}", client=etcd_client))

    # max_examples comes from the active profile ("ci": 100).
    run_state_machine_as_test(fresh_machine, settings=settings(stateful_step_count=20))
