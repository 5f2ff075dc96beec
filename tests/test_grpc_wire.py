"""etcdmap's own ``etcd.proto`` speaks etcd's real gRPC wire format.

Every call goes over a raw gRPC channel to the session's etcd, with the message
classes of ``etcdmap._transport.grpc.messages``; where the JSON gateway has the
same call, the same request also goes there (as JSON: field *names*, read with
etcd's own schema) and the two answers must be equal field by field.  gRPC reads
our field *numbers*, so every equal answer proves the numbers and types of each
field that the request set and the reply filled.  Requests set each field so
that the answer would differ if etcd did not see it.

Nothing here sleeps: each call and each stream has a deadline, so a missing
reply fails with DEADLINE_EXCEEDED instead of hanging.
"""

from __future__ import annotations

import importlib.util
import os
import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc  # no importorskip: the gRPC transport's tests fail loudly without grpcio
import pytest
import requests
from google.protobuf import json_format

from etcdmap import EtcdClient
from etcdmap._transport.grpc import _descriptor, _regen
from etcdmap._transport.grpc import messages as pb
from etcdmap.testing import EtcdServer

TIMEOUT = 10.0  # seconds for one call, or for one whole stream
GATEWAY = {
    "Range": "/v3/kv/range",
    "Put": "/v3/kv/put",
    "DeleteRange": "/v3/kv/deleterange",
    "Txn": "/v3/kv/txn",
    "Compact": "/v3/kv/compaction",
    "LeaseGrant": "/v3/lease/grant",
    "LeaseRevoke": "/v3/lease/revoke",
    "LeaseTimeToLive": "/v3/lease/timetolive",
    "MemberList": "/v3/cluster/member/list",
    "Status": "/v3/maintenance/status",
    "Authenticate": "/v3/auth/authenticate",
}
RR, CMP = pb.RangeRequest, pb.Compare


def _method_types() -> dict[str, tuple[Any, Any]]:
    """Method name -> (request class, reply class), as etcd.proto declares them."""
    file = pb.RangeRequest.DESCRIPTOR.file
    return {
        method.name: (getattr(pb, method.input_type.name), getattr(pb, method.output_type.name))
        for service in file.services_by_name.values()
        for method in service.methods
    }


TYPES = _method_types()


# -- plumbing --------------------------------------------------------------------------------


def as_json(message: Any) -> dict[str, Any]:
    """``message`` as the gateway writes it: proto field names, int64 as strings, bytes base64."""
    as_dict: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return as_dict


def unary(channel: grpc.Channel, name: str, request: Any, metadata: Any = None) -> Any:
    """Call the unary method ``name`` over gRPC."""
    request_cls, reply_cls = TYPES[name]
    assert type(request) is request_cls
    call = channel.unary_unary(pb.METHODS[name], request_serializer=request_cls.SerializeToString,
                               response_deserializer=reply_cls.FromString)
    return call(request, timeout=TIMEOUT, metadata=metadata)


def post(endpoint: str, name: str, request: Any) -> requests.Response:
    """Send ``request`` to the JSON gateway's path for method ``name``."""
    return requests.post(endpoint + GATEWAY[name], json=as_json(request), timeout=TIMEOUT)


def gateway(endpoint: str, name: str, request: Any) -> dict[str, Any]:
    """The gateway's JSON answer to ``request``."""
    resp = post(endpoint, name, request)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def same_header(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Two reply headers of one member, the gateway's read after ours."""
    assert {k: v for k, v in ours.items() if k != "revision"} == \
           {k: v for k, v in theirs.items() if k != "revision"}
    # Keys of other tests may expire between the two calls, never the other way.
    assert int(ours.get("revision", 0)) <= int(theirs.get("revision", 0))
    assert ("revision" in ours) == ("revision" in theirs)


def agree(channel: grpc.Channel, endpoint: str, name: str, request: Any) -> Any:
    """Call ``name`` over gRPC and over the gateway; the answers must be equal. Ours."""
    reply = unary(channel, name, request)
    ours, theirs = as_json(reply), gateway(endpoint, name, request)
    same_header(ours.pop("header"), theirs.pop("header"))
    assert ours == theirs
    return reply


class Stream:
    """A bidirectional gRPC stream driven a step at a time: ``send()``, then ``recv()``."""

    _END = object()

    def __init__(self, channel: grpc.Channel, name: str):
        request_cls, reply_cls = TYPES[name]
        self._requests: queue.Queue[Any] = queue.Queue()
        method = channel.stream_stream(pb.METHODS[name],
                                       request_serializer=request_cls.SerializeToString,
                                       response_deserializer=reply_cls.FromString)
        self._replies = method(iter(self._requests.get, self._END), timeout=TIMEOUT)

    def send(self, request: Any) -> None:
        self._requests.put(request)

    def recv(self) -> Any:
        return next(self._replies)

    def close(self) -> None:
        self._requests.put(self._END)
        self._replies.cancel()


@pytest.fixture(scope="module")
def channel(etcd_endpoint: str) -> Iterator[grpc.Channel]:
    """A plaintext gRPC channel to the session's etcd (gRPC and gateway share its port)."""
    url = urlsplit(etcd_endpoint)
    assert url.scheme == "http", f"these tests speak plaintext gRPC, not to {etcd_endpoint}"
    with grpc.insecure_channel(url.netloc) as ch:
        yield ch


@pytest.fixture
def p(etcd_prefix: str) -> bytes:
    """This test's key prefix, as bytes ending in ``/``."""
    return etcd_prefix.encode() + b"/"


def end_of(prefix: bytes) -> bytes:
    """The range end of the keys under ``prefix`` (which ends in ``/``)."""
    return prefix[:-1] + b"0"


@pytest.fixture
def streams(channel: grpc.Channel) -> Iterator[Callable[[str], Stream]]:
    """``streams(name)`` opens a :class:`Stream`, closed after the test."""
    opened: list[Stream] = []

    def open_stream(name: str) -> Stream:
        opened.append(Stream(channel, name))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


@pytest.fixture
def lease(channel: grpc.Channel) -> Iterator[int]:
    """A lease of 60 s with an ID chosen by the test (not by etcd), revoked afterwards."""
    wanted = int.from_bytes(os.urandom(7), "big") or 1
    grant = unary(channel, "LeaseGrant", pb.LeaseGrantRequest(TTL=60, ID=wanted))
    assert (grant.ID, grant.TTL, grant.error) == (wanted, 60, "")
    yield wanted
    try:
        unary(channel, "LeaseRevoke", pb.LeaseRevokeRequest(ID=wanted))
    except grpc.RpcError as exc:  # the test revoked it
        assert exc.code() == grpc.StatusCode.NOT_FOUND


def put(channel: grpc.Channel, key: bytes, value: bytes, **kw: Any) -> Any:
    return unary(channel, "Put", pb.PutRequest(key=key, value=value, **kw))


def body(reply: Any) -> dict[str, Any]:
    """``reply`` as JSON, without its header."""
    return {k: v for k, v in as_json(reply).items() if k != "header"}


def fields(kv: Any) -> tuple[bytes, bytes, int, int, int, int]:
    """A key-value, ours or the client's, as a tuple."""
    return kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease


# -- the schema itself ------------------------------------------------------------------------


def test_descriptor_is_generated_from_the_proto() -> None:
    """``_regen --check`` passes: ``_descriptor.py`` is what etcd.proto compiles to."""
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools (the protoc that _regen runs) is not installed")
    assert _regen.compile_proto() == _descriptor.DESCRIPTOR
    assert _regen.generate() == Path(_descriptor.__file__).read_text(encoding="utf-8")
    assert _regen.main(["--check"]) == 0


def test_every_method_has_a_path_and_message_classes() -> None:
    expected = {
        "KV": ["Range", "Put", "DeleteRange", "Txn", "Compact"],
        "Watch": ["Watch"],
        "Lease": ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive"],
        "Cluster": ["MemberList"],
        "Maintenance": ["Status"],
        "Auth": ["Authenticate"],
    }
    paths = {m: f"/etcdserverpb.{s}/{m}" for s, ms in expected.items() for m in ms}
    assert paths == pb.METHODS
    assert set(TYPES) == set(pb.METHODS)
    for request_cls, reply_cls in TYPES.values():
        assert request_cls.__name__ in pb.__all__ and reply_cls.__name__ in pb.__all__
    # etcd's mvccpb messages are declared in our one package; only their shape matters.
    assert pb.KeyValue.DESCRIPTOR.full_name == "etcdserverpb.KeyValue"


# -- KV -------------------------------------------------------------------------------------


def fill(channel: grpc.Channel, p: bytes) -> dict[str, int]:
    """Keys a, b, c, d under ``p``, written so that each sort target orders them differently.

    key: a b c d; version (3 1 2 4): b c a d; create: d c b a; mod: b d c a;
    value (x z w y): c a d b.  Returns revisions: ``first`` when all four exist,
    and ``create_X``/``mod_X`` per key.
    """
    revs: dict[str, int] = {}
    for step in ["d1", "c1", "bz", "a1", "d2", "d3", "dy", "a2", "cw", "ax"]:
        name, value = step[0], step[1:]
        rev = put(channel, p + name.encode(), value.encode()).header.revision
        revs.setdefault(f"create_{name}", rev)
        revs[f"mod_{name}"] = rev
        if len(revs) == 8:  # a's creation: the first revision with all four keys
            revs["first"] = rev
    return revs


RANGES: dict[str, Callable[[bytes, dict[str, int]], dict[str, Any]]] = {
    "one_key": lambda p, r: {"key": p + b"b", "range_end": b""},
    "limit": lambda p, r: {"limit": 2},
    "revision": lambda p, r: {"revision": r["first"]},
    "sort_key_descend": lambda p, r: {"sort_order": RR.DESCEND, "sort_target": RR.KEY},
    "sort_version": lambda p, r: {"sort_order": RR.ASCEND, "sort_target": RR.VERSION},
    "sort_create": lambda p, r: {"sort_order": RR.ASCEND, "sort_target": RR.CREATE},
    "sort_mod": lambda p, r: {"sort_order": RR.ASCEND, "sort_target": RR.MOD},
    "sort_value": lambda p, r: {"sort_order": RR.ASCEND, "sort_target": RR.VALUE},
    "keys_only": lambda p, r: {"keys_only": True},
    "count_only": lambda p, r: {"count_only": True},
    "min_mod_revision": lambda p, r: {"min_mod_revision": r["mod_c"]},
    "max_mod_revision": lambda p, r: {"max_mod_revision": r["mod_d"]},
    "min_create_revision": lambda p, r: {"min_create_revision": r["create_b"]},
    "max_create_revision": lambda p, r: {"max_create_revision": r["create_c"]},
}


@pytest.mark.parametrize("case", RANGES)
def test_range_field(channel: grpc.Channel, etcd_endpoint: str, p: bytes, case: str) -> None:
    """Each RangeRequest field changes the answer, and gRPC and the gateway agree on it."""
    revs = fill(channel, p)
    everything = unary(channel, "Range", RR(key=p, range_end=end_of(p)))
    assert [kv.key[-1:] for kv in everything.kvs] == [b"a", b"b", b"c", b"d"]
    request = RR(**{"key": p, "range_end": end_of(p), **RANGES[case](p, revs)})
    reply = agree(channel, etcd_endpoint, "Range", request)
    assert body(reply) != body(everything)


def test_range_agrees_with_the_client(channel: grpc.Channel, etcd_client: EtcdClient,
                                      p: bytes) -> None:
    fill(channel, p)
    reply = unary(channel, "Range", RR(key=p, range_end=end_of(p), serializable=True))
    theirs = etcd_client.range(p, prefix=True)
    assert [fields(kv) for kv in reply.kvs] == [fields(kv) for kv in theirs.kvs]
    assert (reply.count, reply.more) == (theirs.count, theirs.more) == (4, False)
    assert len({kv.create_revision for kv in reply.kvs}) == 4
    assert all(kv.create_revision < kv.mod_revision for kv in reply.kvs if kv.version > 1)


def test_put_prev_kv_lease_and_ignore_flags(channel: grpc.Channel, etcd_endpoint: str,
                                            p: bytes, lease: int) -> None:
    k = p + b"k"
    first = put(channel, k, b"1")
    assert not first.HasField("prev_kv")
    second = put(channel, k, b"2", prev_kv=True)
    assert (second.prev_kv.value, second.prev_kv.mod_revision, second.prev_kv.version) == \
           (b"1", first.header.revision, 1)
    put(channel, k, b"", lease=lease, ignore_value=True)  # the value stays
    put(channel, k, b"3", ignore_lease=True)  # the lease stays
    kv = agree(channel, etcd_endpoint, "Range", RR(key=k)).kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"3", lease, 4)
    with pytest.raises(grpc.RpcError) as info:
        put(channel, p + b"absent", b"", ignore_value=True)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert post(etcd_endpoint, "Put", pb.PutRequest(key=p + b"absent", ignore_value=True)
                ).json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_delete_range_returns_prev_kvs(channel: grpc.Channel, etcd_endpoint: str,
                                       p: bytes) -> None:
    fill(channel, p)
    before = gateway(etcd_endpoint, "Range", RR(key=p, range_end=end_of(p)))["kvs"]
    reply = unary(channel, "DeleteRange",
                  pb.DeleteRangeRequest(key=p + b"a", range_end=p + b"c", prev_kv=True))
    assert reply.deleted == 2
    assert [as_json(kv) for kv in reply.prev_kvs] == before[:2]
    after = gateway(etcd_endpoint, "Range", RR(key=p, range_end=end_of(p)))
    assert after["kvs"] == before[2:]
    assert int(after["header"]["revision"]) >= reply.header.revision


# -- Txn ------------------------------------------------------------------------------------


COMPARES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], bool]] = {
    # k was put twice ("v1" then "v2", with the lease); k2 once, under the same prefix.
    "version_equal": (lambda s: {"target": CMP.VERSION, "version": 2}, True),
    "version_equal_false": (lambda s: {"target": CMP.VERSION, "version": 1}, False),
    "version_greater": (lambda s: {"target": CMP.VERSION, "result": CMP.GREATER, "version": 1},
                        True),
    "version_less_false": (lambda s: {"target": CMP.VERSION, "result": CMP.LESS, "version": 2},
                           False),
    "version_not_equal": (lambda s: {"target": CMP.VERSION, "result": CMP.NOT_EQUAL,
                                     "version": 1}, True),
    "create": (lambda s: {"target": CMP.CREATE, "create_revision": s["r1"]}, True),
    "create_false": (lambda s: {"target": CMP.CREATE, "create_revision": s["r2"]}, False),
    "mod": (lambda s: {"target": CMP.MOD, "mod_revision": s["r2"]}, True),
    "mod_less_false": (lambda s: {"target": CMP.MOD, "result": CMP.LESS,
                                  "mod_revision": s["r2"]}, False),
    "value": (lambda s: {"target": CMP.VALUE, "value": b"v2"}, True),
    "value_false": (lambda s: {"target": CMP.VALUE, "value": b"v1"}, False),
    "value_greater": (lambda s: {"target": CMP.VALUE, "result": CMP.GREATER, "value": b"v1"},
                      True),
    "lease": (lambda s: {"target": CMP.LEASE, "lease": s["lease"]}, True),
    "lease_false": (lambda s: {"target": CMP.LEASE, "lease": 0}, False),
    "lease_not_equal": (lambda s: {"target": CMP.LEASE, "result": CMP.NOT_EQUAL, "lease": 0},
                        True),
    # Over [k, end) k2's version 1 fails what k alone passes.
    "range_end": (lambda s: {"target": CMP.VERSION, "version": 2, "range_end": s["end"]}, False),
    "range_end_greater": (lambda s: {"target": CMP.VERSION, "result": CMP.GREATER, "version": 0,
                                     "range_end": s["end"]}, True),
}


@pytest.mark.parametrize("case", COMPARES)
def test_txn_compare(channel: grpc.Channel, etcd_endpoint: str, p: bytes, lease: int,
                     case: str) -> None:
    """Each compare target, result and range end: gRPC and the gateway decide alike."""
    k = p + b"k"
    r1 = put(channel, k, b"v1").header.revision
    r2 = put(channel, k, b"v2", lease=lease).header.revision
    put(channel, p + b"k2", b"x")
    fields, expected = COMPARES[case]
    compare = CMP(key=k, **fields({"r1": r1, "r2": r2, "lease": lease, "end": end_of(p)}))
    request = pb.TxnRequest(compare=[compare],
                            success=[pb.RequestOp(request_range=RR(key=k))],
                            failure=[pb.RequestOp(request_range=RR(key=p + b"k2"))])
    reply = agree(channel, etcd_endpoint, "Txn", request)
    assert reply.succeeded is expected
    [op] = reply.responses
    assert op.response_range.kvs[0].key == (k if expected else p + b"k2")


def test_txn_runs_every_op_type_and_nests(channel: grpc.Channel, etcd_endpoint: str,
                                          etcd_client: EtcdClient, p: bytes) -> None:
    fill(channel, p)
    op = pb.RequestOp
    inner = pb.TxnRequest(compare=[CMP(key=p + b"n", target=CMP.VERSION, version=0)],
                          success=[op(request_put=pb.PutRequest(key=p + b"m", value=b"2")),
                                   op(request_range=RR(key=p + b"b"))])
    request = pb.TxnRequest(
        compare=[CMP(key=p + b"n", target=CMP.CREATE, create_revision=0)],  # n is absent
        success=[op(request_put=pb.PutRequest(key=p + b"n", value=b"1")),
                 op(request_range=RR(key=p + b"a")),
                 op(request_delete_range=pb.DeleteRangeRequest(key=p + b"a", prev_kv=True)),
                 op(request_txn=inner)])
    reply = unary(channel, "Txn", request)
    assert reply.succeeded
    assert [r.WhichOneof("response") for r in reply.responses] == \
           ["response_put", "response_range", "response_delete_range", "response_txn"]
    put_r, range_r, delete_r, txn_r = reply.responses
    assert range_r.response_range.kvs[0].value == b"x"
    assert delete_r.response_delete_range.deleted == 1
    assert delete_r.response_delete_range.prev_kvs[0] == range_r.response_range.kvs[0]
    nested = txn_r.response_txn
    assert nested.succeeded  # the inner compare saw n as it was before this txn
    assert [r.WhichOneof("response") for r in nested.responses] == \
           ["response_put", "response_range"]
    assert nested.responses[1].response_range.kvs[0].value == b"z"
    revision = reply.header.revision
    assert put_r.response_put.header.revision == revision
    after = {kv.key: kv for kv in etcd_client.range(p, prefix=True).kvs}
    assert b"a" not in {key[-1:] for key in after}
    assert (after[p + b"n"].value, after[p + b"n"].mod_revision) == (b"1", revision)
    assert (after[p + b"m"].value, after[p + b"m"].mod_revision) == (b"2", revision)
    # The failure branch, with a nested read-only txn, as the gateway sees it too.
    again = agree(channel, etcd_endpoint, "Txn", pb.TxnRequest(
        compare=request.compare, failure=[op(request_txn=pb.TxnRequest(
            success=[op(request_range=RR(key=p + b"n"))]))]))
    assert not again.succeeded
    assert again.responses[0].response_txn.responses[0].response_range.kvs[0].value == b"1"


def test_compaction(channel: grpc.Channel, etcd_endpoint: str, p: bytes,
                    streams: Callable[[str], Stream]) -> None:
    """Compact discards old revisions; a watch from before them learns where history starts."""
    k = p + b"k"
    old = put(channel, k, b"1").header.revision
    new = put(channel, k, b"2").header.revision
    unary(channel, "Compact", pb.CompactionRequest(revision=new, physical=True))
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Range", RR(key=k, revision=old))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "compacted" in str(info.value.details())
    assert post(etcd_endpoint, "Range", RR(key=k, revision=old)).json()["code"] == \
           grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert agree(channel, etcd_endpoint, "Range", RR(key=k, revision=new)).kvs[0].value == b"2"
    watch = streams("Watch")
    watch.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=k, start_revision=old)))
    created = watch.recv()
    assert created.created and not created.canceled
    canceled = watch.recv()
    assert (canceled.watch_id, canceled.canceled, canceled.compact_revision) == \
           (created.watch_id, True, new)


# -- Lease ----------------------------------------------------------------------------------


def test_lease_time_to_live_and_revoke(channel: grpc.Channel, etcd_endpoint: str,
                                       etcd_client: EtcdClient, p: bytes, lease: int) -> None:
    k = p + b"k"
    put(channel, k, b"v", lease=lease)
    request = pb.LeaseTimeToLiveRequest(ID=lease, keys=True)
    ours = unary(channel, "LeaseTimeToLive", request)
    assert (ours.ID, ours.grantedTTL, list(ours.keys)) == (lease, 60, [k])
    assert 0 < ours.TTL <= 60
    theirs = gateway(etcd_endpoint, "LeaseTimeToLive", request)
    assert 0 < int(theirs.pop("TTL")) <= ours.TTL  # it counts down between the two calls
    mine = as_json(ours)
    del mine["TTL"]
    same_header(mine.pop("header"), theirs.pop("header"))
    assert mine == theirs
    info = etcd_client.lease_time_to_live(lease, keys=True)
    assert (info.id, info.granted_ttl, info.keys) == (lease, 60, (k,))
    revoked = unary(channel, "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease))
    assert etcd_client.range(k).kvs == ()
    assert revoked.header.revision > 0
    gone = unary(channel, "LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=lease))
    assert (lease, -1) == (gone.ID, gone.TTL)  # -1: the lease is gone


def test_lease_keepalive_stream(channel: grpc.Channel, lease: int) -> None:
    request_cls, reply_cls = TYPES["LeaseKeepAlive"]
    keepalive = channel.stream_stream(pb.METHODS["LeaseKeepAlive"],
                                      request_serializer=request_cls.SerializeToString,
                                      response_deserializer=reply_cls.FromString)
    # etcd answers each request, then ends the stream when ours ends.
    replies = list(keepalive(iter([request_cls(ID=lease)] * 2), timeout=TIMEOUT))
    assert [(r.ID, r.TTL) for r in replies] == [(lease, 60)] * 2
    assert all(r.header.member_id for r in replies)
    unary(channel, "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease))
    replies = list(keepalive(iter([request_cls(ID=lease)]), timeout=TIMEOUT))
    assert [(r.ID, r.TTL) for r in replies] == [(lease, 0)]  # 0: the lease is gone


# -- Watch ----------------------------------------------------------------------------------


def test_watch_stream(channel: grpc.Channel, etcd_endpoint: str, p: bytes,
                      streams: Callable[[str], Stream]) -> None:
    """Create, events with prev_kv, a progress request, cancel, explicit IDs and filters."""
    k = p + b"k"
    r0 = put(channel, k, b"1").header.revision
    watch = streams("Watch")
    watch.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=k, prev_kv=True)))
    created = watch.recv()
    assert (created.created, created.canceled, len(created.events)) == (True, False, 0)
    assert created.header.revision >= r0
    wid = created.watch_id

    r1 = put(channel, k, b"2").header.revision
    reply = watch.recv()
    assert (reply.watch_id, reply.header.revision, reply.created) == (wid, r1, False)
    [event] = reply.events
    assert event.type == pb.Event.PUT
    assert (event.kv.value, event.kv.version, event.kv.create_revision, event.kv.mod_revision) \
        == (b"2", 2, r0, r1)
    assert (event.prev_kv.value, event.prev_kv.mod_revision) == (b"1", r0)
    assert as_json(event.kv) == gateway(etcd_endpoint, "Range", RR(key=k))["kvs"][0]

    r2 = unary(channel, "DeleteRange", pb.DeleteRangeRequest(key=k)).header.revision
    [event] = watch.recv().events
    assert (event.type, event.kv.key, event.kv.mod_revision, event.prev_kv.value) == \
           (pb.Event.DELETE, k, r2, b"2")

    watch.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
    progress = watch.recv()
    assert (progress.watch_id, len(progress.events)) == (-1, 0)  # -1: for every watch
    assert progress.header.revision >= r2

    watch.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=wid)))
    canceled = watch.recv()
    assert (canceled.watch_id, canceled.canceled) == (wid, True)

    chosen = wid + 1000
    no_puts = pb.WatchCreateRequest(key=p, range_end=end_of(p), watch_id=chosen,
                                    filters=[pb.WatchCreateRequest.NOPUT])
    watch.send(pb.WatchRequest(create_request=no_puts))
    created = watch.recv()
    assert (created.watch_id, created.created, created.canceled) == (chosen, True, False)
    watch.send(pb.WatchRequest(create_request=no_puts))  # that ID is taken
    refused = watch.recv()
    assert (refused.created, refused.canceled) == (True, True)
    assert refused.cancel_reason
    put(channel, k, b"3")  # filtered out: etcd sends nothing for it
    r3 = unary(channel, "DeleteRange", pb.DeleteRangeRequest(key=k)).header.revision
    reply = watch.recv()
    assert reply.watch_id == chosen
    assert [(e.type, e.kv.mod_revision) for e in reply.events] == [(pb.Event.DELETE, r3)]
    assert not reply.events[0].HasField("prev_kv")
    watch.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=chosen)))
    canceled = watch.recv()
    assert (canceled.watch_id, canceled.canceled) == (chosen, True)


def test_watch_fragments_a_large_revision(channel: grpc.Channel, p: bytes,
                                          streams: Callable[[str], Stream]) -> None:
    """With ``fragment``, a revision bigger than etcd's request limit comes in pieces."""
    big = b"x" * (1024 * 1024)  # under --max-request-bytes (1.5 MiB) for each put
    for name in b"abc":
        put(channel, p + bytes([name]), big)
    watch = streams("Watch")
    watch.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
        key=p, range_end=end_of(p), prev_kv=True, fragment=True)))
    assert watch.recv().created
    deleted = unary(channel, "DeleteRange", pb.DeleteRangeRequest(key=p, range_end=end_of(p)))
    assert deleted.deleted == 3
    pieces = [watch.recv()]
    while pieces[-1].fragment:
        pieces.append(watch.recv())
    assert len(pieces) > 1  # 3 MiB of prev_kv: more than one message of at most 2 MiB
    events = [e for piece in pieces for e in piece.events]
    assert [(e.type, e.kv.key, e.prev_kv.value) for e in events] == \
           [(pb.Event.DELETE, p + bytes([name]), big) for name in b"abc"]


# -- Cluster, Maintenance, Auth ---------------------------------------------------------------


def test_member_list(channel: grpc.Channel, etcd_endpoint: str,
                     etcd_client: EtcdClient) -> None:
    reply = agree(channel, etcd_endpoint, "MemberList", pb.MemberListRequest(linearizable=True))
    ours = [(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)
            for m in reply.members]
    assert ours == [(m.id, m.name, m.peer_urls, m.client_urls, m.is_learner)
                    for m in etcd_client.members()]
    assert reply.header.member_id in {m.ID for m in reply.members}


def test_status(channel: grpc.Channel, etcd_endpoint: str, etcd_client: EtcdClient) -> None:
    ours = unary(channel, "Status", pb.StatusRequest())
    theirs = gateway(etcd_endpoint, "Status", pb.StatusRequest())
    mine = as_json(ours)
    same_header(mine.pop("header"), theirs.pop("header"))
    # Which fields are set, and the ones that do not move while a test runs.
    assert set(mine) == set(theirs) - {"storageVersion", "dbSizeQuota", "downgradeInfo"}
    stable = ("version", "leader", "raftTerm", "isLearner", "errors")
    assert {k: mine.get(k) for k in stable} == {k: theirs.get(k) for k in stable}
    for counter in ("raftIndex", "raftAppliedIndex"):
        assert int(mine[counter]) <= int(theirs[counter])
    status = etcd_client.status()
    assert (ours.version, ours.header.member_id, ours.leader) == \
           (status.version, status.member_id, status.leader)
    assert 0 < ours.dbSizeInUse <= ours.dbSize


ROOT_PASSWORD = "root-Pw-5e1b"
LEARNER_PEER = "http://127.0.0.1:9"  # a learner that never starts


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[str]:
    """An etcd of its own, with a learner that never starts and auth on, as gRPC host:port."""
    with EtcdServer() as server:
        for path, body in [
            ("cluster/member/add", {"peerURLs": [LEARNER_PEER], "isLearner": True}),
            ("auth/user/add", {"name": "root", "password": ROOT_PASSWORD}),
            ("auth/user/grant", {"user": "root", "role": "root"}),
            ("auth/enable", {}),
        ]:
            resp = requests.post(f"{server.endpoint}/v3/{path}", json=body, timeout=TIMEOUT)
            assert resp.status_code == 200, resp.text
        yield server.endpoint


def test_member_list_shows_a_learner(own_etcd: str) -> None:
    with grpc.insecure_channel(urlsplit(own_etcd).netloc) as ch:  # no token needed
        reply = unary(ch, "MemberList", pb.MemberListRequest())
    learners = [(m.name, list(m.peerURLs), list(m.clientURLs))
                for m in reply.members if m.isLearner]
    assert learners == [("", [LEARNER_PEER], [])]
    theirs = gateway(own_etcd, "MemberList", pb.MemberListRequest())
    assert [as_json(m) for m in reply.members] == theirs["members"]


def test_authenticate(own_etcd: str) -> None:
    request = pb.AuthenticateRequest(name="root", password=ROOT_PASSWORD)
    with grpc.insecure_channel(urlsplit(own_etcd).netloc) as ch:
        reply = unary(ch, "Authenticate", request)
        assert reply.token and reply.header.member_id
        theirs = gateway(own_etcd, "Authenticate", request)
        assert set(as_json(reply)) == set(theirs) == {"header", "token"}
        with pytest.raises(grpc.RpcError) as info:
            unary(ch, "Range", RR(key=b"k"))  # no token: "user name is empty"
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert post(own_etcd, "Range", RR(key=b"k")).json()["code"] == info.value.code().value[0]
        assert unary(ch, "Range", RR(key=b"k"), metadata=[("token", reply.token)]).count == 0
        with pytest.raises(grpc.RpcError) as info:
            unary(ch, "Authenticate", pb.AuthenticateRequest(name="root", password="wrong"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
