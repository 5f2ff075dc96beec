"""The watch stream's framing: JSON objects, however HTTP chunks split them."""

from __future__ import annotations

import codecs
import json
from typing import Any

from ..errors import EtcdProtocolError

__all__ = ["JSONStreamDecoder"]


class JSONStreamDecoder:
    """Split a byte stream into JSON values, however the chunks fall."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the values completed by them."""
        text = self._text(data, final=False)
        self._buf += text
        # A value can only end where a message ends; waiting for the newline
        # the gateway sends keeps multi-megabyte messages linear.
        if "\n" not in text:
            return []
        return self._drain(final=False)

    def close(self) -> list[Any]:
        """The stream ended: return what is left, or raise if it is cut short."""
        self._buf += self._text(b"", final=True)
        return self._drain(final=True)

    def _text(self, data: bytes, *, final: bool) -> str:
        try:
            return self._utf8.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise EtcdProtocolError("watch stream is not UTF-8") from exc

    def _drain(self, *, final: bool) -> list[Any]:
        out = []
        pos, buf = 0, self._buf
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos == len(buf):
                break
            try:
                value, pos = self._decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if final or "\n" in buf[pos:].rstrip():
                    raise EtcdProtocolError(f"malformed JSON in watch stream: {exc}") from None
                break
            except RecursionError:
                raise EtcdProtocolError("absurdly nested JSON in watch stream") from None
            out.append(value)
        self._buf = buf[pos:]
        return out
