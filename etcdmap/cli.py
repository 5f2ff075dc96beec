"""The ``etcdmap`` command line: etcd as a tree of keys, from the shell.

::

    etcdmap get KEY                      print a value (a directory as JSON)
    etcdmap set KEY VALUE [--ttl S]      store a value (expiring after S seconds)
    etcdmap rm KEY [-r]                  remove a key (-r: and everything under it)
    etcdmap ls [PREFIX] [-R]             list the children (-R: the whole tree)
    etcdmap watch PREFIX [--rev N]       print changes as JSON lines until Ctrl-C
    etcdmap dump PREFIX [--format F]     the subtree as one JSON, YAML or env document
    etcdmap load PREFIX FILE [--replace] [--dry-run]
                                         write a JSON or YAML document as the subtree
    etcdmap serve [--data-dir D] [--port P]
                                         run a local etcd until Ctrl-C
    etcdmap demo                         a short tour

Keys are paths: ``app/db/host`` is the etcd key ``app/db/host`` and ``app`` is
the directory above it, as for :class:`~etcdmap.mapping.EtcdMapping`.  A key
that starts with ``/`` (``/app/db/host``) is that etcd key, with its slash.
``set`` and ``rm`` write through the mapping of the key's first segment
(``set app/db/host x`` is ``EtcdMapping("app")["db/host"] = "x"``), so they
follow its nested-dict rules and touch nothing outside ``app/``.

Arguments and documents are text: a KEY, PREFIX or VALUE that is not valid
UTF-8 (say ``$'\\xff'``) is refused with exit code 2, so keys that other tools
wrote with such bytes cannot be named.  ``ls`` and ``watch`` show those bytes
as ``\\xNN`` escapes; ``dump`` (and ``get`` of a directory) refuse them with
exit code 3; ``rm -r`` of a directory above them removes them.

Connection flags follow ``etcdctl`` (``--endpoints``, ``--cacert``, ``--cert``,
``--key``, ``--user``, ``--password``, ``--dial-timeout``,
``--insecure-skip-tls-verify``), and so do the environment variables
(``ETCDCTL_ENDPOINTS`` ...); flags win.  They may come before or after the
command.

Exit codes: 0 success; 1 the key is not there; 2 a usage error or bad input
(nothing is written); 3 etcd could not be reached or refused the request (or
holds data the command cannot render); 130 interrupted.  Errors are one line
on stderr (at most 300 characters), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import importlib
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn, Protocol

from .client import EtcdClient, go_duration
from .errors import EtcdConnectionError, EtcdError, EtcdKeyError, EtcdPartialWrite, EtcdTimeout
from .mapping import EtcdMapping
from .ops import ALL_KEYS, Delete, Op, Put, prefix_end

__all__ = ["CliError", "main"]

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_ETCD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SEP = "/"
PAGE_SIZE = 1000
_TXN_BYTES = 512 * 1024  # of keys and values: well under etcd's 1.5 MiB request limit
_ENV_NAME = re.compile(r"[^A-Za-z0-9]+")
_NEGATIVE = re.compile(r"-\d+$|-\d*\.\d+$")  # argparse takes these for values, not options
MAX_MESSAGE = 300  # characters of an error line: a message may quote a whole reply
NO_ETCD_HINT = ("; is etcd running? Set --endpoints or $ETCDCTL_ENDPOINTS, "
                "or start one with `etcdmap serve`")
YAML_HINT = "pip install 'etcdmap[yaml]'"


class CliError(Exception):
    """An expected failure: a one-line message and the process exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _one_line(text: object) -> str:
    """``text`` on one line of at most :data:`MAX_MESSAGE` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def _show(data: bytes) -> str:
    """Bytes from etcd as text that any output can take: ``\\xNN`` for non-UTF-8."""
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


# -- keys ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A key or prefix named on the command line.

    ``root`` is ``"/"`` for keys written with a leading slash, else ``""``;
    ``path`` is the rest (``""`` for the root itself).
    """

    arg: str
    root: str
    path: str

    @property
    def full(self) -> str:
        """The etcd key."""
        return self.root + self.path

    @property
    def base(self) -> bytes:
        """The etcd key prefix of what lies under it."""
        return (self.full + SEP if self.path else self.root).encode()

    def show(self, rel: str = "") -> str:
        """A key under this target, as the user would type it."""
        if not rel:
            return self.full
        return self.full + SEP + rel if self.path else self.root + rel

    def owner(self, client: EtcdClient) -> tuple[EtcdMapping, str]:
        """The mapping of the key's first segment (the root's for a one-segment
        key), and the key's name in it.

        Writes through it follow the mapping's rules (``app/a/b = x`` removes a
        value at ``app/a``) and touch nothing outside the first segment, so they
        work for users whose permissions cover just ``app/``.
        """
        head, sep, rest = self.path.partition(SEP)
        if not sep:
            return EtcdMapping(self.root, client=client), head
        return EtcdMapping(self.root + head, client=client), rest

    def mapping(self, client: EtcdClient, codec: str = "str") -> EtcdMapping:
        """The mapping of what lies under this target."""
        return EtcdMapping(self.base.decode(), client=client, codec=codec)


def parse_target(arg: str, *, prefix: bool) -> Target:
    """``arg`` as a :class:`Target`; a prefix may be the root and end in ``/``."""
    check_utf8(arg, f"key {arg!r}")
    root = SEP if arg.startswith(SEP) else ""
    path = arg[len(root):]
    if prefix and path.endswith(SEP):
        path = path[:-1]
    if not path:
        if prefix:
            return Target(arg, root, "")
        raise CliError(f"invalid key {arg!r}: a key is needed")
    if "" in path.split(SEP):
        raise CliError(f"invalid key {arg!r}: empty path segment")
    return Target(arg, root, path)


# -- connection --------------------------------------------------------------------


def _duration(text: str) -> float:
    """``--dial-timeout``, read as the client reads ``$ETCDCTL_DIAL_TIMEOUT``."""
    try:
        seconds = go_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (expected a positive "
                                         "duration, e.g. 5s, 500ms or 1m30s)")
    return seconds


def _connect(args: argparse.Namespace) -> EtcdClient:
    user: str | None = args.user
    password: str | None = args.password
    if user is not None:
        if password is None and ":" in user:
            user, password = user.split(":", 1)
        if password is None:
            password = os.environ.get("ETCDCTL_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise CliError(f"--user {user} needs a password: --user {user}:PASSWORD, "
                               "--password or $ETCDCTL_PASSWORD")
            password = getpass.getpass(f"Password for {user}: ")
    try:  # without --dial-timeout, the client reads $ETCDCTL_DIAL_TIMEOUT
        return EtcdClient(args.endpoints, timeout=args.dial_timeout, username=user,
                          password=password, ca_cert=args.cacert, cert=args.cert_file,
                          key=args.key_file, verify=not args.insecure_skip_tls_verify)
    except ValueError as exc:  # e.g. a malformed $ETCDCTL_DIAL_TIMEOUT or endpoint
        raise CliError(_one_line(exc)) from exc


# -- progress -----------------------------------------------------------------------


class _Bar(Protocol):
    total: float | None

    def update(self, n: float = 1) -> object: ...
    def refresh(self) -> object: ...
    def close(self) -> object: ...


class _NoBar:
    total: float | None = None

    def update(self, n: float = 1) -> None:
        """Nothing to show."""

    def refresh(self) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to show."""


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@contextlib.contextmanager
def progress(total: int, desc: str, *, show: bool = True) -> Iterator[_Bar]:
    """A tqdm bar on stderr when it is a terminal and tqdm is installed (the
    ``progress`` extra); otherwise one that shows nothing."""
    tqdm = _optional("tqdm") if show and sys.stderr.isatty() else None
    bar: _Bar = _NoBar()
    if tqdm is not None:
        bar = tqdm.tqdm(total=total, desc=desc, unit="key", file=sys.stderr, leave=False,
                        dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


# -- documents -----------------------------------------------------------------------


def _yaml() -> ModuleType:
    yaml = _optional("yaml")
    if yaml is None:
        raise CliError(f"YAML needs PyYAML: {YAML_HINT}")
    return yaml


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
        raise CliError(f"{source}: {_one_line(getattr(exc, 'strerror', None) or exc)}") from exc
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
            doc = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{source}: invalid JSON: {_one_line(exc)}") from exc
    else:
        yaml = _yaml()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"{source}: invalid YAML: {_one_line(exc)}") from exc
    return doc


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
        return str(_yaml().safe_dump(tree, default_flow_style=False, allow_unicode=True,
                                     sort_keys=False))
    lines = _env_lines(tree)
    return "".join(line + "\n" for line in lines)


def read_tree(client: EtcdClient, target: Target, *, bar: bool = True) -> dict[str, Any]:
    """The subtree under ``target`` as nested dicts, read at one revision.

    As for :meth:`EtcdMapping.to_dict`: a leaf wins over a subtree at the same
    name, and keys with an empty path segment are skipped.
    """
    base = target.base
    tree: dict[str, Any] = {}
    pages = client.pages(base or ALL_KEYS, prefix_end(base), page_size=PAGE_SIZE)
    with contextlib.ExitStack() as stack:
        meter: _Bar | None = None
        for page in pages:
            if meter is None:
                meter = stack.enter_context(progress(page.count, "dump", show=bar and page.more))
            for kv in page.kvs:
                try:
                    parts = kv.key[len(base):].decode("utf-8").split(SEP)
                    value = kv.value.decode("utf-8")
                except UnicodeDecodeError:
                    raise CliError(f"{_show(kv.key)}: not UTF-8 text (get prints a value's "
                                   "bytes as they are)", EXIT_ETCD) from None
                if "" in parts:
                    continue
                node = tree
                for part in parts[:-1]:
                    child = node.setdefault(part, {})
                    if not isinstance(child, dict):
                        break
                    node = child
                else:
                    node.setdefault(parts[-1], value)
            meter.update(len(page.kvs))
    return tree


# -- commands ----------------------------------------------------------------------------


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_get(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.key, prefix=False)
    value = EtcdMapping(target.root, client=client, codec="bytes").get(target.path)
    if value is None:
        raise CliError(f"{args.key}: key not found", EXIT_NOT_FOUND)
    if isinstance(value, EtcdMapping):
        _out(format_document(read_tree(client, target), "json"))
        return EXIT_OK
    sys.stdout.flush()
    sys.stdout.buffer.write(value + b"\n")
    sys.stdout.flush()
    return EXIT_OK


def cmd_set(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.key, prefix=False)
    check_utf8(args.value, "VALUE")
    mapping, name = target.owner(client)
    if args.ttl is not None:
        if args.ttl <= 0:
            raise CliError(f"--ttl must be a positive number of seconds, not {args.ttl}")
        mapping = mapping.with_ttl(args.ttl)
    mapping[name] = args.value
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.key, prefix=args.recursive)
    if not target.path:
        raise CliError("refusing to remove the whole keyspace")
    mapping, name = target.owner(client)
    if args.recursive:
        try:
            del mapping[name]
        except EtcdKeyError:
            raise CliError(f"{args.key}: key not found", EXIT_NOT_FOUND) from None
        return EXIT_OK
    if client.delete_range(target.full).deleted:
        return EXIT_OK
    if name in mapping:
        raise CliError(f"{args.key}: is a directory (use rm -r)")
    raise CliError(f"{args.key}: key not found", EXIT_NOT_FOUND)


@dataclasses.dataclass
class _Node:
    leaf: bool = False
    children: dict[str, _Node] = dataclasses.field(default_factory=dict)


def _list_keys(client: EtcdClient, target: Target, *, recursive: bool) -> tuple[_Node, int]:
    """The names under ``target`` (all levels, or one), and how many keys were hidden."""
    base = target.base
    root = _Node()
    hidden = 0
    pages = client.pages(base or ALL_KEYS, prefix_end(base), keys_only=True,
                         page_size=PAGE_SIZE)
    page = next(pages, None)
    while page is not None:
        jump: bytes | None = None
        for kv in page.kvs:
            parts = _show(kv.key[len(base):]).split(SEP)
            if "" in parts:
                hidden += 1
                continue
            if not recursive:
                node = root.children.setdefault(parts[0], _Node())
                if len(parts) == 1:
                    node.leaf = True
                else:
                    node.children.setdefault("", _Node())  # a marker: it is a directory
                    jump = prefix_end(base + parts[0].encode() + SEP.encode())
                continue
            node = root
            for part in parts:
                node = node.children.setdefault(part, _Node())
            node.leaf = True
        page = pages.send(jump) if page.more else None
    return root, hidden


def _tree_lines(node: _Node, ascii_only: bool) -> Iterator[str]:
    tee, last, bar, gap = ("|-- ", "`-- ", "|   ", "    ") if ascii_only else \
        ("├── ", "└── ", "│   ", "    ")
    entries: list[tuple[str, _Node | None]] = []
    for name, child in node.children.items():
        if child.leaf:
            entries.append((name, None))
        if child.children:
            entries.append((name + SEP, child))
    for i, (label, sub) in enumerate(entries):
        final = i == len(entries) - 1
        yield (last if final else tee) + label
        if sub is not None:
            for line in _tree_lines(sub, ascii_only):
                yield (gap if final else bar) + line


def cmd_ls(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    tree, hidden = _list_keys(client, target, recursive=args.recursive)
    if not tree.children and target.path:
        if client.range(target.full, count_only=True).count:
            _out(target.full + "\n")  # a leaf: like ls FILE
            return EXIT_OK
        if not hidden:
            raise CliError(f"{args.prefix}: not found", EXIT_NOT_FOUND)
    if args.recursive:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        try:
            "├└│─".encode(encoding)
            ascii_only = False
        except (UnicodeEncodeError, LookupError):
            ascii_only = True
        head = (target.full + SEP if target.path else target.root) or "."
        _out("".join(line + "\n" for line in [head, *_tree_lines(tree, ascii_only)]))
    else:
        names = []
        for name, child in tree.children.items():
            if child.leaf:
                names.append(name)
            if child.children:
                names.append(name + SEP)
        _out("".join(name + "\n" for name in names))
    if hidden:
        print(f"etcdmap: {hidden} key(s) with an empty path segment not shown", file=sys.stderr)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    mapping = EtcdMapping(target.root, client=client, codec="bytes")
    if args.rev is not None and args.rev <= 0:
        raise CliError(f"--rev must be a positive revision, not {args.rev}")
    # Explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with mapping.watch(target.path or None, prev_kv=True, start_revision=args.rev) as events:
        for event in events:
            value, prev = event.value, event.prev_value
            _out(json.dumps({
                "type": event.type, "key": _show(event.kv.key),
                "value": None if value is None else _show(value),
                "prev_value": None if prev is None else _show(prev),
                "revision": event.revision,
            }, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    if args.format == "yaml":
        _yaml()  # say how to install it before reading anything
    _out(format_document(read_tree(client, target), args.format))
    return EXIT_OK


@dataclasses.dataclass
class Diff:
    """What a load changes: ``{etcd key: value}`` added and removed, and
    ``{etcd key: (old, new)}`` changed."""

    added: dict[str, str]
    changed: dict[str, tuple[str, str]]
    removed: dict[str, str]

    def lines(self) -> list[str]:
        """``+``, ``~`` and ``-`` lines in key order, values as JSON strings."""
        out = [(k, f"+ {k} = {json.dumps(v, ensure_ascii=False)}") for k, v in self.added.items()]
        out += [(k, f"~ {k} = {json.dumps(a, ensure_ascii=False)} -> "
                    f"{json.dumps(b, ensure_ascii=False)}") for k, (a, b) in self.changed.items()]
        out += [(k, f"- {k} = {json.dumps(v, ensure_ascii=False)}")
                for k, v in self.removed.items()]
        return [line for _, line in sorted(out)]

    def summary(self) -> str:
        """``N added, N changed, N removed``."""
        return (f"{len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.removed)} removed")


def plan_load(client: EtcdClient, target: Target, leaves: Mapping[str, str],
              replace: bool) -> Diff:
    """The changes that loading ``leaves`` under ``target`` makes, as a nested dict would.

    Only keys under the prefix change: a value stored at the prefix itself (or
    above it) is left alone.
    """
    current: dict[str, str] = {}
    for kv in client.range_iter(target.base or ALL_KEYS, prefix_end(target.base)):
        current[_show(kv.key)] = _show(kv.value)
    wanted = {target.show(k): v for k, v in leaves.items()}
    if replace:
        doomed = [k for k in current if k not in wanted]
    else:
        # A written leaf replaces a subtree at its name and a leaf above it.
        dirs = {w[:i] for w in wanted for i, c in enumerate(w) if c == SEP}
        doomed = [k for k in current if k not in wanted and (
            k in dirs or any(k[:i] in wanted for i, c in enumerate(k) if c == SEP))]
    removed = {k: current[k] for k in doomed}
    added = {k: v for k, v in wanted.items() if k not in current}
    changed = {k: (current[k], v) for k, v in wanted.items()
               if k in current and current[k] != v}
    return Diff(added, changed, removed)


def _replace_ops(target: Target, items: Mapping[str, str]) -> list[Op]:
    """One transaction's ops making the subtree exactly ``items``: deletes of the
    gaps between the new keys (etcd refuses a put inside a range it deletes), then
    the puts."""
    base = target.base
    start, end = base or ALL_KEYS, prefix_end(base)
    ops: list[Op] = []
    for key in sorted(k.encode() for k in items):
        if start < key:
            ops.append(Delete(start, key))
        start = key + b"\0"
    if end == ALL_KEYS or start < end:
        ops.append(Delete(start, end))
    return ops + [Put(k.encode(), v.encode()) for k, v in sorted(items.items())]


def load(client: EtcdClient, target: Target, leaves: Mapping[str, str], *,
         replace: bool, bar: bool = True) -> None:
    """Write ``leaves`` under ``target``; with ``replace``, remove what they do not hold.

    One transaction when it fits; otherwise ordered transactions (the new
    values first, then the removals), with a progress bar on a terminal.
    Only keys under the prefix are touched.
    """
    mapping = target.mapping(client)
    items = {target.show(k): v for k, v in leaves.items()}  # etcd key -> value
    size = sum(len(k) + len(v) for k, v in items.items())
    if size <= _TXN_BYTES:
        if replace:
            ops = _replace_ops(target, items)
            if len(ops) <= client.max_txn_ops:
                client.txn(success=ops)
                return
        elif len(items) <= client.max_txn_ops:
            mapping.update(leaves)  # one transaction when it fits, else ordered chunks
            return
    step = max(1, (client.max_txn_ops - 8) // 2)
    names = sorted(leaves)
    done = 0
    with progress(len(names), "load", show=bar) as meter:
        try:
            for i in range(0, len(names), step):
                chunk = names[i:i + step]
                mapping.update({k: leaves[k] for k in chunk})
                done += len(chunk)
                meter.update(len(chunk))
            if replace:
                wanted = {k.encode() for k in items}
                stale = [kv.key for kv in client.range_iter(
                    target.base or ALL_KEYS, prefix_end(target.base), keys_only=True)
                    if kv.key not in wanted]
                meter.total = (meter.total or 0) + len(stale)
                meter.refresh()
                for i in range(0, len(stale), client.max_txn_ops):
                    batch = stale[i:i + client.max_txn_ops]
                    client.txn(success=[Delete(k) for k in batch])
                    meter.update(len(batch))
        except EtcdPartialWrite as exc:
            raise CliError(f"load stopped after {done + len(exc.written)} of {len(names)} "
                           f"keys: {_one_line(exc)}", EXIT_ETCD) from exc
        except EtcdError as exc:
            raise CliError(f"load stopped after {done} of {len(names)} keys: "
                           f"{_one_line(exc)}", EXIT_ETCD) from exc


def cmd_load(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    leaves = read_document(args.file, args.format)
    diff = plan_load(client, target, leaves, args.replace)
    if args.dry_run:
        _out("".join(line + "\n" for line in diff.lines()))
        _out(f"{diff.summary()} (dry run: nothing written)\n")
        return EXIT_OK
    load(client, target, leaves, replace=args.replace)
    _out(f"{diff.summary()} under {target.full or 'the root'}\n")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(data_dir=args.data_dir, port=args.port, name=args.name)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.endpoints)
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit code 2; an unknown option is named as one."""

    _given: Sequence[str] = ()

    def parse_known_args(self, args: Iterable[str] | None = None,
                         namespace: Any = None) -> tuple[Any, list[str]]:
        self._given = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._given, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            # `set k --bogus`: the real problem is the option, not a missing VALUE.
            given = self._given[:self._given.index("--")] if "--" in self._given else self._given
            unknown = [arg for arg in given if _is_option(arg) and not self._knows(arg)]
            if unknown:
                message = f"unknown option {unknown[0].split('=', 1)[0]}"
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def _knows(self, arg: str) -> bool:
        name = arg.split("=", 1)[0]
        if name.startswith("--"):  # argparse accepts unambiguous abbreviations
            return any(option.startswith(name) for option in self._option_string_actions)
        return name[:2] in self._option_string_actions  # -r, or -rv


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-" and not _NEGATIVE.match(arg)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; a usage error exits with code 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        options = [arg.split("=", 1)[0] for arg in extra if _is_option(arg)]  # no values
        parser.error(f"unknown option {options[0]}" if options
                     else f"unexpected argument {extra[0]!r}")
    return args


def _connection_flags(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    group = parser.add_argument_group("connection (as etcdctl; flags win over $ETCDCTL_*)")
    default: Any = argparse.SUPPRESS if sub else None
    group.add_argument("--endpoints", default=default, metavar="URLS",
                       help="etcd URLs, comma-separated ($ETCDCTL_ENDPOINTS)")
    group.add_argument("--cacert", default=default, metavar="FILE",
                       help="CA bundle to verify the server ($ETCDCTL_CACERT)")
    group.add_argument("--cert", dest="cert_file", default=default, metavar="FILE",
                       help="client certificate ($ETCDCTL_CERT)")
    group.add_argument("--key", dest="key_file", default=default, metavar="FILE",
                       help="client certificate's key ($ETCDCTL_KEY)")
    group.add_argument("--user", default=default, metavar="NAME[:PASSWORD]",
                       help="user name, and password ($ETCDCTL_USER)")
    group.add_argument("--password", default=default,
                       help="password for --user ($ETCDCTL_PASSWORD)")
    group.add_argument("--dial-timeout", type=_duration, default=default, metavar="DURATION",
                       help="timeout of each request, e.g. 2s ($ETCDCTL_DIAL_TIMEOUT; 5s)")
    group.add_argument("--insecure-skip-tls-verify", action="store_true",
                       default=default, help="do not verify the server's certificate")


Command = Callable[[argparse.Namespace, EtcdClient], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``etcdmap`` argument parser."""
    from . import __version__

    parser = _Parser(prog="etcdmap", description="etcd as a tree of keys.",
                     epilog="Exit codes: 0 ok, 1 key not found, 2 usage or bad input, "
                            "3 connection or cluster problem.")
    parser.add_argument("--version", action="version", version=f"etcdmap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also report recovered problems (failovers, reconnects)")
    _connection_flags(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command | None, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", **kw)
        if func is not None:
            _connection_flags(p, sub=True)
            p.set_defaults(func=func)
        return p

    p = command("get", cmd_get, "print the value of KEY (a directory as a JSON document)")
    p.add_argument("key", metavar="KEY")

    p = command("set", cmd_set, "store VALUE at KEY (it replaces a directory there)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--ttl", type=int, metavar="S", help="expire the key S seconds from now")

    p = command("rm", cmd_rm, "remove KEY")
    p.add_argument("key", metavar="KEY")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also remove everything under KEY/")

    p = command("ls", cmd_ls, "list what is under PREFIX (directories end in /)")
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    p.add_argument("-R", "--recursive", action="store_true", help="the whole tree, drawn")

    p = command("watch", cmd_watch,
                "print each change under PREFIX as a JSON line, until Ctrl-C")
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("--rev", type=int, metavar="N",
                   help="start at revision N (default: changes from now on)")

    p = command("dump", cmd_dump, "print the subtree under PREFIX as one document")
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("--format", choices=["json", "yaml", "env"], default="json",
                   help="json (default), yaml (needs the yaml extra), or env: "
                        "NAME=value lines for a shell")

    p = command("load", cmd_load,
                "write a JSON or YAML document (FILE, or - for stdin) as the subtree "
                "under PREFIX")
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replace", action="store_true",
                   help="also remove the keys under PREFIX that FILE does not hold")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would change, write nothing")
    p.add_argument("--format", choices=["json", "yaml"],
                   help="the format of FILE (default: from its name or its content)")

    p = command("serve", None, "run a local etcd in the foreground until Ctrl-C")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep the data in DIR (default: a temporary directory)")
    p.add_argument("--port", type=int, default=2379,
                   help="client port (default 2379, its peer port is the next one; "
                        "0 picks free ports)")
    p.add_argument("--name", default="etcdmap", help="the member name (default etcdmap)")
    p.set_defaults(func=None)

    p = command("demo", None, "a short tour against a local etcd (started if needed)")
    _connection_flags(p, sub=True)
    p.set_defaults(func=None)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line; its exit code, or :class:`CliError`."""
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "demo":
        return cmd_demo(args)
    func: Command = args.func
    with _connect(args) as client:
        return func(args, client)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the process exit code."""
    args = parse_args(argv)
    log = logging.getLogger("etcdmap")
    if not any(getattr(h, "_etcdmap_cli", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("etcdmap: %(message)s"))
        handler._etcdmap_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO if args.verbose else logging.ERROR)
    try:
        return run(args)
    except CliError as exc:
        _error(_one_line(exc))
        return exc.code
    except EtcdKeyError as exc:
        _error(f"{_one_line(exc)}: key not found")
        return EXIT_NOT_FOUND
    except EtcdError as exc:
        message = _one_line(exc) or type(exc).__name__
        # Nothing answered: say what to do (unless the library already did).
        if type(exc) in (EtcdConnectionError, EtcdTimeout) and "etcdmap serve" not in message:
            message += NO_ETCD_HINT
        _error(message)
        return EXIT_ETCD
    except RecursionError:  # a tree of keys too deep to draw or print
        _error("the data is nested too deeply to show")
        return EXIT_ETCD
    except KeyboardInterrupt:
        if args.command == "watch":
            return EXIT_OK  # the way a watch ends
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `etcdmap dump app | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _error(message: str) -> None:
    print(f"etcdmap: {message}", file=sys.stderr)
