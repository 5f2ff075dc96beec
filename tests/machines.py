"""The hypothesis state machine every mapping flavour runs against a nested ``dict``.

:class:`MappingMachine` drives one mapping (an :class:`EtcdMapping`, or any
flavour of it) with writes, removals, conditional writes and reads, and checks
each answer and, after every step, the whole mapping against the model
(``nested_model``): path keys address nested dicts, a scalar replaces a
subtree, a path through a scalar replaces it by a dict, and empty dicts do not
exist.  Keys come from three segments at depth 1-3, so leaves and subtrees
collide often.

Flavours extend it: ``test_cache_state.CacheMachine`` adds a second writer
and the waits for it, and checks read-your-writes in :meth:`wrote`.

Every draw depends only on earlier draws and the model, never on timing or on
what etcd happened to answer, so hypothesis can replay any example exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from nested_model import MISSING, assign, lookup, prune, remove

from etcdmap import EtcdMapping
from etcdmap.cache import CachedMapping

SEGMENTS = ["a", "b", "c"]
segments = st.sampled_from(SEGMENTS)
keys = st.lists(segments, min_size=1, max_size=3).map("/".join)
scalars = st.sampled_from(["", "0", "1", "é"])
trees = st.dictionaries(
    segments, st.one_of(scalars, st.dictionaries(segments, scalars, max_size=2)), max_size=3)
values = st.one_of(scalars, trees)
NO_DEFAULT = "<default>"


def first_name(model: dict[str, Any]) -> str:
    """The name etcd lists first: the smallest in byte order."""
    return min(model, key=lambda name: name.encode("utf-8", "surrogateescape"))


class MappingMachine(RuleBasedStateMachine):
    """``self.m`` against ``self.model``; sub-directories read back as ``type(m)``."""

    probes: ClassVar[list[str]] = ["a", "b", "c", "a/b", "b/c", "c/a/b", "a/a/a"]

    def __init__(self, m: EtcdMapping | CachedMapping):
        super().__init__()
        self.m = m
        self.node_type = type(m)
        self.model: dict[str, Any] = {}

    def teardown(self) -> None:
        self.m.clear()

    # -- hooks for flavours ----------------------------------------------------------

    def wrote(self) -> None:
        """Called after each call that may write through ``self.m``, before any wait."""

    def wrote_through_a_view(self) -> None:
        """Called after a write through a view derived from ``self.m`` (``submapping``)."""

    # -- what a writer does to etcd and to the model (the cache machine's second writer too)

    def update_through(self, writer: Any, pairs: list[tuple[str, Any]]) -> None:
        batch = dict(pairs)
        writer.update(batch)
        for key, value in batch.items():
            self.model = assign(self.model, key, value)

    def delete_through(self, writer: Any, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            del writer[key]
        except KeyError:
            assert expected is MISSING, f"del {key!r} raised KeyError but the model has it"
        else:
            assert expected is not MISSING, f"del {key!r} succeeded but the model lacks it"
            self.model = remove(self.model, key)

    # -- writes -------------------------------------------------------------------------

    @rule(key=keys, value=scalars)
    def set_scalar(self, key: str, value: str) -> None:
        self.m[key] = value
        self.model = assign(self.model, key, value)
        self.wrote()

    @rule(key=keys, tree=trees)
    def set_tree(self, key: str, tree: dict[str, Any]) -> None:
        self.m[key] = tree
        self.model = assign(self.model, key, tree)
        self.wrote()

    @precondition(lambda self: any(isinstance(v, dict) for v in self.model.values()))
    @rule(data=st.data(), rest=keys, value=values)
    def set_through_a_node(self, data: st.DataObject, rest: str, value: Any) -> None:
        head = data.draw(st.sampled_from(sorted(
            k for k, v in self.model.items() if isinstance(v, dict))))
        node = self.m[head]
        assert isinstance(node, self.node_type), type(node)
        assert node.to_dict() == self.model[head]
        node[rest] = value
        self.model = assign(self.model, f"{head}/{rest}", value)
        self.wrote()

    @rule(head=keys, rest=keys, value=scalars)
    def set_through_submapping(self, head: str, rest: str, value: str) -> None:
        self.m.submapping(head)[rest] = value
        self.model = assign(self.model, f"{head}/{rest}", value)
        self.wrote_through_a_view()

    @rule(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
    def update(self, pairs: list[tuple[str, Any]]) -> None:
        self.update_through(self.m, pairs)
        self.wrote()

    @rule()
    def clear(self) -> None:
        self.m.clear()
        self.model = {}
        assert len(self.m) == 0
        self.wrote()

    # -- removals ----------------------------------------------------------------------

    @rule(key=keys)
    def delitem(self, key: str) -> None:
        self.delete_through(self.m, key)
        self.wrote()
        assert key not in self.m

    @rule(key=keys)
    def pop(self, key: str) -> None:
        expected = lookup(self.model, key)
        try:
            got = self.m.pop(key)
        except KeyError:
            assert expected is MISSING, f"pop({key!r}) raised KeyError but the model has it"
        else:
            assert expected is not MISSING, f"pop({key!r}) succeeded but the model lacks it"
            assert got == expected
            self.model = remove(self.model, key)
        self.wrote()

    @rule(key=keys)
    def pop_with_default(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.m.pop(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
        else:
            assert got == expected
            self.model = remove(self.model, key)
        self.wrote()

    @rule()
    def popitem(self) -> None:
        # Both flavours take the first name in key order, so the model (and every
        # later draw) is the same on each replay, whatever order events arrived in.
        try:
            key, value = self.m.popitem()
        except KeyError:
            assert self.model == {}
        else:
            assert self.model, f"popitem() returned {key!r} but the model is empty"
            assert key == first_name(self.model), f"popitem() took {key!r} of {sorted(self.model)}"
            assert value == self.model[key]
            self.model = remove(self.model, key)
        self.wrote()

    # -- conditional writes ------------------------------------------------------------------

    @rule(key=keys, default=values)
    def setdefault(self, key: str, default: Any) -> None:
        expected = lookup(self.model, key)
        got = self.m.setdefault(key, default)
        # A subtree comes back as a live mapping: a node of this flavour, or a view.
        live = (EtcdMapping, self.node_type)
        if expected is not MISSING:
            assert got == expected
            assert isinstance(got, live) == isinstance(expected, dict), type(got)
        else:
            self.model = assign(self.model, key, default)
            if isinstance(default, dict):
                assert isinstance(got, live), type(got)
                assert got == prune(default)
            else:
                assert got == default
        self.wrote()

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
        self.wrote()

    # -- reads ----------------------------------------------------------------------

    @rule(key=keys)
    def get(self, key: str) -> None:
        expected = lookup(self.model, key)
        got = self.m.get(key, NO_DEFAULT)
        if expected is MISSING:
            assert got == NO_DEFAULT
            assert key not in self.m
        else:
            assert got == expected
            assert isinstance(got, self.node_type) == isinstance(expected, dict)
            assert key in self.m

    @invariant()
    def agrees_with_the_model(self) -> None:
        m, model = self.m, self.model
        assert m.to_dict() == model
        assert m == model
        assert len(m) == len(model)
        assert sorted(m) == sorted(model)
        for key in self.probes:
            assert (key in m) == (lookup(model, key) is not MISSING), key
