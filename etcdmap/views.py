"""Real ``keys()``/``items()``/``values()`` views that read a subtree in one scan."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mapping import EtcdMapping

__all__ = ["EtcdItemsView", "EtcdKeysView", "EtcdValuesView"]


class EtcdKeysView(KeysView[str]):
    """Names of an :class:`EtcdMapping`'s children, read when iterated."""

    _mapping: EtcdMapping

    # KeysView.__iter__ is a generator: it would read only after len() had.
    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping)

    def __reversed__(self) -> Iterator[str]:
        return iter(list(self)[::-1])


class EtcdItemsView(ItemsView[str, Any]):
    """``(name, value)`` pairs of an :class:`EtcdMapping`, read when iterated."""

    _mapping: EtcdMapping

    # ItemsView.__iter__ would call __getitem__ once per key.
    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self._mapping._iter_items()

    def __reversed__(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self)[::-1])


class EtcdValuesView(ValuesView[Any]):
    """Values of an :class:`EtcdMapping`, read when iterated."""

    _mapping: EtcdMapping

    # ValuesView.__iter__ would call __getitem__ once per key.
    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self._mapping._iter_items())

    def __reversed__(self) -> Iterator[Any]:
        return iter(list(self)[::-1])
