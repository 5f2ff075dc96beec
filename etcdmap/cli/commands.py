"""``get``, ``set``, ``rm``, ``ls``, ``watch``, ``dump`` and ``load``: each a few
calls of the public API.

Reads go through :class:`~etcdmap.EtcdMapping` (``get``, ``to_dict``, ``items``,
``watch``) or :meth:`EtcdClient.range_iter`; writes through the mapping
(``m[k] = v``, ``del``, :meth:`~etcdmap.EtcdMapping.write`), which plans them
as a nested dict would and splits what does not fit in one transaction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Mapping
from typing import Any

from ..client import EtcdClient
from ..errors import EtcdKeyError, EtcdPartialWrite
from ..mapping import EtcdMapping
from .documents import (
    EXIT_ETCD,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    check_utf8,
    format_document,
    one_line,
    optional,
    read_document,
    show,
    text_tree,
    yaml_module,
)
from .tree import draw, names_of, unicode_ok

__all__ = ["Diff", "Meter", "Target", "cmd_dump", "cmd_get", "cmd_load", "cmd_ls", "cmd_rm",
           "cmd_set", "cmd_watch", "parse_target", "plan_load"]

SEP = "/"


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
    def base(self) -> str:
        """The etcd key prefix of what lies under it."""
        return self.full + SEP if self.path else self.root

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
        return EtcdMapping(self.base, client=client, codec=codec)


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


class Meter:
    """A ``progress(done, total)`` callback for the library: a tqdm bar on stderr
    when it is a terminal and tqdm is installed (the ``progress`` extra), shown
    only for work that takes more than one step (a page, a transaction)."""

    def __init__(self, desc: str, unit: str):
        self._desc, self._unit = desc, unit
        self._tqdm = optional("tqdm") if sys.stderr.isatty() else None
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if self._tqdm is None or done >= total:
                return
            self._bar = self._tqdm.tqdm(total=total, desc=self._desc, unit=self._unit,
                                        file=sys.stderr, leave=False, dynamic_ncols=True)
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _document(mapping: EtcdMapping, target: Target, fmt: str) -> str:
    """The subtree of ``mapping`` (``bytes`` codec), read at one revision, as a document."""
    with Meter("dump", "key") as meter:
        tree = mapping.to_dict(progress=meter)
    return format_document(text_tree(tree, target.show), fmt)


def cmd_get(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.key, prefix=False)
    value = EtcdMapping(target.root, client=client, codec="bytes").get(target.path)
    if value is None:
        raise CliError(f"{args.key}: key not found", EXIT_NOT_FOUND)
    if isinstance(value, EtcdMapping):
        _out(_document(value, target, "json"))
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
            raise CliError(f"--ttl must be a positive whole number of seconds, not {args.ttl}")
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


def _children(client: EtcdClient, target: Target) -> list[str]:
    """The children as the mapping sees them: a leaf wins over a directory of its name."""
    return [show(name) + (SEP if isinstance(value, EtcdMapping) else "")
            for name, value in target.mapping(client, "bytes").items()]


def _drawing(client: EtcdClient, target: Target) -> tuple[list[str], int]:
    """Every key under ``target`` drawn as a tree (no lines if there is none), and
    how many keys no name reaches."""
    skip = len(target.base.encode())
    names, hidden = names_of(show(kv.key[skip:]) for kv in client.range_iter(
        target.base, prefix=True, keys_only=True))
    if not names.children:
        return [], hidden
    ascii_only = not unicode_ok(getattr(sys.stdout, "encoding", None))
    return [target.base or ".", *draw(names, ascii_only=ascii_only)], hidden


def cmd_ls(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    lines, hidden = _drawing(client, target) if args.recursive else (_children(client, target), 0)
    if not lines and target.path:
        if client.range(target.full, count_only=True).count:
            _out(target.full + "\n")  # a leaf: like ls FILE
            return EXIT_OK
        if not hidden:
            raise CliError(f"{args.prefix}: not found", EXIT_NOT_FOUND)
    _out("".join(line + "\n" for line in lines))
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
                "type": event.type, "key": show(event.kv.key),
                "value": None if value is None else show(value),
                "prev_value": None if prev is None else show(prev),
                "revision": event.revision,
            }, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    if args.format == "yaml":
        yaml_module()  # say how to install it before reading anything
    _out(_document(target.mapping(client, "bytes"), target, args.format))
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
        def text(value: str) -> str:
            return json.dumps(value, ensure_ascii=False)

        out = [(k, f"+ {k} = {text(v)}") for k, v in self.added.items()]
        out += [(k, f"~ {k} = {text(a)} -> {text(b)}") for k, (a, b) in self.changed.items()]
        out += [(k, f"- {k} = {text(v)}") for k, v in self.removed.items()]
        return [line for _, line in sorted(out)]

    def summary(self) -> str:
        """``N added, N changed, N removed``."""
        return (f"{len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.removed)} removed")


def plan_load(client: EtcdClient, target: Target, leaves: Mapping[str, str],
              replace: bool) -> Diff:
    """What loading ``leaves`` under ``target`` changes, as a nested dict would.

    Only keys under the prefix change: a value stored at the prefix itself (or
    above it) is left alone.  It reads the subtree; the write plans itself.
    """
    current = {show(kv.key): show(kv.value)
               for kv in client.range_iter(target.base, prefix=True)}
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


def cmd_load(args: argparse.Namespace, client: EtcdClient) -> int:
    target = parse_target(args.prefix, prefix=True)
    leaves = read_document(args.file, args.format)
    diff = plan_load(client, target, leaves, args.replace)
    if args.dry_run:
        _out("".join(line + "\n" for line in diff.lines()))
        _out(f"{diff.summary()} (dry run: nothing written)\n")
        return EXIT_OK
    with Meter("load", "op") as meter:
        try:
            target.mapping(client).write(leaves, replace=args.replace, progress=meter)
        except EtcdPartialWrite as exc:
            raise CliError(f"load stopped after {len(exc.written)} of {len(leaves)} keys: "
                           f"{one_line(exc)}", EXIT_ETCD) from exc
    _out(f"{diff.summary()} under {target.full or 'the root'}\n")
    return EXIT_OK
