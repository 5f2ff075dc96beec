"""The pure tree code, without etcd: write plans against a nested-dict model.

``etcdmap._tree`` turns assignments into etcd ops (deletes, then puts) and
key-values back into nested dicts.  Applied to a flat store here (a dict of
etcd keys, in key order, as etcd would apply one transaction), a plan must
give exactly the nested dict that the same assignments give in the model.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nested_model import assign, prune

from etcdmap._tree import add_to_tree, chunk_ops, pairs_of, parse_key, plan_ops, prefix_bytes
from etcdmap._wire.keys import key_bytes, key_name
from etcdmap.ops import ALL_KEYS, Delete, Put
from etcdmap.records import KeyValue

pytestmark = pytest.mark.no_transport  # runs once, not again over gRPC

BASE = b"app/"
segments = st.sampled_from(["a", "b", "c", "é"])
paths = st.lists(segments, min_size=1, max_size=3).map("/".join)
scalars = st.sampled_from(["", "0", "1", "x"])
trees: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.dictionaries(segments, inner, max_size=3), max_leaves=6)
stores = st.dictionaries(paths, scalars, max_size=6)


def encode(value: Any, key: bytes) -> bytes:
    if not isinstance(value, str):
        raise TypeError("str values only")
    return value.encode()


def decode(data: bytes, key: bytes) -> str:
    return data.decode()


def flat(tree: dict[str, Any], prefix: str = "") -> dict[bytes, bytes]:
    """The etcd keys under BASE of a nested dict."""
    out: dict[bytes, bytes] = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flat(value, path + "/"))
        else:
            out[BASE + key_bytes(path)] = value.encode()
    return out


def nested(store: dict[bytes, bytes]) -> dict[str, Any]:
    """The nested dict a mapping over BASE shows for a flat store."""
    out: dict[str, Any] = {}
    kvs = [KeyValue(k, v) for k, v in sorted(store.items()) if k.startswith(BASE)]
    add_to_tree(out, kvs, len(BASE), "/", decode)
    return out


def apply(store: dict[bytes, bytes], ops: list[Put | Delete]) -> dict[bytes, bytes]:
    """``ops`` applied to a copy of ``store``, the way etcd applies one transaction."""
    out = dict(store)
    for op in ops:
        if isinstance(op, Delete):
            end = op.range_end
            for key in [k for k in out if k == op.key or (
                    end is not None and op.key <= k and (end == ALL_KEYS or k < end))]:
                del out[key]
        else:
            out[op.key] = op.value
    return out


def model_of(store: dict[str, str]) -> dict[str, Any]:
    """A valid tree from arbitrary paths: assigned in order, as to a nested dict."""
    tree: dict[str, Any] = {}
    for path, value in store.items():
        tree = assign(tree, path, value)
    return tree


@given(initial=stores, writes=st.lists(st.tuples(paths, trees), min_size=1, max_size=4))
def test_a_plan_applied_gives_what_the_nested_dict_gives(
        initial: dict[str, str], writes: list[tuple[str, Any]]) -> None:
    before = model_of(initial)
    items = [(BASE + key_bytes(path), value) for path, value in writes]
    after = nested(apply(flat(before), plan_ops(BASE, b"/", encode, items)))
    expected = before
    for path, value in writes:
        expected = assign(expected, path, value)
    assert after == prune(expected)


@given(initial=stores, writes=st.lists(st.tuples(paths, trees), min_size=1, max_size=4))
def test_a_plan_is_one_valid_transaction(initial: dict[str, str],
                                         writes: list[tuple[str, Any]]) -> None:
    # etcd refuses a put inside a range the same transaction deletes, and two
    # ops on one key: deletes are sorted, disjoint, and clear of every put.
    ops = plan_ops(BASE, b"/", encode, [(BASE + key_bytes(p), v) for p, v in writes])
    deletes = [op for op in ops if isinstance(op, Delete)]
    puts = [op for op in ops if isinstance(op, Put)]
    assert ops == [*deletes, *puts]
    assert len({p.key for p in puts}) == len(puts)
    spans = [(d.key, d.range_end or d.key + b"\0") for d in deletes]
    assert spans == sorted(spans)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    for put in puts:
        assert not any(s <= put.key and (e == ALL_KEYS or put.key < e) for s, e in spans)


@given(initial=stores, items=st.dictionaries(paths, trees, max_size=4))
def test_a_replacing_plan_leaves_exactly_the_new_tree(
        initial: dict[str, str], items: dict[str, Any]) -> None:
    before = model_of(initial)
    other = {BASE[:-1] + b"0": b"neighbour", b"ap": b"outside"}  # beside the prefix
    ops = plan_ops(BASE, b"/", encode, [(BASE + key_bytes(p), v) for p, v in items.items()],
                   clear=(BASE, BASE[:-1] + b"0"))
    store = apply({**flat(before), **other}, ops)
    expected: dict[str, Any] = {}
    for path, value in items.items():
        expected = assign(expected, path, value)
    assert nested(store) == prune(expected)
    assert {k: v for k, v in store.items() if not k.startswith(BASE)} == other


@given(ops=st.lists(st.builds(Put, st.binary(min_size=1, max_size=5), st.binary(max_size=40)),
                    max_size=40),
       max_ops=st.integers(1, 10), max_bytes=st.integers(1, 200))
def test_chunks_keep_the_order_and_the_limits(ops: list[Put | Delete], max_ops: int,
                                              max_bytes: int) -> None:
    chunks = chunk_ops(ops, max_ops, max_bytes)
    assert [op for chunk in chunks for op in chunk] == ops
    if len(ops) <= max_ops:
        assert chunks == [ops]  # what fits the op count is one transaction, whatever its size
    else:
        assert all(0 < len(chunk) <= max_ops for chunk in chunks)


@given(data=st.binary(max_size=8))
def test_every_key_has_a_name_that_addresses_it_again(data: bytes) -> None:
    assert key_bytes(key_name(data)) == data


@given(key=st.text(max_size=12))
def test_a_key_either_parses_both_ways_or_is_refused_both_ways(key: str) -> None:
    try:
        read = parse_key(key, "/", write=False)
    except KeyError:
        with pytest.raises((TypeError, ValueError)):
            parse_key(key, "/", write=True)
    else:
        assert parse_key(key, "/", write=True) == read
        assert key_name(read) == key


@given(pairs=st.lists(st.tuples(st.sampled_from("abc"), st.integers()), max_size=4),
       kwargs=st.dictionaries(st.sampled_from("bcd"), st.integers(), max_size=3),
       shape=st.sampled_from(["dict", "pairs", "keys", "ordered"]))
def test_pairs_of_reads_arguments_as_dict_update_does(
        pairs: list[tuple[str, int]], kwargs: dict[str, int], shape: str) -> None:
    class KeysOnly:
        def __init__(self, d: dict[str, int]):
            self.d = d

        def keys(self) -> list[str]:
            return list(self.d)

        def __getitem__(self, k: str) -> int:
            return self.d[k]

    other: Any = {"dict": dict(pairs), "pairs": pairs, "keys": KeysOnly(dict(pairs)),
                  "ordered": collections.OrderedDict(pairs)}[shape]
    expected: dict[str, int] = {}
    expected.update(other, **kwargs)
    assert dict(pairs_of(other, kwargs)) == expected


@pytest.mark.parametrize(("prefix", "sep", "error"), [
    (5, "/", TypeError), ("app", 1, TypeError), ("app", "", ValueError),
    ("\ud800", "/", ValueError)])
def test_a_bad_prefix_or_separator_names_itself(prefix: Any, sep: Any,
                                                error: type[Exception]) -> None:
    with pytest.raises(error, match=r"prefix|sep"):
        prefix_bytes(prefix, sep)
