"""The mapping contract: code written for dicts works unchanged on every flavour.

zict's ``check_mapping`` habit: one set of tests, and every kind of mapping
etcdmap hands out runs all of it -- a plain :class:`EtcdMapping`, a
``with_ttl`` view, a ``lease()`` view, a sub-mapping, and a cached view.
Every test is ordinary dict-idiom code; only the object handed to it is an
etcdmap mapping over a real etcd.
"""

from __future__ import annotations

import collections
import collections.abc
import copy
import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest

from etcdmap import CachedMapping, EtcdClient, EtcdMapping

CONFIG = {
    "name": "app",
    "debug": "false",
    "db": {"host": "localhost", "port": "5432"},
}

Flavour = Callable[[EtcdMapping], Iterator[MutableMapping[str, Any]]]


def plain(m: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    yield m


def with_ttl(m: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    yield m.with_ttl(600)


def leased(m: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    with m.lease(600) as view:
        yield view


def sub_mapping(m: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    parent = EtcdMapping(m.prefix.rpartition("/")[0].rpartition("/")[0], client=m.client,
                         codec=m._codec)
    yield parent.submapping(m.prefix.rstrip("/").rpartition("/")[2])


def cached(m: MutableMapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    with m.cached() as cache:
        yield cache


FLAVOURS: dict[str, Flavour] = {"plain": plain, "with_ttl": with_ttl, "lease": leased,
                                "submapping": sub_mapping, "cached": cached}
MAPPINGS = (EtcdMapping, CachedMapping)  # what a sub-directory comes back as


@pytest.fixture(params=list(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return FLAVOURS[request.param]


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient, flavour: Flavour
      ) -> Iterator[MutableMapping[str, Any]]:
    """The test's prefix, holding CONFIG, as a mapping of this flavour."""
    base = EtcdMapping(etcd_prefix, client=etcd_client)
    base.update(CONFIG)
    yield from flavour(base)


def test_is_a_mutable_mapping(m: MutableMapping[str, Any]) -> None:
    assert isinstance(m, collections.abc.MutableMapping)
    assert isinstance(m, collections.abc.Mapping)
    assert isinstance(m["db"], collections.abc.MutableMapping)


def test_dict_of_it(m: MutableMapping[str, Any]) -> None:
    d = dict(m)
    assert sorted(d) == ["db", "debug", "name"]
    assert d["name"] == "app"
    assert dict(d["db"]) == {"host": "localhost", "port": "5432"}


def test_unpacked_into_a_dict_display(m: MutableMapping[str, Any]) -> None:
    merged = {**m, "name": "override"}
    assert merged["name"] == "override"
    assert merged["debug"] == "false"
    assert merged["db"] == CONFIG["db"]


def test_compares_equal_to_a_dict(m: MutableMapping[str, Any]) -> None:
    assert m == CONFIG
    # The dict on the left: dict.__eq__ declines, Python asks the mapping.
    assert CONFIG == m  # noqa: SIM300
    assert m != {**CONFIG, "name": "other"}


def test_format_map_reaches_nested_keys(m: MutableMapping[str, Any]) -> None:
    assert "{db[host]}:{db[port]}".format_map(m) == "localhost:5432"
    assert "{name}".format(**m) == "app"


def test_chain_map_falls_through_to_defaults(m: MutableMapping[str, Any]) -> None:
    defaults = {"name": "default", "timeout": "30", "db": {"host": "x"}}
    settings = collections.ChainMap(m, defaults)
    assert settings["name"] == "app"
    assert settings["timeout"] == "30"
    assert settings.get("missing", "-") == "-"
    assert "timeout" in settings
    assert settings["db"]["host"] == "localhost"
    assert sorted(settings) == ["db", "debug", "name", "timeout"]


def test_json_dumps_of_to_dict(m: Any) -> None:
    text = json.dumps(m.to_dict(), sort_keys=True)
    assert json.loads(text) == CONFIG


def test_passed_as_keyword_arguments(m: MutableMapping[str, Any]) -> None:
    def connect(name: str, debug: str, db: Any, **extra: Any) -> str:
        return f"{name} -> {db['host']}:{db['port']} debug={debug} {extra}"

    assert connect(**m) == "app -> localhost:5432 debug=false {}"


def test_or_gives_a_new_dict(m: MutableMapping[str, Any]) -> None:
    merged = m | {"name": "other", "extra": "1"}
    assert type(merged) is dict
    assert merged == {**CONFIG, "name": "other", "extra": "1"}
    assert m["name"] == "app"


def test_dict_or_mapping_gives_a_new_dict(m: MutableMapping[str, Any]) -> None:
    # dict | mapping: the mapping's values win, as in dict | dict.
    merged = {"name": "default", "timeout": "30"} | m
    assert merged == {**CONFIG, "timeout": "30"}


def test_in_place_or_updates(m: MutableMapping[str, Any]) -> None:
    alias = m
    m |= {"name": "other", "db/host": "db.internal"}
    assert m is alias
    assert m["name"] == "other"
    assert m["db"]["host"] == "db.internal"
    m |= [("debug", "true")]
    assert m["debug"] == "true"


def test_sorted_items_and_keys(m: MutableMapping[str, Any]) -> None:
    assert sorted(m) == ["db", "debug", "name"]
    leaves = sorted((k, v) for k, v in m.items() if isinstance(v, str))
    assert leaves == [("debug", "false"), ("name", "app")]
    assert sorted(m.keys()) == sorted(CONFIG.keys())


def test_keys_view_set_operations(m: MutableMapping[str, Any]) -> None:
    assert m.keys() & {"name", "other"} == {"name"}
    assert m.keys() - {"db"} == {"debug", "name"}
    assert m.keys() == CONFIG.keys()


def test_loops_over_items(m: MutableMapping[str, Any]) -> None:
    seen = {}
    for key, value in m.items():
        seen[key] = value.to_dict() if isinstance(value, MAPPINGS) else value
    assert seen == CONFIG


def test_truthiness_and_len(m: MutableMapping[str, Any], etcd_prefix: str,
                            etcd_client: EtcdClient) -> None:
    assert m
    assert len(m) == 3
    empty = EtcdMapping(etcd_prefix + "-empty", client=etcd_client)
    assert not empty
    assert len(empty) == 0


def test_missing_key_raises_a_catchable_key_error(m: MutableMapping[str, Any]) -> None:
    try:
        m["missing"]
    except KeyError as exc:
        assert exc.args == ("missing",)
    else:
        pytest.fail("no KeyError")


def test_get_setdefault_pop_like_a_dict(m: MutableMapping[str, Any]) -> None:
    assert m.get("name") == "app"
    assert m.get("missing", "dflt") == "dflt"
    assert m.setdefault("region", "eu") == "eu"
    assert m.setdefault("region", "us") == "eu"
    assert m.pop("region") == "eu"
    assert m.pop("region", None) is None


def test_del_and_membership(m: MutableMapping[str, Any]) -> None:
    del m["debug"]
    assert "debug" not in m
    assert "db" in m
    with pytest.raises(KeyError):
        del m["debug"]


def test_counter_idiom_on_a_json_mapping(etcd_prefix: str, etcd_client: EtcdClient,
                                         flavour: Flavour) -> None:
    made = flavour(EtcdMapping(f"{etcd_prefix}/counts", client=etcd_client, codec="json"))
    counts = next(made)
    try:
        for word in ["a", "b", "a", "c", "a", "b"]:
            counts[word] = counts.get(word, 0) + 1
        assert counts == {"a": 3, "b": 2, "c": 1}
        assert max(counts, key=counts.__getitem__) == "a"
    finally:
        made.close()


def test_generic_mapping_function(m: MutableMapping[str, Any]) -> None:
    def flatten(d: collections.abc.Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, collections.abc.Mapping):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    assert flatten(m) == {"name": "app", "debug": "false",
                          "db.host": "localhost", "db.port": "5432"}


# -- the rest of what a dict promises --------------------------------------------------


def test_wrong_key_types_behave_as_one_rule(m: MutableMapping[str, Any]) -> None:
    # zict's rules, for every flavour alike: reads say "absent", writes refuse.
    for bad in (1, ("a",), b"name"):
        assert bad not in m
        assert m.get(bad, "dflt") == "dflt"
        with pytest.raises(KeyError):
            del m[bad]
        with pytest.raises(TypeError):
            m[bad] = "x"  # type: ignore[index]
    assert [1] not in m and m.get([1], "dflt") == "dflt"  # unhashable too


def test_a_missing_path_is_a_key_error_naming_the_path(m: MutableMapping[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        m["db/missing"]
    assert info.value.args == ("db/missing",)


def test_copies_are_plain_dict_snapshots(m: Any) -> None:
    for snapshot in (m.copy(), copy.copy(m), copy.deepcopy(m)):
        assert type(snapshot) is dict and snapshot == CONFIG
        snapshot["name"] = "changed"
    assert m["name"] == "app"


def test_fromkeys_and_reversed_like_a_dict(m: MutableMapping[str, Any]) -> None:
    assert type(m).fromkeys(["a", "b"], 1) == {"a": 1, "b": 1}  # type: ignore[attr-defined]
    assert list(reversed(m)) == ["name", "debug", "db"]  # type: ignore[call-overload]
    assert list(reversed(m.keys())) == ["name", "debug", "db"]  # type: ignore[call-overload]
    assert [k for k, _ in reversed(m.items())] == ["name", "debug", "db"]  # type: ignore[call-overload]


def test_update_takes_what_dict_update_takes(m: MutableMapping[str, Any]) -> None:
    m.update({"a": "1"}, b="2")
    m.update([("c", "3")])
    m.update(collections.OrderedDict(d="4"))
    assert {k: m[k] for k in "abcd"} == {"a": "1", "b": "2", "c": "3", "d": "4"}


def test_popitem_empties_it_then_raises_key_error(m: MutableMapping[str, Any]) -> None:
    taken = dict(m.popitem() for _ in range(len(CONFIG)))
    assert {k: (dict(v) if isinstance(v, collections.abc.Mapping) else v)
            for k, v in taken.items()} == CONFIG
    assert not m and len(m) == 0
    with pytest.raises(KeyError):
        m.popitem()


def test_clear_empties_it(m: MutableMapping[str, Any]) -> None:
    m.clear()
    assert dict(m) == {} and m == {}
