"""``EtcdMapping``: etcd as a nested dict, against a real etcd.

Each test states one behaviour.  ``m`` is a mapping over the test's own
prefix ``p``; ``stored()`` reads what etcd really holds under it, so the
tests can tell what the mapping wrote, not just what it reads back.
"""

from __future__ import annotations

import collections.abc
import json
from typing import Any

import pytest
from helpers import assert_reads, reads_in_txns

from etcdmap import (
    EtcdClient,
    EtcdCodecError,
    EtcdKeyError,
    EtcdMapping,
    EtcdPartialWrite,
    EtcdRequestTooLarge,
)

# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    """A str-codec mapping over the test's own prefix."""
    return EtcdMapping(etcd_prefix, client=etcd_client)


def stored(client: EtcdClient, prefix: str) -> dict[str, bytes]:
    """Every etcd key under ``prefix + "/"`` (relative to it) with its raw value."""
    base = prefix + "/"
    return {kv.key.decode()[len(base):]: kv.value
            for kv in client.range(base, prefix=True).kvs}


def revision(client: EtcdClient) -> int:
    """etcd's current revision: it grows by exactly one per write transaction."""
    return client.status().revision


# -- paths and sub-mappings ----------------------------------------------------------


def test_a_path_key_is_the_etcd_key_under_the_prefix(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["db/host"] = "localhost"
    assert etcd_client.get(etcd_prefix + "/db/host").value == "localhost"
    assert m["db/host"] == "localhost"


def test_the_prefix_ends_in_the_separator(m: EtcdMapping, etcd_prefix: str) -> None:
    assert m.prefix == etcd_prefix + "/"


def test_a_key_written_by_another_client_is_read_by_path(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix + "/svc/a/url", "http://a")
    assert m["svc/a/url"] == "http://a"


def test_a_directory_reads_as_a_sub_mapping(m: EtcdMapping, etcd_prefix: str) -> None:
    m["db/host"] = "localhost"
    db = m["db"]
    assert isinstance(db, EtcdMapping)
    assert db.prefix == etcd_prefix + "/db/"
    assert db["host"] == "localhost"


def test_a_sub_mapping_shares_the_client(m: EtcdMapping) -> None:
    m["db/host"] = "localhost"
    assert m["db"].client is m.client


def test_a_sub_mapping_writes_through(m: EtcdMapping, etcd_client: EtcdClient,
                                      etcd_prefix: str) -> None:
    m["db/host"] = "localhost"
    m["db"]["port"] = "5432"
    assert etcd_client.get(etcd_prefix + "/db/port").value == "5432"
    assert m["db/port"] == "5432"


def test_a_sub_mapping_is_live(m: EtcdMapping) -> None:
    m["db/host"] = "localhost"
    db = m["db"]
    m["db/port"] = "5432"
    assert dict(db) == {"host": "localhost", "port": "5432"}
    del m["db"]
    assert len(db) == 0
    assert db == {}


def test_submapping_reaches_a_path_with_nothing_stored_yet(m: EtcdMapping) -> None:
    new = m.submapping("new/deep")
    assert len(new) == 0
    new["x"] = "1"
    assert m.to_dict() == {"new": {"deep": {"x": "1"}}}


def test_nested_sub_mappings_address_deeper_paths(m: EtcdMapping) -> None:
    m["a/b/c"] = "1"
    assert m["a"]["b"]["c"] == "1"
    assert m["a"]["b/c"] == "1"


# -- iteration sees immediate children ------------------------------------------------


@pytest.fixture
def tree(m: EtcdMapping) -> EtcdMapping:
    m.update({"a": "1", "b/c": "2", "b/d": "3", "e/f/g": "4"})
    return m


def test_iteration_yields_immediate_children_once_in_key_order(tree: EtcdMapping) -> None:
    assert list(tree) == ["a", "b", "e"]


def test_len_counts_immediate_children(tree: EtcdMapping) -> None:
    assert len(tree) == 3


def test_keys_are_immediate_children(tree: EtcdMapping) -> None:
    keys = tree.keys()
    assert list(keys) == ["a", "b", "e"]
    assert "b" in keys
    assert "c" not in keys


def test_a_sub_mapping_iterates_its_own_children(tree: EtcdMapping) -> None:
    assert list(tree["b"]) == ["c", "d"]
    assert list(tree["e"]) == ["f"]


def test_an_empty_mapping_is_falsy(m: EtcdMapping) -> None:
    assert not m
    m["a"] = "1"
    assert m


def test_to_dict_gives_plain_nested_dicts(tree: EtcdMapping) -> None:
    d = tree.to_dict()
    assert d == {"a": "1", "b": {"c": "2", "d": "3"}, "e": {"f": {"g": "4"}}}
    assert type(d["b"]) is dict


def test_items_gives_sub_mappings_for_directories(tree: EtcdMapping) -> None:
    items = dict(tree.items())
    assert items["a"] == "1"
    assert isinstance(items["b"], EtcdMapping)
    assert items["b"] == {"c": "2", "d": "3"}


def test_values_gives_sub_mappings_for_directories(tree: EtcdMapping) -> None:
    values = list(tree.values())
    assert values[0] == "1"
    assert [type(v) for v in values[1:]] == [EtcdMapping, EtcdMapping]
    assert values[2] == {"f": {"g": "4"}}


def test_items_and_values_are_real_views(tree: EtcdMapping) -> None:
    assert isinstance(tree.items(), collections.abc.ItemsView)
    assert isinstance(tree.values(), collections.abc.ValuesView)
    assert isinstance(tree.keys(), collections.abc.KeysView)
    assert len(tree.items()) == 3
    assert ("a", "1") in tree.items()
    assert ("b", {"c": "2", "d": "3"}) in tree.items()
    assert ("a", "2") not in tree.items()
    assert "1" in tree.values()


def test_views_are_live(m: EtcdMapping) -> None:
    items = m.items()
    assert list(items) == []
    m["a"] = "1"
    assert list(items) == [("a", "1")]


# -- assignment replaces what a nested dict could not hold ----------------------------


def test_a_scalar_over_a_subtree_replaces_the_subtree(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["db"] = {"host": "h", "port": "1"}
    m["db"] = "sqlite"
    assert m["db"] == "sqlite"
    assert stored(etcd_client, etcd_prefix) == {"db": b"sqlite"}


def test_a_path_under_a_leaf_replaces_the_leaf(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["db"] = "sqlite"
    m["db/host"] = "h"
    assert m.to_dict() == {"db": {"host": "h"}}
    assert stored(etcd_client, etcd_prefix) == {"db/host": b"h"}


def test_a_mapping_replaces_a_leaf(m: EtcdMapping, etcd_client: EtcdClient,
                                   etcd_prefix: str) -> None:
    m["db"] = "sqlite"
    m["db"] = {"host": "h"}
    assert stored(etcd_client, etcd_prefix) == {"db/host": b"h"}


def test_a_mapping_replaces_the_old_subtree(m: EtcdMapping, etcd_client: EtcdClient,
                                            etcd_prefix: str) -> None:
    m["db"] = {"host": "h", "opts": {"ssl": "on"}}
    m["db"] = {"port": "1"}
    assert m["db"] == {"port": "1"}
    assert stored(etcd_client, etcd_prefix) == {"db/port": b"1"}


def test_a_mapping_is_assigned_in_one_transaction(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    # A leaf at "db" and an old subtree under "db/" both go, and the new subtree
    # arrives, at a single revision.
    etcd_client.put(etcd_prefix + "/db", "sqlite")
    etcd_client.put(etcd_prefix + "/db/old", "x")
    before = revision(etcd_client)
    m["db"] = {"host": "h", "port": "1"}
    assert revision(etcd_client) == before + 1
    assert stored(etcd_client, etcd_prefix) == {"db/host": b"h", "db/port": b"1"}


def test_assigning_a_sub_mapping_copies_its_subtree(m: EtcdMapping) -> None:
    m["orig"] = {"a": "1", "b": {"c": "2"}}
    m["copy"] = m["orig"]
    m["orig/a"] = "changed"
    assert m["copy"] == {"a": "1", "b": {"c": "2"}}


def test_assigning_an_empty_dict_leaves_nothing(m: EtcdMapping, etcd_client: EtcdClient,
                                               etcd_prefix: str) -> None:
    m["db"] = {"host": "h"}
    m["leaf"] = "x"
    m["db"] = {}
    m["leaf"] = {}
    m["new"] = {}
    assert "db" not in m and "leaf" not in m and "new" not in m
    with pytest.raises(KeyError):
        m["new"]
    assert stored(etcd_client, etcd_prefix) == {}


def test_an_empty_dict_nested_in_a_value_leaves_nothing(m: EtcdMapping) -> None:
    m["cfg"] = {"a": "1", "empty": {}, "deep": {"er": {}}}
    assert m.to_dict() == {"cfg": {"a": "1"}}


# -- key rules -------------------------------------------------------------------------

BAD_KEYS = [1, None, b"a", ("a",), "", "a//b", "/a", "a/", "/"]
MALFORMED = ["", "a//b", "/a", "a/", "/"]
NOT_STR = [1, None, b"a", ("a",)]


@pytest.fixture
def seeded(m: EtcdMapping) -> EtcdMapping:
    m.update({"a": "1", "a2/b": "2"})
    return m


SEEDED_RAW = {"a": b"1", "a2/b": b"2"}


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_reading_a_bad_key_raises_key_error(seeded: EtcdMapping, key: Any) -> None:
    with pytest.raises(KeyError):
        seeded[key]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_get_of_a_bad_key_returns_the_default(seeded: EtcdMapping, key: Any) -> None:
    assert seeded.get(key) is None
    assert seeded.get(key, "dflt") == "dflt"


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_a_bad_key_is_not_in_the_mapping(seeded: EtcdMapping, key: Any) -> None:
    assert key not in seeded


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_deleting_a_bad_key_raises_key_error_and_deletes_nothing(
        seeded: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str, key: Any) -> None:
    with pytest.raises(KeyError):
        del seeded[key]
    with pytest.raises(KeyError):
        seeded.pop(key)
    assert seeded.pop(key, "dflt") == "dflt"
    assert stored(etcd_client, etcd_prefix) == SEEDED_RAW


WRITES = {
    "setitem": lambda m, k: m.__setitem__(k, "v"),
    "setitem-mapping": lambda m, k: m.__setitem__(k, {"x": "v"}),
    "key-inside-mapping-value": lambda m, k: m.__setitem__("a2", {"ok": "v", k: "v"}),
    "update": lambda m, k: m.update([("ok", "v"), (k, "v")]),
    "update-dict": lambda m, k: m.update({"ok": "v", k: "v"}),
    "setdefault": lambda m, k: m.setdefault(k, "v"),
    "replace": lambda m, k: m.replace(k, "1", "v"),
    "submapping": lambda m, k: m.submapping(k),
}


@pytest.mark.parametrize("write", list(WRITES.values()), ids=list(WRITES))
@pytest.mark.parametrize("key", NOT_STR, ids=repr)
def test_writing_a_non_str_key_raises_type_error_and_writes_nothing(
        seeded: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str,
        write: Any, key: Any) -> None:
    with pytest.raises(TypeError):
        write(seeded, key)
    assert stored(etcd_client, etcd_prefix) == SEEDED_RAW


@pytest.mark.parametrize("write", list(WRITES.values()), ids=list(WRITES))
@pytest.mark.parametrize("key", MALFORMED, ids=repr)
def test_writing_a_malformed_key_raises_value_error_and_writes_nothing(
        seeded: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str,
        write: Any, key: Any) -> None:
    with pytest.raises(ValueError):
        write(seeded, key)
    assert stored(etcd_client, etcd_prefix) == SEEDED_RAW


def test_missing_keys_raise_key_error(m: EtcdMapping) -> None:
    with pytest.raises(KeyError) as info:
        m["nope"]
    assert isinstance(info.value, EtcdKeyError)
    assert info.value.args == ("nope",)
    with pytest.raises(KeyError):
        del m["nope"]
    with pytest.raises(KeyError):
        m.pop("nope")
    assert m.get("nope") is None
    assert "nope" not in m


# -- codecs ----------------------------------------------------------------------------


def test_str_codec_rejects_non_str_values_and_writes_nothing(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["a"] = "1"
    for value in (1, b"x", None, ["x"]):
        with pytest.raises(TypeError):
            m["a"] = value
        with pytest.raises(TypeError):
            m["t"] = {"ok": "1", "bad": value}
        with pytest.raises(TypeError):
            m.update({"ok": "1", "bad": value})
    assert stored(etcd_client, etcd_prefix) == {"a": b"1"}


def test_str_codec_round_trips_unicode_and_empty_text(m: EtcdMapping, etcd_client: EtcdClient,
                                                      etcd_prefix: str) -> None:
    m["greeting"] = "grüß dich ✓"
    m["empty"] = ""
    assert m["greeting"] == "grüß dich ✓"
    assert m["empty"] == ""
    assert stored(etcd_client, etcd_prefix)["greeting"] == "grüß dich ✓".encode()


def test_non_utf8_read_with_the_str_codec_raises_codec_error(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix + "/blob", b"\xff\xfe")
    with pytest.raises(EtcdCodecError) as info:
        m["blob"]
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_bytes_codec_round_trips_bytes(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="bytes")
    m["blob"] = b"\xff\x00\xfe"
    m["view"] = memoryview(b"mv")
    m["tree"] = {"raw": bytearray(b"\x01")}
    assert m["blob"] == b"\xff\x00\xfe"
    assert m.to_dict() == {"blob": b"\xff\x00\xfe", "tree": {"raw": b"\x01"}, "view": b"mv"}
    with pytest.raises(TypeError):
        m["text"] = "not bytes"
    assert "text" not in m


@pytest.mark.parametrize("value", [0, -7, 2**70, 1.5, True, None, "s", [1, "two", None],
                                   [], [[1], {"k": "v"}]], ids=repr)
def test_json_codec_round_trips_json_values(etcd_prefix: str, etcd_client: EtcdClient,
                                            value: Any) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    m["v"] = value
    assert m["v"] == value
    assert type(m["v"]) is type(value)
    assert json.loads(stored(etcd_client, etcd_prefix)["v"]) == value


def test_invalid_json_read_with_the_json_codec_raises_codec_error(
        etcd_prefix: str, etcd_client: EtcdClient) -> None:
    etcd_client.put(etcd_prefix + "/v", "{not json")
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    with pytest.raises(EtcdCodecError):
        m["v"]


def test_json_codec_stores_a_dict_as_a_subtree(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    m["cfg"] = {"port": 5432, "debug": False, "hosts": ["a", "b"]}
    assert isinstance(m["cfg"], EtcdMapping)
    assert m["cfg"]["port"] == 5432
    assert stored(etcd_client, etcd_prefix) == {
        "cfg/debug": b"false", "cfg/hosts": b'["a","b"]', "cfg/port": b"5432"}


def test_json_codec_rejects_unserialisable_values_with_type_error(
        etcd_prefix: str, etcd_client: EtcdClient) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    for value in (object(), float("nan"), {1, 2}):
        with pytest.raises(TypeError):
            m["v"] = value
    assert stored(etcd_client, etcd_prefix) == {}


class IntCodec:
    """A user codec: ints as hexadecimal text."""

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, int):
            raise TypeError("ints only")
        return format(value, "x").encode()

    def decode(self, data: bytes) -> int:
        return int(data, 16)


def test_a_custom_codec_encodes_and_decodes(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec=IntCodec())
    m["n"] = 255
    m["sub"] = {"m": 16}
    assert stored(etcd_client, etcd_prefix) == {"n": b"ff", "sub/m": b"10"}
    assert m["n"] == 255
    assert m.to_dict() == {"n": 255, "sub": {"m": 16}}
    assert m.pop("sub") == {"m": 16}
    assert m.replace("n", 255, 256)
    assert m["n"] == 256


def test_a_sub_mapping_keeps_the_codec(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    m = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    m["cfg/port"] = 1
    m["cfg"]["list"] = [1, 2]
    assert m["cfg/list"] == [1, 2]


# -- pop, popitem, setdefault, replace -------------------------------------------------


def test_pop_returns_a_leaf_and_removes_it(m: EtcdMapping) -> None:
    m.update({"a": "1", "b": "2"})
    assert m.pop("a") == "1"
    assert m.to_dict() == {"b": "2"}


def test_pop_returns_a_subtree_as_a_plain_dict_and_removes_it(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["db"] = {"host": "h", "opts": {"ssl": "on"}}
    m["keep"] = "1"
    popped = m.pop("db")
    assert popped == {"host": "h", "opts": {"ssl": "on"}}
    assert type(popped) is dict and type(popped["opts"]) is dict
    assert stored(etcd_client, etcd_prefix) == {"keep": b"1"}


def test_pop_with_a_default(m: EtcdMapping) -> None:
    assert m.pop("nope", "dflt") == "dflt"
    assert m.pop("nope", None) is None
    m["a"] = "1"
    assert m.pop("a", "dflt") == "1"


def test_popitem_removes_and_returns_a_pair(m: EtcdMapping) -> None:
    m.update({"a": "1", "b": {"c": "2"}})
    first = m.popitem()
    second = m.popitem()
    assert sorted([first, second], key=str) == sorted([("a", "1"), ("b", {"c": "2"})], key=str)
    assert len(m) == 0


def test_popitem_on_empty_raises_key_error(m: EtcdMapping) -> None:
    with pytest.raises(KeyError):
        m.popitem()


def test_setdefault_stores_and_returns_the_default_when_absent(m: EtcdMapping) -> None:
    assert m.setdefault("a", "1") == "1"
    assert m["a"] == "1"


def test_setdefault_returns_the_existing_value_when_present(m: EtcdMapping) -> None:
    m["a"] = "1"
    assert m.setdefault("a", "2") == "1"
    assert m["a"] == "1"


def test_setdefault_returns_an_existing_subtree_as_a_sub_mapping(m: EtcdMapping) -> None:
    m["db/host"] = "h"
    db = m.setdefault("db", "ignored")
    assert isinstance(db, EtcdMapping)
    assert db == {"host": "h"}
    assert m.to_dict() == {"db": {"host": "h"}}


def test_setdefault_with_a_dict_returns_a_live_sub_mapping(m: EtcdMapping) -> None:
    db = m.setdefault("db", {"host": "h"})
    assert isinstance(db, EtcdMapping)
    assert db == {"host": "h"}
    db["port"] = "1"
    assert m.to_dict() == {"db": {"host": "h", "port": "1"}}


def test_setdefault_with_a_dict_too_big_for_one_txn_refuses_before_writing(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    # A conditional write cannot be split into several transactions: one that
    # does not fit in one raises EtcdRequestTooLarge before writing anything.
    m["other"] = "kept"
    default = {f"k{i:03}": "v" for i in range(2 * etcd_client.max_txn_ops)}
    with pytest.raises(EtcdRequestTooLarge) as info:
        m.setdefault("big", default)
    assert type(info.value) is EtcdRequestTooLarge, repr(info.value)
    assert stored(etcd_client, etcd_prefix) == {"other": b"kept"}


def test_replace_swaps_only_the_expected_value(m: EtcdMapping) -> None:
    m["a"] = "1"
    assert m.replace("a", "1", "2") is True
    assert m["a"] == "2"
    assert m.replace("a", "1", "3") is False
    assert m["a"] == "2"


def test_replace_of_an_absent_key_is_false_and_writes_nothing(m: EtcdMapping) -> None:
    assert m.replace("a", "", "x") is False
    assert "a" not in m


def test_replace_of_a_directory_is_false(m: EtcdMapping) -> None:
    m["db/host"] = "h"
    assert m.replace("db", "h", "x") is False
    assert m.to_dict() == {"db": {"host": "h"}}


def test_replace_with_a_dict_stores_a_subtree(m: EtcdMapping) -> None:
    m["db"] = "sqlite"
    assert m.replace("db", "sqlite", {"host": "h"})
    assert m.to_dict() == {"db": {"host": "h"}}


# -- update and clear ------------------------------------------------------------------


def test_update_with_a_dict_of_path_keys(m: EtcdMapping) -> None:
    m.update({"a": "1", "db/host": "h", "db/port": "2"})
    assert m.to_dict() == {"a": "1", "db": {"host": "h", "port": "2"}}


def test_update_applies_assignments_in_order(m: EtcdMapping) -> None:
    m.update([("a", "1"), ("a/b", "2"), ("c/d", "3"), ("c", "4")])
    assert m.to_dict() == {"a": {"b": "2"}, "c": "4"}


def test_update_with_pairs(m: EtcdMapping) -> None:
    m.update([("a", "1"), ("b/c", "2")])
    assert m.to_dict() == {"a": "1", "b": {"c": "2"}}


def test_update_with_kwargs(m: EtcdMapping) -> None:
    m.update({"a": "1"}, b="2", c="3")
    m.update(a="0")
    assert m.to_dict() == {"a": "0", "b": "2", "c": "3"}


def test_update_with_another_etcd_mapping(m: EtcdMapping, etcd_client: EtcdClient,
                                          etcd_prefix: str) -> None:
    other = EtcdMapping(etcd_prefix + "-other", client=etcd_client)
    other.update({"a": "1", "db/host": "h", "db/opts/ssl": "on"})
    m["db/old"] = "x"
    m.update(other)
    assert m.to_dict() == {"a": "1", "db": {"host": "h", "opts": {"ssl": "on"}}}


def test_update_with_nested_dicts_replaces_subtrees(m: EtcdMapping) -> None:
    m.update({"db/old": "x", "keep": "k"})
    m.update({"db": {"host": "h"}})
    assert m.to_dict() == {"db": {"host": "h"}, "keep": "k"}


def test_update_larger_than_one_transaction(m: EtcdMapping, etcd_client: EtcdClient) -> None:
    assert etcd_client.max_txn_ops == 128
    data = {f"k{i:03}": str(i) for i in range(300)}
    m.update(data)
    assert m.to_dict() == data
    assert len(m) == 300


def test_a_mapping_value_larger_than_one_transaction(m: EtcdMapping) -> None:
    m["big"] = "old leaf"
    data = {f"k{i:03}": {"v": str(i)} for i in range(300)}
    m["big"] = data
    assert m["big"] == data
    assert m.to_dict() == {"big": data}


# etcd takes requests up to 1.5 MiB (--max-request-bytes), so a 600 kB value
# fits in one transaction with room to spare.
LARGE = "x" * 600_000


def test_a_large_value_replaces_a_subtree_in_one_transaction(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["k"] = {"old": "1"}
    before = revision(etcd_client)
    m["k"] = LARGE
    assert revision(etcd_client) == before + 1
    assert stored(etcd_client, etcd_prefix) == {"k": LARGE.encode()}


def test_setdefault_accepts_a_large_value(m: EtcdMapping) -> None:
    assert m.setdefault("k", LARGE) == LARGE
    assert m["k"] == LARGE


def test_replace_accepts_a_large_value(m: EtcdMapping) -> None:
    m["k"] = "1"
    assert m.replace("k", "1", LARGE) is True
    assert m["k"] == LARGE


def test_a_value_too_large_for_etcd_is_refused_and_the_old_value_kept(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    m["k"] = {"old": "1"}
    with pytest.raises(EtcdRequestTooLarge):
        m["k"] = "x" * 1_600_000
    assert stored(etcd_client, etcd_prefix) == {"k/old": b"1"}


def test_update_with_nothing_is_a_no_op(m: EtcdMapping) -> None:
    m.update({})
    m.update([])
    m.update()
    assert m.to_dict() == {}


def test_a_failed_later_chunk_reports_exactly_which_keys_were_written(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    # Two ops per transaction, and a last value above etcd's 1.5 MiB request
    # limit, so the first transactions commit and the last one is refused.
    etcd_client.max_txn_ops = 2
    too_big = "x" * (1_600_000)
    with pytest.raises(EtcdPartialWrite) as info:
        m.update({"a": "1", "b": "2", "c": "3", "z": too_big})
    p = etcd_prefix + "/"
    assert sorted(info.value.written) == [p + "a", p + "b", p + "c"]
    assert info.value.unwritten == [p + "z"]
    assert stored(etcd_client, etcd_prefix) == {"a": b"1", "b": b"2", "c": b"3"}


def test_clear_removes_everything_under_the_prefix(m: EtcdMapping, etcd_client: EtcdClient,
                                                  etcd_prefix: str) -> None:
    m.update({"a": "1", "b/c/d": "2"})
    m.clear()
    assert len(m) == 0
    assert stored(etcd_client, etcd_prefix) == {}


def test_clear_leaves_keys_beside_the_prefix(m: EtcdMapping, etcd_client: EtcdClient,
                                            etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix, "the prefix itself")
    etcd_client.put(etcd_prefix + "x", "a sibling")
    etcd_client.put(etcd_prefix + "0", "just past the prefix")
    m["a"] = "1"
    m.clear()
    assert etcd_client.get(etcd_prefix).value == "the prefix itself"
    assert etcd_client.get(etcd_prefix + "x").value == "a sibling"
    assert etcd_client.get(etcd_prefix + "0").value == "just past the prefix"


def test_clear_on_a_sub_mapping_clears_only_that_subtree(m: EtcdMapping) -> None:
    m.update({"db/host": "h", "dbx": "1", "web/port": "80"})
    m["db"].clear()
    assert m.to_dict() == {"dbx": "1", "web": {"port": "80"}}


# -- getitems: many keys in few round trips ----------------------------------------------


# Each key is two ranges: the leaf, and a probe of the subtree under it.


def test_getitems_returns_the_present_keys_in_few_requests(
        m: EtcdMapping, etcd_client: EtcdClient, http_log: list[str]) -> None:
    m.update({"a": "1", "db": {"host": "h", "opts": {"ssl": "on"}}, "x/y/z": "deep"})
    wellformed = ["a", "db", "db/host", "db/opts", "x/y", "missing", "a/b", "db/nope"]
    in_txns = reads_in_txns(etcd_client)
    http_log.clear()
    got = m.getitems([*wellformed, "", "a//b", "/a", "a/"])
    assert_reads(http_log, etcd_client, in_txns=in_txns, keys=len(wellformed), per_key=2)
    assert sorted(got) == ["a", "db", "db/host", "db/opts", "x/y"]
    assert (got["a"], got["db/host"]) == ("1", "h")
    for name, tree in [("db", {"host": "h", "opts": {"ssl": "on"}}),
                       ("db/opts", {"ssl": "on"}), ("x/y", {"z": "deep"})]:
        assert isinstance(got[name], EtcdMapping), name
        assert got[name] == tree, name
    got["db/opts"]["ssl"] = "off"  # a live sub-mapping, as m["db/opts"] is
    assert m["db/opts/ssl"] == "off"


@pytest.mark.parametrize("one", ["ab", b"ab"])
def test_getitems_of_one_str_is_a_type_error_not_a_read_per_letter(
        m: EtcdMapping, http_log: list[str], one: str) -> None:
    m["a"] = "1"
    http_log.clear()
    with pytest.raises(TypeError, match="iterable of keys"):
        m.getitems(one)
    assert http_log == []


def test_getitems_of_nothing_reads_nothing(m: EtcdMapping, http_log: list[str]) -> None:
    assert m.getitems([]) == {}
    assert m.getitems(["", "a//b"]) == {}
    assert [path for path in http_log if path.startswith("/v3/")] == []


def test_getitems_of_more_keys_than_one_transaction_holds(
        m: EtcdMapping, etcd_client: EtcdClient, http_log: list[str]) -> None:
    present = {f"k{i:03}": str(i) for i in range(150)}
    m.update(present)
    wanted = [*present, *(f"gone{i}" for i in range(10))]
    assert 2 * len(wanted) > etcd_client.max_txn_ops
    in_txns = reads_in_txns(etcd_client)
    http_log.clear()
    assert m.getitems(wanted) == present
    assert_reads(http_log, etcd_client, in_txns=in_txns, keys=len(wanted), per_key=2)


# -- keys written by other tools --------------------------------------------------------


@pytest.fixture
def leaf_and_subtree(etcd_client: EtcdClient, etcd_prefix: str, m: EtcdMapping) -> EtcdMapping:
    etcd_client.put(etcd_prefix + "/x", "leaf")
    etcd_client.put(etcd_prefix + "/x/y", "sub")
    etcd_client.put(etcd_prefix + "/x.z", "beside")
    return m


def test_the_leaf_wins_over_a_subtree_of_the_same_name(leaf_and_subtree: EtcdMapping) -> None:
    m = leaf_and_subtree
    assert m["x"] == "leaf"
    assert list(m) == ["x", "x.z"]
    assert len(m) == 2
    assert m.to_dict() == {"x": "leaf", "x.z": "beside"}
    assert dict(m.items()) == {"x": "leaf", "x.z": "beside"}


def test_submapping_still_reaches_the_subtree_under_a_leaf(
        leaf_and_subtree: EtcdMapping) -> None:
    assert leaf_and_subtree.submapping("x")["y"] == "sub"
    assert leaf_and_subtree.submapping("x").to_dict() == {"y": "sub"}


def test_del_removes_both_the_leaf_and_the_subtree(
        leaf_and_subtree: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    del leaf_and_subtree["x"]
    assert stored(etcd_client, etcd_prefix) == {"x.z": b"beside"}


def test_pop_returns_the_leaf_and_removes_both(
        leaf_and_subtree: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    assert leaf_and_subtree.pop("x") == "leaf"
    assert stored(etcd_client, etcd_prefix) == {"x.z": b"beside"}


def test_pop_of_a_subtree_holding_a_leaf_and_prefix_returns_what_to_dict_showed(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix + "/a/x", "leaf")
    etcd_client.put(etcd_prefix + "/a/x/y", "sub")
    shown = m["a"].to_dict()
    assert shown == {"x": "leaf"}
    assert m.pop("a") == shown
    assert stored(etcd_client, etcd_prefix) == {}


def test_pop_of_a_subtree_skips_keys_with_empty_segments_like_to_dict(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix + "/a/b", "1")
    etcd_client.put(etcd_prefix + "/a//c", "2")
    shown = m["a"].to_dict()
    assert shown == {"b": "1"}
    assert m.pop("a") == shown


def test_keys_with_empty_segments_are_skipped(m: EtcdMapping, etcd_client: EtcdClient,
                                              etcd_prefix: str) -> None:
    etcd_client.put(etcd_prefix + "//a", "1")
    etcd_client.put(etcd_prefix + "/b//c", "2")
    etcd_client.put(etcd_prefix + "/d/", "3")
    etcd_client.put(etcd_prefix + "/ok", "4")
    assert list(m) == ["ok"]
    assert len(m) == 1
    assert m.to_dict() == {"ok": "4"}


@pytest.mark.parametrize("raw_key", ["b//c", "b/x//c", "b/", "b/x/"])
def test_a_name_holding_only_unaddressable_keys_is_absent(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str, raw_key: str) -> None:
    # Iteration skips "b" (its only key has an empty segment), so membership
    # and lookup must agree with it: k in m exactly when k in list(m).
    etcd_client.put(f"{etcd_prefix}/{raw_key}", "2")
    assert list(m) == []
    assert m.to_dict() == {}
    assert "b" not in m
    assert m.get("b") is None


@pytest.mark.parametrize("raw_key", ["b//c", "b/x//c", "b/", "b/x/"])
def test_setdefault_stores_at_a_name_holding_only_unaddressable_keys(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str, raw_key: str) -> None:
    etcd_client.put(f"{etcd_prefix}/{raw_key}", "2")
    assert m.setdefault("b", "v") == "v"
    assert m["b"] == "v"


# -- equality and repr -------------------------------------------------------------------


def test_equal_to_a_nested_dict_with_the_same_content(tree: EtcdMapping) -> None:
    expected = {"a": "1", "b": {"c": "2", "d": "3"}, "e": {"f": {"g": "4"}}}
    assert tree == expected
    assert expected == tree
    assert tree != {**expected, "a": "2"}
    assert tree != {"a": "1", "b": {"c": "2"}, "e": {"f": {"g": "4"}}}
    assert tree != {**expected, "extra": "x"}


def test_equal_to_another_mapping_with_the_same_content(
        m: EtcdMapping, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    other = EtcdMapping(etcd_prefix + "-other", client=etcd_client)
    m.update({"a": "1", "b/c": "2"})
    other.update({"b/c": "2", "a": "1"})
    assert m == other
    other["b/c"] = "3"
    assert m != other


def test_not_equal_to_non_mappings(m: EtcdMapping) -> None:
    assert m != []
    assert m != "x"
    assert (m == 1) is False


def test_unhashable_like_a_dict(m: EtcdMapping) -> None:
    with pytest.raises(TypeError):
        hash(m)


def test_repr_names_the_prefix_without_any_request(
        m: EtcdMapping, etcd_prefix: str, http_log: list[str]) -> None:
    text = repr(m)
    sub = repr(m.submapping("db"))
    assert etcd_prefix + "/" in text
    assert etcd_prefix + "/db/" in sub
    assert http_log == []
