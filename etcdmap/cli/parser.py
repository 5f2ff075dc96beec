"""The ``etcdmap`` argument parser: usage errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from .._settings import TRANSPORTS
from .._version import __version__
from ..client import EtcdClient
from .commands import cmd_dump, cmd_get, cmd_load, cmd_ls, cmd_rm, cmd_set, cmd_watch
from .connect import duration
from .demo import cmd_demo
from .documents import EXIT_USAGE
from .serve import cmd_serve

__all__ = ["Command", "Standalone", "build_parser", "parse_args"]

Command = Callable[[argparse.Namespace, EtcdClient], int]  # runs with a client: ``func``
Standalone = Callable[[argparse.Namespace], int]  # makes its own connection: ``standalone``
_NEGATIVE = re.compile(r"-\d+$|-\d*\.\d+$")  # argparse takes these for values, not options


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
    group.add_argument("--dial-timeout", type=duration, default=default, metavar="DURATION",
                       help="timeout of each request, e.g. 2s ($ETCDCTL_DIAL_TIMEOUT; 5s)")
    group.add_argument("--insecure-skip-tls-verify", action="store_true",
                       default=default, help="do not verify the server's certificate")
    group.add_argument("--transport", choices=TRANSPORTS, default=default,
                       help="http: the JSON gateway; grpc: needs etcdmap[grpc] "
                            "($ETCDMAP_TRANSPORT; http)")


def _version() -> str:
    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``etcdmap`` argument parser."""
    parser = _Parser(prog="etcdmap", description="etcd as a tree of keys.",
                     epilog="Exit codes: 0 ok, 1 key not found, 2 usage or bad input, "
                            "3 connection or cluster problem.")
    parser.add_argument("--version", action="version", version=f"etcdmap {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also report recovered problems (failovers, reconnects)")
    _connection_flags(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command | None, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", **kw)
        if func is not None:
            _connection_flags(p, sub=True)
        p.set_defaults(func=func, standalone=None)
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
    p.set_defaults(standalone=cmd_serve)

    p = command("demo", None, "a short tour against a local etcd (started if needed)")
    _connection_flags(p, sub=True)
    p.set_defaults(standalone=cmd_demo)
    return parser
