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

The command line is a thin shell over the public API, one module per job:
:mod:`~etcdmap.cli.documents` (JSON, YAML and env documents, and
:class:`CliError`), :mod:`~etcdmap.cli.tree` (drawing ``ls -R``),
:mod:`~etcdmap.cli.connect` (flags and environment to a client),
:mod:`~etcdmap.cli.commands` (get, set, rm, ls, watch, dump, load),
:mod:`~etcdmap.cli.serve`, :mod:`~etcdmap.cli.demo`, :mod:`~etcdmap.cli.parser`,
and :func:`main` here.
"""


from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import EtcdConnectionError, EtcdError, EtcdKeyError, EtcdTimeout
from .connect import connect
from .documents import EXIT_ETCD as EXIT_ETCD
from .documents import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from .documents import EXIT_NOT_FOUND as EXIT_NOT_FOUND
from .documents import EXIT_OK as EXIT_OK
from .documents import EXIT_USAGE as EXIT_USAGE
from .documents import CliError as CliError
from .documents import one_line
from .parser import Command, Standalone, parse_args

__all__ = ["EXIT_ETCD", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE",
           "CliError", "main", "run"]

NO_ETCD_HINT = ("; is etcd running? Set --endpoints or $ETCDCTL_ENDPOINTS, "
                "or start one with `etcdmap serve`")


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line; its exit code, or :class:`CliError`."""
    standalone: Standalone | None = args.standalone
    if standalone is not None:  # serve and demo
        return standalone(args)
    func: Command = args.func
    with connect(args) as client:
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
        _error(one_line(exc))
        return exc.code
    except EtcdKeyError as exc:
        _error(f"{one_line(exc)}: key not found")
        return EXIT_NOT_FOUND
    except EtcdError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        # The library's hint names its Python argument; a shell user has the flag.
        message = message.replace("Point ETCDCTL_ENDPOINTS (or endpoints=) at",
                                  "Point --endpoints (or $ETCDCTL_ENDPOINTS) at")
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
    print(one_line(f"etcdmap: {message}"), file=sys.stderr)  # the whole line within the limit
