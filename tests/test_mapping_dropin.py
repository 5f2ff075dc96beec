"""Code written for dicts works unchanged on an ``EtcdMapping``.

Every test below is ordinary dict-idiom code; only the object handed to it
is an ``EtcdMapping`` over a real etcd.
"""

from __future__ import annotations

import collections
import collections.abc
import json
from typing import Any

import pytest

from etcdmap import EtcdClient, EtcdMapping

CONFIG = {
    "name": "app",
    "debug": "false",
    "db": {"host": "localhost", "port": "5432"},
}


@pytest.fixture
def m(etcd_prefix: str, etcd_client: EtcdClient) -> EtcdMapping:
    m = EtcdMapping(etcd_prefix, client=etcd_client)
    m.update(CONFIG)
    return m


def test_is_a_mutable_mapping(m: EtcdMapping) -> None:
    assert isinstance(m, collections.abc.MutableMapping)
    assert isinstance(m, collections.abc.Mapping)
    assert isinstance(m["db"], collections.abc.MutableMapping)


def test_dict_of_it(m: EtcdMapping) -> None:
    d = dict(m)
    assert sorted(d) == ["db", "debug", "name"]
    assert d["name"] == "app"
    assert dict(d["db"]) == {"host": "localhost", "port": "5432"}


def test_unpacked_into_a_dict_display(m: EtcdMapping) -> None:
    merged = {**m, "name": "override"}
    assert merged["name"] == "override"
    assert merged["debug"] == "false"
    assert merged["db"] == CONFIG["db"]


def test_compares_equal_to_a_dict(m: EtcdMapping) -> None:
    assert m == CONFIG
    # The dict on the left: dict.__eq__ declines, Python asks the mapping.
    assert CONFIG == m  # noqa: SIM300
    assert m != {**CONFIG, "name": "other"}


def test_format_map_reaches_nested_keys(m: EtcdMapping) -> None:
    assert "{db[host]}:{db[port]}".format_map(m) == "localhost:5432"
    assert "{name}".format(**m) == "app"


def test_chain_map_falls_through_to_defaults(m: EtcdMapping) -> None:
    defaults = {"name": "default", "timeout": "30", "db": {"host": "x"}}
    settings = collections.ChainMap(m, defaults)
    assert settings["name"] == "app"
    assert settings["timeout"] == "30"
    assert settings.get("missing", "-") == "-"
    assert "timeout" in settings
    assert settings["db"]["host"] == "localhost"
    assert sorted(settings) == ["db", "debug", "name", "timeout"]


def test_json_dumps_of_to_dict(m: EtcdMapping) -> None:
    text = json.dumps(m.to_dict(), sort_keys=True)
    assert json.loads(text) == CONFIG


def test_passed_as_keyword_arguments(m: EtcdMapping) -> None:
    def connect(name: str, debug: str, db: Any, **extra: Any) -> str:
        return f"{name} -> {db['host']}:{db['port']} debug={debug} {extra}"

    assert connect(**m) == "app -> localhost:5432 debug=false {}"


def test_or_gives_a_new_dict(m: EtcdMapping) -> None:
    merged = m | {"name": "other", "extra": "1"}
    assert type(merged) is dict
    assert merged == {**CONFIG, "name": "other", "extra": "1"}
    assert m["name"] == "app"


def test_dict_or_mapping_gives_a_new_dict(m: EtcdMapping) -> None:
    # dict | mapping: the mapping's values win, as in dict | dict.
    merged = {"name": "default", "timeout": "30"} | m
    assert merged == {**CONFIG, "timeout": "30"}


def test_in_place_or_updates(m: EtcdMapping) -> None:
    alias = m
    m |= {"name": "other", "db/host": "db.internal"}
    assert m is alias
    assert m["name"] == "other"
    assert m["db"]["host"] == "db.internal"
    m |= [("debug", "true")]
    assert m["debug"] == "true"


def test_sorted_items_and_keys(m: EtcdMapping) -> None:
    assert sorted(m) == ["db", "debug", "name"]
    leaves = sorted((k, v) for k, v in m.items() if isinstance(v, str))
    assert leaves == [("debug", "false"), ("name", "app")]
    assert sorted(m.keys()) == sorted(CONFIG.keys())


def test_keys_view_set_operations(m: EtcdMapping) -> None:
    assert m.keys() & {"name", "other"} == {"name"}
    assert m.keys() - {"db"} == {"debug", "name"}
    assert m.keys() == CONFIG.keys()


def test_loops_over_items(m: EtcdMapping) -> None:
    seen = {}
    for key, value in m.items():
        seen[key] = value.to_dict() if isinstance(value, EtcdMapping) else value
    assert seen == CONFIG


def test_truthiness_and_len(m: EtcdMapping, etcd_prefix: str, etcd_client: EtcdClient) -> None:
    assert m
    assert len(m) == 3
    empty = EtcdMapping(etcd_prefix + "-empty", client=etcd_client)
    assert not empty
    assert len(empty) == 0


def test_missing_key_raises_a_catchable_key_error(m: EtcdMapping) -> None:
    try:
        m["missing"]
    except KeyError as exc:
        assert exc.args == ("missing",)
    else:
        pytest.fail("no KeyError")


def test_get_setdefault_pop_like_a_dict(m: EtcdMapping) -> None:
    assert m.get("name") == "app"
    assert m.get("missing", "dflt") == "dflt"
    assert m.setdefault("region", "eu") == "eu"
    assert m.setdefault("region", "us") == "eu"
    assert m.pop("region") == "eu"
    assert m.pop("region", None) is None


def test_del_and_membership(m: EtcdMapping) -> None:
    del m["debug"]
    assert "debug" not in m
    assert "db" in m
    with pytest.raises(KeyError):
        del m["debug"]


def test_counter_idiom_on_a_json_mapping(etcd_prefix: str, etcd_client: EtcdClient) -> None:
    counts = EtcdMapping(etcd_prefix, client=etcd_client, codec="json")
    for word in ["a", "b", "a", "c", "a", "b"]:
        counts[word] = counts.get(word, 0) + 1
    assert counts == {"a": 3, "b": 2, "c": 1}
    assert max(counts, key=counts.__getitem__) == "a"


def test_generic_mapping_function(m: EtcdMapping) -> None:
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
