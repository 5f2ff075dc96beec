"""The ``etcdmap`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import EtcdConnectionError, EtcdError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcdmap", description="etcd as a tree of keys")
    parser.add_argument("--endpoints", help="etcd URLs, comma-separated ($ETCDCTL_ENDPOINTS)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="a short tour against a local etcd (started if needed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(args.endpoints)
    except EtcdConnectionError as exc:
        print(f"etcdmap: {exc}", file=sys.stderr)
        return 3
    except EtcdError as exc:
        print(f"etcdmap: {exc}", file=sys.stderr)
        return 1
    return 0
