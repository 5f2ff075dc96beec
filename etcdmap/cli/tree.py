"""``ls -R``: key names drawn as a tree.  Pure: it reads and writes nothing.

Unlike a mapping (where a leaf wins), the drawing shows every key: a name that
other tools stored both as a value and as a directory appears twice, as
``name`` and ``name/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

__all__ = ["Names", "draw", "names_of", "unicode_ok"]

SEP = "/"
_UNICODE = ("├── ", "└── ", "│   ", "    ")
_ASCII = ("|-- ", "`-- ", "|   ", "    ")


@dataclasses.dataclass
class Names:
    """A name in the drawing: whether a key ends there, and the names below it."""

    leaf: bool = False
    children: dict[str, Names] = dataclasses.field(default_factory=dict)


def names_of(paths: Iterable[str]) -> tuple[Names, int]:
    """The names of ``paths`` (relative keys, in key order), and how many paths
    were left out because they have an empty segment (``a//b``): no name reaches them."""
    root = Names()
    hidden = 0
    for path in paths:
        parts = path.split(SEP)
        if "" in parts:
            hidden += 1
            continue
        node = root
        for part in parts:
            node = node.children.setdefault(part, Names())
        node.leaf = True
    return root, hidden


def unicode_ok(encoding: str | None) -> bool:
    """Whether an output in ``encoding`` can take the box-drawing characters."""
    try:
        "".join(_UNICODE).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def draw(node: Names, *, ascii_only: bool = False) -> Iterator[str]:
    """The lines below ``node``: values as ``name``, directories as ``name/``.

    Recursive: a tree deeper than the interpreter's recursion limit raises
    ``RecursionError``.
    """
    tee, last, bar, gap = _ASCII if ascii_only else _UNICODE
    entries: list[tuple[str, Names | None]] = []
    for name, child in node.children.items():
        if child.leaf:
            entries.append((name, None))
        if child.children:
            entries.append((name + SEP, child))
    for i, (label, sub) in enumerate(entries):
        final = i == len(entries) - 1
        yield (last if final else tee) + label
        if sub is not None:
            for line in draw(sub, ascii_only=ascii_only):
                yield (gap if final else bar) + line
