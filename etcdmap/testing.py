"""Throw-away etcd servers and clusters on 127.0.0.1 for test suites.

(They live in :mod:`etcdmap.launcher`; this module is their public name for tests.)

Example (in a user's ``conftest.py``)::

    import pytest
    from etcdmap.testing import EtcdCluster, EtcdServer

    @pytest.fixture(scope="session")
    def etcd():
        with EtcdServer() as server:          # fresh data dir, free ports
            yield server                      # server.endpoint == "http://127.0.0.1:NNNNN"

    def test_failover():
        with EtcdCluster(3) as cluster:
            old = cluster.leader_index()
            cluster.kill(old)
            new = cluster.wait_for_leader(exclude=old)
            cluster.restart(old)

Finding the binary, ports, logs and start-up errors: see :mod:`etcdmap.launcher`.
"""

from __future__ import annotations

from .launcher import EtcdCluster as EtcdCluster
from .launcher import EtcdServer as EtcdServer
from .launcher import EtcdTestingError as EtcdTestingError
from .launcher import TLSFiles as TLSFiles
from .launcher import find_etcd_binary as find_etcd_binary
from .launcher import free_port as free_port
from .launcher import free_ports as free_ports

__all__ = [
    "EtcdCluster", "EtcdServer", "EtcdTestingError", "TLSFiles",
    "find_etcd_binary", "free_port", "free_ports",
]
