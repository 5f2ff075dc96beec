"""A plain nested-dict model of an etcd prefix, shared by the state machines.

etcd has no empty directories, so the model never holds an empty dict.
"""

from __future__ import annotations

import copy
from typing import Any

MISSING: Any = object()


def prune(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` without empty dicts, at any depth."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            v = prune(v)
            if not v:
                continue
        out[k] = v
    return out


def lookup(model: dict[str, Any], key: str) -> Any:
    """The value at path ``key``, or ``MISSING``."""
    node: Any = model
    for seg in key.split("/"):
        if not isinstance(node, dict) or seg not in node:
            return MISSING
        node = node[seg]
    return node


def assign(model: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``model`` with path ``key`` set to ``value``; scalars on the way become dicts."""
    model = copy.deepcopy(model)
    *parents, last = key.split("/")
    node = model
    for seg in parents:
        if not isinstance(node.get(seg), dict):
            node[seg] = {}
        node = node[seg]
    node[last] = copy.deepcopy(value)
    return prune(model)


def remove(model: dict[str, Any], key: str) -> dict[str, Any]:
    """``model`` without path ``key`` (which must be present)."""
    model = copy.deepcopy(model)
    *parents, last = key.split("/")
    node = model
    for seg in parents:
        node = node[seg]
    del node[last]
    return prune(model)
