"""Pure helpers of the mapping: key paths, and writes planned as etcd ops.

A mapping models a nested dict.  Writing a value at ``a/b`` therefore also
removes what a nested dict could not hold beside it: a leaf at an ancestor
(``a``) and, for a scalar, any subtree at ``a/b/``; a ``Mapping`` value replaces
both the leaf and the subtree.  :class:`WritePlan` turns a sequence of such
assignments into disjoint delete ranges plus puts, so they fit in one
transaction (etcd rejects a put inside a range deleted by the same txn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._wire.keys import key_bytes, key_name
from .ops import ALL_KEYS, Delete, Put, prefix_end, subtract_points
from .records import KeyValue

__all__ = ["WritePlan", "add_to_tree", "chunk_ops", "many_keys", "pairs_of", "parse_key", "plain",
           "plan_ops", "prefix_bytes"]

Encode = Callable[[Any, bytes], bytes]  # (value, its etcd key) -> bytes
Decode = Callable[[bytes, bytes], Any]  # (data, its etcd key) -> value


def prefix_bytes(prefix: object, sep: object) -> bytes:
    """A mapping's etcd prefix (ending in ``sep``), or the error that names the argument."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not isinstance(sep, str):
        raise TypeError(f"sep must be a str, not {type(sep).__name__}")
    if not sep:
        raise ValueError("sep must not be empty")
    try:
        return key_bytes(prefix if not prefix or prefix.endswith(sep) else prefix + sep)
    except UnicodeEncodeError:
        raise ValueError(f"invalid prefix {prefix!r}: a lone surrogate is no etcd key") from None


def many_keys(keys: Iterable[Any]) -> Iterable[Any]:
    """``getitems``' keys, or the ``TypeError`` for one key given instead of an iterable."""
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"getitems takes an iterable of keys, not one {type(keys).__name__}")
    return keys


def pairs_of(other: Any, kwargs: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The (key, value) pairs of ``dict.update``'s arguments, as dict.update reads them."""
    if isinstance(other, Mapping):
        pairs = list(other.items())
    elif hasattr(other, "keys"):
        pairs = [(k, other[k]) for k in other.keys()]  # noqa: SIM118 (dict's protocol)
    else:
        pairs = list(other)
    return [*pairs, *kwargs.items()]


def plain(value: Any) -> Any:
    """Nested mappings as plain dicts (a mapping over etcd reads itself once)."""
    to_dict = getattr(value, "to_dict", None)
    if isinstance(value, Mapping) and callable(to_dict):
        return to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def parse_key(key: object, sep: str, *, write: bool) -> bytes:
    """The etcd path of a mapping key, or the error a dict would raise.

    Reads raise ``KeyError`` for any bad key; writes raise ``TypeError`` for a
    non-``str`` key and ``ValueError`` for an empty segment (``""``, ``"a//b"``,
    ``"/a"``, ``"a/"``) or a lone surrogate that no bytes stand for.
    """
    if not isinstance(key, str):
        if write:
            raise TypeError(f"keys are str, not {type(key).__name__}")
        raise KeyError(key)
    if not key or "" in key.split(sep):
        if write:
            raise ValueError(f"invalid key {key!r}: empty path segment")
        raise KeyError(key)
    try:
        return key_bytes(key)
    except UnicodeEncodeError:
        if write:
            raise ValueError(f"invalid key {key!r}: a lone surrogate is no etcd key") from None
        raise KeyError(key) from None


class WritePlan:
    """Assignments applied in order, as they would be to a nested dict."""

    def __init__(self, floor: bytes, sep: bytes, encode: Encode):
        self._floor, self._sep, self._encode = floor, sep, encode
        self.puts: dict[bytes, bytes] = {}
        self._regions: list[tuple[bytes, bytes]] = []
        self._dirs: set[bytes] = set()  # "a/" for every planned put under a/ (never shrinks)

    def assign(self, key: bytes, value: Any) -> None:
        """Plan ``key = value`` (``key`` is a full etcd key)."""
        sep = self._sep
        leaves: dict[bytes, bytes] = {}
        if isinstance(value, Mapping):
            self._flatten(key, value, leaves)
            cleared = [(key, key + b"\0")]
        else:
            leaves[key] = self._encode(value, key)  # TypeError before anything is planned
            cleared = []
        subtree = key + sep
        cleared.append((subtree, prefix_end(subtree)))
        # A leaf at an ancestor below the mapping's root cannot hold children.
        pos = key.find(sep, len(self._floor))
        while pos != -1:
            ancestor = key[:pos]
            cleared.append((ancestor, ancestor + b"\0"))
            pos = key.find(sep, pos + len(sep))
        for start, end in cleared:
            if end == start + b"\0":
                self.puts.pop(start, None)
            elif start in self._dirs:  # only then can planned puts lie under it
                for k in [k for k in self.puts if k.startswith(start)]:
                    del self.puts[k]
        self._regions.extend(cleared)
        self.puts.update(leaves)
        for leaf in leaves:
            pos = leaf.find(sep, len(self._floor))
            while pos != -1:
                self._dirs.add(leaf[:pos + len(sep)])
                pos = leaf.find(sep, pos + len(sep))

    def clear(self, start: bytes, end: bytes) -> None:
        """Plan the removal of every key in ``[start, end)`` (before assignments that refill it)."""
        self._regions.append((start, end))
        self.puts = {k: v for k, v in self.puts.items()
                     if not (start <= k and (end == ALL_KEYS or k < end))}

    def removed(self, key: bytes) -> bool:
        """Whether the plan removes ``key`` (a later put at it is in :attr:`puts`)."""
        return key not in self.puts and any(
            start <= key and (end == ALL_KEYS or key < end) for start, end in self._regions)

    def _flatten(self, key: bytes, tree: Mapping[Any, Any], out: dict[bytes, bytes]) -> None:
        sep = self._sep
        for name, value in tree.items():
            path = key + sep + parse_key(name, sep.decode(), write=True)
            if isinstance(value, Mapping):
                self._flatten(path, value, out)
            else:
                out[path] = self._encode(value, path)

    def ops(self) -> list[Put | Delete]:
        """Deletes first, then puts, in key order; no two ops overlap."""
        deletes: list[Put | Delete] = [
            Delete(start, None if end == start + b"\0" else end)
            for start, end in subtract_points(self._regions, self.puts)
        ]
        return deletes + [Put(k, v) for k, v in sorted(self.puts.items())]


def plan_ops(floor: bytes, sep: bytes, encode: Encode, items: Iterable[tuple[bytes, Any]],
             clear: tuple[bytes, bytes] | None = None) -> list[Put | Delete]:
    """The ops of clearing ``[clear)`` (if given), then assigning ``items`` in order."""
    plan = WritePlan(floor, sep, encode)
    if clear is not None:
        plan.clear(*clear)
    for key, value in items:
        plan.assign(key, value)
    return plan.ops()


def add_to_tree(tree: dict[str, Any], kvs: Iterable[KeyValue], base_len: int, sep: str,
                decode: Decode) -> None:
    """Add key-values (in key order) to a nested dict; a leaf wins over a subtree."""
    for kv in kvs:
        name = key_name(kv.key[base_len:])
        if sep not in name:  # the common case, a leaf of the top level: no walk
            if name and name not in tree:
                tree[name] = decode(kv.value, kv.key)
            continue
        parts = name.split(sep)
        if "" in parts:
            continue  # an empty segment: not addressable
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break  # a leaf already stands at this name
            node = child
        else:
            if parts[-1] not in node:  # a leaf always sorts before its subtree
                node[parts[-1]] = decode(kv.value, kv.key)


def chunk_ops(ops: list[Put | Delete], max_ops: int,
              max_bytes: int) -> list[list[Put | Delete]]:
    """Consecutive groups within the server's op count and request size limits.

    What fits ``max_ops`` stays one transaction whatever its size: etcd then
    accepts or refuses it whole.
    """
    if len(ops) <= max_ops:
        return [ops]
    chunks: list[list[Put | Delete]] = [[]]
    size = 0
    for op in ops:
        # The limit counts the protobuf request: raw bytes plus a little framing.
        tail = op.value if isinstance(op, Put) else (op.range_end or b"")
        weight = 16 + len(op.key) + len(tail)
        if len(chunks[-1]) >= max_ops or (chunks[-1] and size + weight > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += weight
    return chunks
