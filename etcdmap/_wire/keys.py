"""Keys as etcd stores them: bytes, and the names a mapping shows for them.

The one key codec, both ways: UTF-8, with ``surrogateescape`` for bytes that
are not UTF-8, so every key another tool wrote has a name, and that name
addresses it again.
"""

from __future__ import annotations

__all__ = ["key_bytes", "key_name"]


def key_bytes(name: str) -> bytes:
    """The etcd bytes of a name: UTF-8, with ``surrogateescape`` for what is not.

    The one key codec, both ways (see :func:`key_name`): a key other tools
    wrote that is not UTF-8 (``b"\\xff"``) is the name ``"\\udcff"``, and that
    name addresses it again.
    """
    return name.encode("utf-8", "surrogateescape")


def key_name(data: bytes) -> str:
    """The name of etcd key bytes (the inverse of :func:`key_bytes`)."""
    try:
        return data.decode()  # strict UTF-8 decodes twice as fast: the common case
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")
