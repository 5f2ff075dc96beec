"""A short, real tour of etcdmap: ``python -m etcdmap demo``.

It uses the etcd named by ``--endpoints`` or ``ETCDCTL_ENDPOINTS`` when one
answers; otherwise it starts a throw-away local etcd (from the ``server`` extra
or ``PATH``) and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from ..client import EtcdClient
from ..errors import EtcdConnectionError, EtcdError
from ..mapping import EtcdMapping
from .documents import EXIT_OK

__all__ = ["local_etcd", "run_demo"]


@contextlib.contextmanager
def local_etcd(endpoints: str | None = None, *,
               say: Callable[[str], None] = print) -> Iterator[str]:
    """The configured etcd if it answers, else a temporary local one (stopped on exit)."""
    configured = endpoints or os.environ.get("ETCDCTL_ENDPOINTS")
    if configured:
        with EtcdClient(configured, timeout=2, retry_deadline=2) as probe:
            try:
                probe.version()
                say(f"using etcd at {configured}")
                yield configured
                return
            except EtcdConnectionError:
                say(f"no etcd answers at {configured}; starting a local one")
    from ..launcher import EtcdServer  # only needed when we start a server

    with EtcdServer(name="etcdmap-demo") as server:
        say(f"started etcd {server.version} at {server.endpoint} (data in {server.data_dir})")
        yield server.endpoint
    say("stopped the local etcd")


def cmd_demo(args: argparse.Namespace) -> int:
    """``etcdmap demo``: :func:`run_demo` at ``--endpoints`` (or ``$ETCDCTL_ENDPOINTS``)."""
    run_demo(args.endpoints)
    return EXIT_OK


def run_demo(endpoints: str | None = None, *, say: Callable[[str], None] = print) -> None:
    """Show the dict view, a sub-mapping, a TTL expiring, a CAS and a watch event."""
    with local_etcd(endpoints, say=say) as endpoint, EtcdClient(endpoint) as client:
        prefix = f"etcdmap-demo/{uuid.uuid4().hex[:8]}"
        cfg = EtcdMapping(prefix, client=client)
        try:
            _tour(cfg, client, say)
        finally:
            cfg.clear()


def _tour(cfg: EtcdMapping, client: EtcdClient, say: Callable[[str], None]) -> None:
    say(f"\n1. A dict over the prefix {cfg.prefix!r}")
    cfg.update({"db/host": "db.internal", "db/port": "5432", "name": "shop"})
    say(f"   cfg.to_dict() -> {json.dumps(cfg.to_dict())}")
    say(f"   len(cfg) -> {len(cfg)}; sorted(cfg) -> {sorted(cfg)}")
    say("   '{db[host]}:{db[port]}'.format_map(cfg) -> "
        + repr("{db[host]}:{db[port]}".format_map(cfg)))

    say("\n2. A nested sub-mapping writes through")
    db = cfg["db"]
    db["user"] = "app"
    say(f"   cfg['db'] -> {db!r}")
    say(f"   after db['user'] = 'app': etcd holds {sorted(client.get_recursive(cfg.prefix))}")

    say("\n3. A key with a 2 s TTL")
    cfg.with_ttl(2)["session"] = "token-123"
    say(f"   'session' in cfg -> {'session' in cfg}; cfg.ttl('session') -> {cfg.ttl('session')}")
    started = time.monotonic()
    with cfg.watch("session") as watcher:
        event = watcher.next_event(timeout=10)
    waited = time.monotonic() - started
    say(f"   {event.type if event else 'no event'} after {waited:.1f} s; "
        f"'session' in cfg -> {'session' in cfg}")

    say("\n4. Compare-and-swap")
    say(f"   cfg.replace('name', 'shop', 'store') -> {cfg.replace('name', 'shop', 'store')}")
    say(f"   cfg.replace('name', 'shop', 'again') -> {cfg.replace('name', 'shop', 'again')}")
    say(f"   cfg.setdefault('name', 'other') -> {cfg.setdefault('name', 'other')!r}")

    say("\n5. A watch sees a change made by another thread")
    with cfg.watch(prev_kv=True) as watcher:
        writer = threading.Thread(target=cfg.__setitem__, args=("db/port", "6543"))
        writer.start()
        change = watcher.next_event(timeout=10)
        writer.join()
    if change is None:
        raise EtcdError("the watch saw no event")
    say(f"   {change.type} {change.key}: {change.prev_value!r} -> {change.value!r} "
        f"at revision {change.revision}")
