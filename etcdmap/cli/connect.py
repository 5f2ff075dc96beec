"""The connection flags and etcdctl's environment, as an :class:`~etcdmap.EtcdClient`.

The flags are etcdctl's, and etcdctl reads each flag and its ``ETCDCTL_*``
variable as one setting, the flag winning.  So the flags given are written
over the environment, and the library reads the result by its own rules
(:meth:`etcdmap._settings.Settings.resolve`: ``ETCDCTL_USER=NAME[:PASSWORD]``,
``ETCDCTL_DIAL_TIMEOUT`` as a Go duration, certificate and key pairing); this
module parses no variable itself.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping

from .._settings import Settings, check_seconds, go_duration
from ..client import EtcdClient
from .documents import CliError, one_line

__all__ = ["connect", "duration", "settings"]

# argparse's name of each flag -> the variable it stands for.
FLAG_VARIABLES = {
    "endpoints": "ETCDCTL_ENDPOINTS",
    "cacert": "ETCDCTL_CACERT",
    "cert_file": "ETCDCTL_CERT",
    "key_file": "ETCDCTL_KEY",
    "user": "ETCDCTL_USER",
    "password": "ETCDCTL_PASSWORD",
}


def duration(text: str) -> float:
    """``--dial-timeout``: a positive Go duration (``2s``, ``500ms``, ``1m30s``)."""
    try:
        return check_seconds("--dial-timeout", go_duration(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (expected a positive "
                                         "duration, e.g. 5s, 500ms or 1m30s)") from None


def settings(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """The client's settings: the flags given, over ``env``, read as the client reads it.

    ``--user NAME`` with no password anywhere asks for one on a terminal.
    """
    given = {var: value for dest, var in FLAG_VARIABLES.items()
             if (value := getattr(args, dest, None)) is not None}
    if "ETCDCTL_ENDPOINTS" in given and not given["ETCDCTL_ENDPOINTS"].strip(" ,"):
        raise CliError("--endpoints names no endpoint (e.g. --endpoints http://127.0.0.1:2379)")
    merged = {**env, **given}
    user: str | None = args.user
    if user is not None and ":" not in user and "ETCDCTL_PASSWORD" not in merged:
        if not sys.stdin.isatty():
            raise CliError(f"--user {user} needs a password: --user {user}:PASSWORD, "
                           "--password or $ETCDCTL_PASSWORD")
        merged["ETCDCTL_PASSWORD"] = getpass.getpass(f"Password for {user}: ")
    try:
        return Settings.resolve(timeout=args.dial_timeout,
                                verify=not args.insecure_skip_tls_verify,
                                transport=getattr(args, "transport", None), env=merged)
    except ValueError as exc:  # e.g. a malformed $ETCDCTL_DIAL_TIMEOUT
        raise CliError(one_line(exc)) from exc


def connect(args: argparse.Namespace) -> EtcdClient:
    """A client with the settings of the command line (see :func:`settings`)."""
    s = settings(args)
    username, password = s.credentials or (None, None)
    try:
        return EtcdClient(s.endpoints, timeout=s.timeout, username=username, password=password,
                          ca_cert=s.ca_cert, cert=s.cert, key=s.key, verify=s.verify,
                          max_txn_ops=s.max_txn_ops, transport=s.transport)
    except (ValueError, ImportError) as exc:  # a malformed endpoint, no gRPC installed
        raise CliError(one_line(exc)) from exc
