"""Real ``items()``/``values()`` views that read a subtree in one scan."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, ValuesView
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mapping import EtcdMapping

__all__ = ["EtcdItemsView", "EtcdValuesView"]


class EtcdItemsView(ItemsView[str, Any]):
    """``(name, value)`` pairs of an :class:`EtcdMapping`, read when iterated."""

    _mapping: EtcdMapping

    # ItemsView.__iter__ would call __getitem__ once per key.
    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._mapping._iter_items()


class EtcdValuesView(ValuesView[Any]):
    """Values of an :class:`EtcdMapping`, read when iterated."""

    _mapping: EtcdMapping

    # ValuesView.__iter__ would call __getitem__ once per key.
    def __iter__(self) -> Iterator[Any]:
        for _, value in self._mapping._iter_items():
            yield value
