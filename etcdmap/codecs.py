"""Value codecs: how a mapping turns Python values into etcd's bytes and back."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from .errors import EtcdCodecError

__all__ = [
    "BytesCodec", "Codec", "JSONCodec", "StrCodec",
    "decode_or_raw", "decode_value", "encode_value", "get_codec",
]


@runtime_checkable
class Codec(Protocol):
    """Anything with ``encode(value) -> bytes`` and ``decode(bytes) -> value``."""

    def encode(self, value: Any) -> bytes:
        """The bytes to store for ``value``; ``TypeError`` for values it cannot store."""

    def decode(self, data: bytes) -> Any:
        """The value stored as ``data``."""


class StrCodec:
    """UTF-8 text: ``str`` values only."""

    name = "str"

    def encode(self, value: Any) -> bytes:
        """UTF-8 of a ``str``."""
        if not isinstance(value, str):
            raise TypeError(f"the 'str' codec stores str values, not {type(value).__name__}")
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:
        """The text of ``data``."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EtcdCodecError("stored value is not UTF-8 text; use codec='bytes'") from exc


class BytesCodec:
    """Raw bytes: ``bytes``, ``bytearray`` and ``memoryview`` values."""

    name = "bytes"

    def encode(self, value: Any) -> bytes:
        """The bytes themselves."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"the 'bytes' codec stores bytes values, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        """``data`` unchanged."""
        return data


class JSONCodec:
    """Any JSON-serialisable value (a ``dict`` value is still a subtree)."""

    name = "json"

    def encode(self, value: Any) -> bytes:
        """Compact UTF-8 JSON."""
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (ValueError, RecursionError, UnicodeEncodeError) as exc:
            raise TypeError(f"cannot store this {type(value).__name__} as JSON: "
                            f"{type(exc).__name__}") from None

    def decode(self, data: bytes) -> Any:
        """The JSON value."""
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise EtcdCodecError(f"stored value is not valid JSON: {exc}") from None


_NAMED: dict[str, type[StrCodec | BytesCodec | JSONCodec]] = {
    "str": StrCodec, "bytes": BytesCodec, "json": JSONCodec,
}


def get_codec(codec: str | Codec) -> Codec:
    """A codec by name (``"str"``, ``"bytes"``, ``"json"``) or the object itself."""
    if isinstance(codec, str):
        try:
            return _NAMED[codec]()
        except KeyError:
            raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(_NAMED)} "
                             "or an object with encode() and decode()") from None
    if isinstance(codec, Codec):
        return codec
    raise TypeError("codec must be a name or an object with encode() and decode()")


def _name(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def decode_value(codec: Codec, data: bytes, key: bytes) -> Any:
    """``codec.decode(data)``; whatever a codec raises is :class:`EtcdCodecError` naming ``key``."""
    try:
        return codec.decode(data)
    except Exception as exc:  # a custom codec may raise anything, RecursionError included
        detail = str(exc) if isinstance(exc, EtcdCodecError) else f"{type(exc).__name__}: {exc}"
        raise EtcdCodecError(f"cannot decode the value of {_name(key)!r}: {detail}",
                             key=_name(key)) from exc


def encode_value(codec: Codec, value: Any, key: bytes) -> bytes:
    """``codec.encode(value)`` as ``bytes``.

    ``TypeError`` (a value the codec does not store) passes through, as from a
    dict that refuses a key; any other failure is :class:`EtcdCodecError`
    naming ``key``.  Nothing has been written when either is raised.
    """
    try:
        data = codec.encode(value)
    except TypeError:
        raise
    except Exception as exc:
        raise EtcdCodecError(f"cannot encode the value for {_name(key)!r}: "
                             f"{type(exc).__name__}: {exc}", key=_name(key)) from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EtcdCodecError(f"the codec encoded the value for {_name(key)!r} as "
                             f"{type(data).__name__}, not bytes", key=_name(key))
    return bytes(data)


def decode_or_raw(codec: Codec, data: bytes, key: bytes = b"") -> Any:
    """``codec.decode(data)``, or ``data`` itself when the codec cannot read it.

    For event streams, where one undecodable value must not stop the rest.
    """
    try:
        return decode_value(codec, data, key)
    except EtcdCodecError:
        return data
