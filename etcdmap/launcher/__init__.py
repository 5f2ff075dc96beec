"""Real etcd servers and clusters on loopback, for tests and development.

:mod:`etcdmap.testing` re-exports these for test suites; ``etcdmap serve`` and
``etcdmap demo`` use them to run a local etcd.
"""

from .cluster import EtcdCluster as EtcdCluster
from .server import EtcdServer as EtcdServer
from .server import EtcdTestingError as EtcdTestingError
from .server import TLSFiles as TLSFiles
from .server import find_etcd_binary as find_etcd_binary
from .server import free_port as free_port
from .server import free_ports as free_ports

__all__ = [
    "EtcdCluster", "EtcdServer", "EtcdTestingError", "TLSFiles",
    "find_etcd_binary", "free_port", "free_ports",
]
