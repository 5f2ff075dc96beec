"""etcdmap: etcd as a Python dict, over etcd's v3 JSON gateway."""

from etcdmap.cache import CachedMapping as CachedMapping
from etcdmap.client import EtcdClient as EtcdClient
from etcdmap.errors import EtcdAuthError as EtcdAuthError
from etcdmap.errors import EtcdClosed as EtcdClosed
from etcdmap.errors import EtcdCodecError as EtcdCodecError
from etcdmap.errors import EtcdCompacted as EtcdCompacted
from etcdmap.errors import EtcdCompareFailed as EtcdCompareFailed
from etcdmap.errors import EtcdConflict as EtcdConflict
from etcdmap.errors import EtcdConnectionError as EtcdConnectionError
from etcdmap.errors import EtcdError as EtcdError
from etcdmap.errors import EtcdIndeterminateWrite as EtcdIndeterminateWrite
from etcdmap.errors import EtcdInvalidArgument as EtcdInvalidArgument
from etcdmap.errors import EtcdKeyError as EtcdKeyError
from etcdmap.errors import EtcdLeaseExpired as EtcdLeaseExpired
from etcdmap.errors import EtcdLeaseNotFound as EtcdLeaseNotFound
from etcdmap.errors import EtcdOutOfRange as EtcdOutOfRange
from etcdmap.errors import EtcdPartialWrite as EtcdPartialWrite
from etcdmap.errors import EtcdPermissionError as EtcdPermissionError
from etcdmap.errors import EtcdProtocolError as EtcdProtocolError
from etcdmap.errors import EtcdQuotaExceeded as EtcdQuotaExceeded
from etcdmap.errors import EtcdRequestTooLarge as EtcdRequestTooLarge
from etcdmap.errors import EtcdServerError as EtcdServerError
from etcdmap.errors import EtcdTimeout as EtcdTimeout
from etcdmap.errors import EtcdTLSError as EtcdTLSError
from etcdmap.errors import EtcdUnavailable as EtcdUnavailable
from etcdmap.errors import EtcdWatchError as EtcdWatchError
from etcdmap.lease import Lease as Lease
from etcdmap.mapping import EtcdMapping as EtcdMapping
from etcdmap.records import DeleteResult as DeleteResult
from etcdmap.records import Event as Event
from etcdmap.records import GetResult as GetResult
from etcdmap.records import KeyValue as KeyValue
from etcdmap.records import Node as Node
from etcdmap.records import SetResult as SetResult
from etcdmap.watch import Watcher as Watcher

__version__ = "0.1.0"

__all__ = [
    "CachedMapping",
    "DeleteResult",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdClosed",
    "EtcdCodecError",
    "EtcdCompacted",
    "EtcdCompareFailed",
    "EtcdConflict",
    "EtcdConnectionError",
    "EtcdError",
    "EtcdIndeterminateWrite",
    "EtcdInvalidArgument",
    "EtcdKeyError",
    "EtcdLeaseExpired",
    "EtcdLeaseNotFound",
    "EtcdMapping",
    "EtcdOutOfRange",
    "EtcdPartialWrite",
    "EtcdPermissionError",
    "EtcdProtocolError",
    "EtcdQuotaExceeded",
    "EtcdRequestTooLarge",
    "EtcdServerError",
    "EtcdTLSError",
    "EtcdTimeout",
    "EtcdUnavailable",
    "EtcdWatchError",
    "Event",
    "GetResult",
    "KeyValue",
    "Lease",
    "Node",
    "SetResult",
    "Watcher",
    "__version__",
]
