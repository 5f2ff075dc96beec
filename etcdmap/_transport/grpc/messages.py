"""etcd's v3 gRPC messages, built at import from etcdmap's own ``etcd.proto``.

The compiled schema (``_descriptor.DESCRIPTOR``, written by ``_regen``) is loaded into
a private ``DescriptorPool`` and the message classes are made from it by protobuf's
runtime, instead of importing generated ``_pb2`` modules: those tie the code to the
protoc that generated them, and they register etcd's names (``etcdserverpb.*``) in
protobuf's default pool, where another etcd client in the same process (python-etcd3)
registers the same names and the two would collide. A private pool collides with no
one, and the same module works on every protobuf from 3.20 on, C++, pure-Python or upb
(``.ci/oldest-protobuf`` runs the wire tests on 3.20 and 4.21). ``METHODS`` maps each
method name to the path gRPC calls it by, e.g. ``"/etcdserverpb.KV/Range"``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._descriptor import DESCRIPTOR

# Imported by name: protobuf is an optional dependency and ships no type information.
_descriptor_pool = importlib.import_module("google.protobuf.descriptor_pool")
_message_factory = importlib.import_module("google.protobuf.message_factory")

PACKAGE = "etcdserverpb"

_pool: Any = _descriptor_pool.DescriptorPool()
_file: Any = _pool.AddSerializedFile(DESCRIPTOR)
if _file is None:  # protobuf's pure-Python pool returns nothing here
    _file = _pool.FindFileByName("etcd.proto")

if hasattr(_message_factory, "GetMessageClass"):  # protobuf >= 4.22

    def _cls(name: str) -> Any:
        return _message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))

else:  # protobuf 3.x and 4.21, whose MessageFactory has no GetMessageClass yet
    _factory: Any = _message_factory.MessageFactory(_pool)

    def _cls(name: str) -> Any:
        return _factory.GetPrototype(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


#: Method name -> gRPC method path, for every method of every service in etcd.proto.
METHODS: dict[str, str] = {
    method.name: f"/{service.full_name}/{method.name}"
    for service in _file.services_by_name.values()
    for method in service.methods
}

# Shared
ResponseHeader: Any = _cls("ResponseHeader")
KeyValue: Any = _cls("KeyValue")
Event: Any = _cls("Event")

# KV
RangeRequest: Any = _cls("RangeRequest")
RangeResponse: Any = _cls("RangeResponse")
PutRequest: Any = _cls("PutRequest")
PutResponse: Any = _cls("PutResponse")
DeleteRangeRequest: Any = _cls("DeleteRangeRequest")
DeleteRangeResponse: Any = _cls("DeleteRangeResponse")
RequestOp: Any = _cls("RequestOp")
ResponseOp: Any = _cls("ResponseOp")
Compare: Any = _cls("Compare")
TxnRequest: Any = _cls("TxnRequest")
TxnResponse: Any = _cls("TxnResponse")
CompactionRequest: Any = _cls("CompactionRequest")
CompactionResponse: Any = _cls("CompactionResponse")

# Watch
WatchRequest: Any = _cls("WatchRequest")
WatchCreateRequest: Any = _cls("WatchCreateRequest")
WatchCancelRequest: Any = _cls("WatchCancelRequest")
WatchProgressRequest: Any = _cls("WatchProgressRequest")
WatchResponse: Any = _cls("WatchResponse")

# Lease
LeaseGrantRequest: Any = _cls("LeaseGrantRequest")
LeaseGrantResponse: Any = _cls("LeaseGrantResponse")
LeaseRevokeRequest: Any = _cls("LeaseRevokeRequest")
LeaseRevokeResponse: Any = _cls("LeaseRevokeResponse")
LeaseKeepAliveRequest: Any = _cls("LeaseKeepAliveRequest")
LeaseKeepAliveResponse: Any = _cls("LeaseKeepAliveResponse")
LeaseTimeToLiveRequest: Any = _cls("LeaseTimeToLiveRequest")
LeaseTimeToLiveResponse: Any = _cls("LeaseTimeToLiveResponse")

# Cluster
Member: Any = _cls("Member")
MemberListRequest: Any = _cls("MemberListRequest")
MemberListResponse: Any = _cls("MemberListResponse")

# Maintenance
StatusRequest: Any = _cls("StatusRequest")
StatusResponse: Any = _cls("StatusResponse")

# Auth
AuthenticateRequest: Any = _cls("AuthenticateRequest")
AuthenticateResponse: Any = _cls("AuthenticateResponse")

__all__ = [
    "METHODS", "PACKAGE",
    "ResponseHeader", "KeyValue", "Event",
    "RangeRequest", "RangeResponse", "PutRequest", "PutResponse",
    "DeleteRangeRequest", "DeleteRangeResponse", "RequestOp", "ResponseOp", "Compare",
    "TxnRequest", "TxnResponse", "CompactionRequest", "CompactionResponse",
    "WatchRequest", "WatchCreateRequest", "WatchCancelRequest", "WatchProgressRequest",
    "WatchResponse",
    "LeaseGrantRequest", "LeaseGrantResponse", "LeaseRevokeRequest", "LeaseRevokeResponse",
    "LeaseKeepAliveRequest", "LeaseKeepAliveResponse", "LeaseTimeToLiveRequest",
    "LeaseTimeToLiveResponse",
    "Member", "MemberListRequest", "MemberListResponse",
    "StatusRequest", "StatusResponse",
    "AuthenticateRequest", "AuthenticateResponse",
]
