"""Documents for ``dump`` and ``load``: JSON, YAML and ``NAME=value`` lines.

Parsing checks the whole document before anything is written: it must be a
mapping of names to scalars and mappings, its keys valid paths, and all of it
valid UTF-8 text.  Formatting takes a tree read with the ``bytes`` codec and
refuses (exit code 3) names or values that are not UTF-8 text.

The command line's error, :class:`CliError`, and its exit codes live here, at
the bottom of :mod:`etcdmap.cli`, because every module above raises them;
:mod:`etcdmap.cli` re-exports them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["EXIT_ETCD", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE",
           "CliError", "check_utf8", "format_document", "one_line", "optional", "read_document",
           "show", "text_tree", "yaml_module"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_ETCD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SEP = "/"
MAX_MESSAGE = 300  # characters of an error line: a message may quote a whole reply
YAML_HINT = "pip install 'etcdmap[yaml]'"
_ENV_NAME = re.compile(r"[^A-Za-z0-9]+")


class CliError(Exception):
    """An expected failure: a one-line message and the process exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def one_line(text: object) -> str:
    """``text`` on one line of at most :data:`MAX_MESSAGE` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def show(data: bytes | str) -> str:
    """Bytes from etcd (or a name holding them) as text any output takes: ``\\xNN``
    for what is not UTF-8."""
    if isinstance(data, str):  # a mapping's name: such bytes are surrogate escapes
        data = data.encode("utf-8", "surrogateescape")
    return data.decode("utf-8", "backslashreplace")


def check_utf8(text: str, what: str) -> str:
    """``text``, or :class:`CliError` if it cannot be stored: not valid UTF-8.

    Arguments that are not UTF-8 arrive as lone surrogates (``$'\\xff'`` is
    ``"\\udcff"``), and so do JSON escapes like ``"\\ud800"``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CliError(f"{what} is not valid UTF-8 text") from None
    return text


def optional(name: str) -> ModuleType | None:
    """The module ``name``, or None when it is not installed (an extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def yaml_module() -> ModuleType:
    """PyYAML, or :class:`CliError` saying how to install it."""
    yaml = optional("yaml")
    if yaml is None:
        raise CliError(f"YAML needs PyYAML: {YAML_HINT}")
    return yaml


# -- reading -----------------------------------------------------------------------------


def _scalar(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and value == value
                                  and value not in (float("inf"), float("-inf"))):
        return str(value)
    if value is None:
        raise CliError(f"{where}: null is not a value (write \"\" for an empty string)")
    if isinstance(value, (list, tuple)):
        raise CliError(f"{where}: lists cannot be stored (use a mapping of names)")
    raise CliError(f"{where}: cannot store a {type(value).__name__} value")


def document_leaves(doc: object, source: str) -> dict[str, str]:
    """The leaves of a parsed document as ``{path: text}``; :class:`CliError` if it
    is not a mapping of names to scalars and mappings."""
    if not isinstance(doc, Mapping):
        kind = "null" if doc is None else type(doc).__name__
        raise CliError(f"{source}: the document must be a mapping of keys, not {kind}")
    out: dict[str, str] = {}

    def walk(node: Mapping[Any, Any], path: str) -> None:
        for name, value in node.items():
            if isinstance(name, bool) or not isinstance(name, (str, int)):
                raise CliError(f"{source}: key {name!r} under {path or 'the top'!r} "
                               "is not a string")
            name = str(name)
            if not name or "" in name.split(SEP):
                raise CliError(f"{source}: invalid key {name!r} under {path or 'the top'!r}: "
                               "empty path segment")
            full = f"{path}{SEP}{name}" if path else name
            check_utf8(full, f"{source}: key {full!r}")
            if isinstance(value, Mapping):
                walk(value, full)
            else:
                if full in out:
                    raise CliError(f"{source}: key {full!r} is given twice")
                out[full] = check_utf8(_scalar(value, f"{source}: key {full!r}"),
                                       f"{source}: the value of key {full!r}")

    walk(doc, "")
    for key in out:
        parts = key.split(SEP)
        for i in range(1, len(parts)):
            if SEP.join(parts[:i]) in out:
                raise CliError(f"{source}: {SEP.join(parts[:i])!r} is both a value and "
                               f"a directory (of {key!r})")
    return out


def read_document(path: str, fmt: str | None) -> dict[str, str]:
    """Parse ``path`` (``-`` for stdin) as JSON or YAML; its leaves as ``{path: text}``.

    Every key and value is checked before anything is written.
    """
    source = "stdin" if path == "-" else path
    try:
        return document_leaves(_parse(path, source, fmt), source)
    except RecursionError:  # from the parser or the walk: "[" * 100000, YAML anchors
        raise CliError(f"{source}: nested too deeply") from None


def _parse(path: str, source: str, fmt: str | None) -> object:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{source}: {one_line(getattr(exc, 'strerror', None) or exc)}") from exc
    if fmt is None:
        ext = os.path.splitext(path)[1].lower()
        if ext in (".yaml", ".yml"):
            fmt = "yaml"
        elif ext == ".json" or text.lstrip()[:1] in ("{", "["):
            fmt = "json"
        else:
            fmt = "yaml"
    if fmt == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CliError(f"{source}: invalid JSON: {one_line(exc)}") from exc
    yaml = yaml_module()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{source}: invalid YAML: {one_line(exc)}") from exc


# -- writing -----------------------------------------------------------------------------


def text_tree(tree: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """``tree`` (nested dicts read with the ``bytes`` codec) with text values.

    :class:`CliError` (exit code 3: the data, not the command, is the problem)
    names the first key, ``where(path)``, that is not UTF-8 text.
    """
    def walk(node: Mapping[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in node.items():
            rel = f"{path}{SEP}{name}" if path else name
            try:
                name.encode("utf-8")
                out[name] = walk(value, rel) if isinstance(value, Mapping) else \
                    value.decode("utf-8")
            except UnicodeError:
                raise CliError(f"{show(where(rel))}: not UTF-8 text (get prints a value's "
                               "bytes as they are)", EXIT_ETCD) from None
        return out

    return walk(tree, "")


def _env_lines(tree: Mapping[str, Any]) -> list[str]:
    seen: dict[str, str] = {}
    lines = []

    def walk(node: Mapping[str, Any], path: list[str]) -> None:
        for name, value in node.items():
            if isinstance(value, Mapping):
                walk(value, [*path, name])
                continue
            key = SEP.join([*path, name])
            var = _ENV_NAME.sub("_", "_".join([*path, name])).strip("_").upper()
            if not var or var[0].isdigit():
                var = "_" + var
            if var in seen:  # the data, not the command line, is the problem
                raise CliError(f"keys {seen[var]!r} and {key!r} are both ${var}; "
                               "use --format json or yaml", EXIT_ETCD)
            seen[var] = key
            lines.append(f"{var}={shlex.quote(value)}")

    walk(tree, [])
    return lines


def format_document(tree: Mapping[str, Any], fmt: str) -> str:
    """The text of ``tree`` as ``json``, ``yaml`` or ``env`` (``NAME=value`` lines)."""
    if fmt == "json":
        return json.dumps(tree, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        if not tree:
            return "{}\n"
        return str(yaml_module().safe_dump(tree, default_flow_style=False, allow_unicode=True,
                                           sort_keys=False))
    return "".join(line + "\n" for line in _env_lines(tree))
