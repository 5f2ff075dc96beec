"""etcdmap: etcd as a Python dict, over etcd's v3 JSON gateway."""

from etcdmap import errors
from etcdmap._coordination import register
from etcdmap._version import __version__ as __version__
from etcdmap.cache import CachedMapping as CachedMapping
from etcdmap.client import EtcdClient as EtcdClient
from etcdmap.election import Election as Election
from etcdmap.errors import *  # noqa: F403 (the error tree: errors.__all__)
from etcdmap.lease import Lease as Lease
from etcdmap.lock import Lock as Lock
from etcdmap.mapping import EtcdMapping as EtcdMapping
from etcdmap.records import DeleteResult as DeleteResult
from etcdmap.records import Event as Event
from etcdmap.records import GetResult as GetResult
from etcdmap.records import KeyValue as KeyValue
from etcdmap.records import Node as Node
from etcdmap.records import SetResult as SetResult
from etcdmap.transaction import Transaction as Transaction
from etcdmap.transaction import run_atomic
from etcdmap.watch import Watcher as Watcher

__all__ = [
    "CachedMapping",
    "DeleteResult",
    "Election",
    "EtcdClient",
    "EtcdMapping",
    "Event",
    "GetResult",
    "KeyValue",
    "Lease",
    "Lock",
    "Node",
    "SetResult",
    "Transaction",
    "Watcher",
    "__version__",
]
__all__ += errors.__all__

# The coordination recipes build on the mapping; they are made known to it here.
register(Transaction=Transaction, run_atomic=run_atomic, Lock=Lock, Election=Election)
