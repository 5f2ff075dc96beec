"""Choosing the gRPC transport, and what is its own (the suite also runs on it:
``ETCDMAP_TRANSPORT=grpc python -m pytest``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from helpers import wire_of

from etcdmap import EtcdClient, EtcdMapping
from etcdmap._transport.grpc.transport import GrpcTransport
from etcdmap._transport.grpc.watch import Hub


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], text=True,
                          capture_output=True, timeout=60, env={**os.environ, **env})


def test_import_etcdmap_does_not_import_grpc(etcd_endpoint: str) -> None:
    proc = run_python(f"""
        import sys
        import etcdmap
        m = etcdmap.EtcdMapping(prefix="no-grpc", endpoints={etcd_endpoint!r}, transport="http")
        m["k"] = "v"
        assert m["k"] == "v"
        print(sorted(name for name in sys.modules
                     if name.split(".")[0] == "grpc" or name.startswith("google.protobuf")))
    """, ETCDMAP_TRANSPORT="http")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_grpc_transport_without_the_extra_says_what_to_install() -> None:
    proc = run_python("""
        import sys
        sys.modules["grpc"] = None  # as if grpcio were not installed
        import etcdmap
        try:
            etcdmap.EtcdClient("http://127.0.0.1:1", transport="grpc")
        except ImportError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'etcdmap[grpc]'" in proc.stdout


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_an_unknown_transport_is_named(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "argument":
        with pytest.raises(ValueError, match="invalid transport 'carrier-pigeon'"):
            EtcdClient("http://127.0.0.1:1", transport="carrier-pigeon")
    else:
        monkeypatch.setenv("ETCDMAP_TRANSPORT", "carrier-pigeon")
        with pytest.raises(ValueError, match="invalid ETCDMAP_TRANSPORT 'carrier-pigeon'"):
            EtcdClient("http://127.0.0.1:1")
    with pytest.raises(TypeError, match="transport must be a str"):
        EtcdClient("http://127.0.0.1:1", transport=2)  # type: ignore[arg-type]


def test_the_environment_picks_the_transport_and_an_argument_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDMAP_TRANSPORT", "grpc")
    with EtcdClient("http://127.0.0.1:1") as client:
        assert isinstance(wire_of(client), GrpcTransport)
    with EtcdClient("http://127.0.0.1:1", transport="http") as client:
        assert not isinstance(wire_of(client), GrpcTransport)
    monkeypatch.setenv("ETCDMAP_TRANSPORT", "GRPC ")
    with EtcdClient("http://127.0.0.1:1") as client:
        assert isinstance(wire_of(client), GrpcTransport)


def test_http_only_settings_are_refused_over_grpc() -> None:
    import requests
    with pytest.raises(ValueError, match="HTTP settings"):
        EtcdClient("http://127.0.0.1:1", transport="grpc", session=requests.Session())
    with pytest.raises(ValueError, match="HTTP settings"):
        EtcdClient("http://127.0.0.1:1", transport="grpc", allow_redirects=True)
    with pytest.raises(ValueError, match="verify=False is not available over gRPC"):
        EtcdClient("https://127.0.0.1:1", transport="grpc", verify=False)


def test_a_mapping_over_grpc_and_one_over_http_see_the_same_data(etcd_endpoint: str) -> None:
    with EtcdMapping(prefix="both", endpoints=etcd_endpoint, transport="grpc",
                     codec="bytes") as over_grpc, \
            EtcdMapping(prefix="both", endpoints=etcd_endpoint, transport="http",
                        codec="bytes") as over_http:
        over_grpc.update({"a": b"1", "tree": {"b": b"\xff\x00", "c": b"3"}})
        assert over_http.to_dict() == over_grpc.to_dict() == {
            "a": b"1", "tree": {"b": b"\xff\x00", "c": b"3"}}
        assert over_grpc.client.version() == over_http.client.version()
        over_http.clear()
        assert dict(over_grpc) == {}


def test_watches_of_a_client_share_one_stream_per_member(etcd_endpoint: str) -> None:
    with EtcdClient(etcd_endpoint, transport="grpc") as client:
        watchers = [client.watch_iter(f"shared/{i}") for i in range(8)]
        try:
            for i in range(8):
                client.put(f"shared/{i}", str(i))
            assert [next(w).value for w in watchers] == [str(i) for i in range(8)]
            transport = wire_of(client)
            assert isinstance(transport, GrpcTransport)
            hubs: dict[str, Hub] = transport._hubs
            assert list(hubs) == [etcd_endpoint]
        finally:
            for w in watchers:
                w.close()


def test_a_reply_larger_than_grpcs_default_limit_arrives(etcd_client: EtcdClient,
                                                         etcd_endpoint: str) -> None:
    big = b"x" * (1400 << 10)  # under etcd's 1.5 MiB request limit; 4 of them pass 4 MiB
    for i in range(4):
        etcd_client.put(f"big-reply/{i}", big)
    with EtcdClient(etcd_endpoint, transport="grpc") as client:
        reply = client.range("big-reply/", prefix=True)
        assert [kv.value for kv in reply.kvs] == [big] * 4
    etcd_client.delete_range("big-reply/", prefix=True)


def test_etcds_messages_stay_out_of_protobufs_default_pool() -> None:
    # So python-etcd3's generated modules (same names) can live in the same process.
    from google.protobuf import descriptor_pool

    from etcdmap._transport.grpc import messages
    assert messages.RangeRequest.DESCRIPTOR.full_name == "etcdserverpb.RangeRequest"
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("etcdserverpb.RangeRequest")


def test_batched_reads_have_many_calls_in_flight(etcd_endpoint: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with EtcdMapping(prefix="in-flight", endpoints=etcd_endpoint, transport="grpc") as m:
        m.update({f"k{i}": str(i) for i in range(40)})
        transport = wire_of(m.client)
        assert isinstance(transport, GrpcTransport)
        # As with etcd 3.5.0-3.5.6: no read-only transactions, one range per call.
        monkeypatch.setattr(m.client, "_txn_read_safety", {transport.endpoint: False})
        original = transport._method
        events: list[str] = []  # "sent" for each call made, "waited" for each answer awaited

        class Answer:
            def __init__(self, call: Any) -> None:
                self.call = call

            def result(self, *args: Any, **kwargs: Any) -> Any:
                events.append("waited")
                return self.call.result(*args, **kwargs)

        class Counting:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                events.append("blocking")
                return self.inner(*args, **kwargs)

            def future(self, *args: Any, **kwargs: Any) -> Any:
                events.append("sent")
                return Answer(self.inner.future(*args, **kwargs))

        monkeypatch.setattr(transport, "_method", lambda e, n: Counting(original(e, n)))
        keys = [f"k{i}" for i in range(40)] + ["absent"]
        assert m.getitems(keys) == {f"k{i}": str(i) for i in range(40)}
        # The first leaf fixes the revision; the other 40 are all sent before any
        # answer is awaited; then the absent key's subtree probe.
        assert events == ["blocking"] + ["sent"] * 40 + ["waited"] * 40 + ["blocking"]


def test_keepalives_of_every_lease_share_one_stream_per_member(etcd_endpoint: str) -> None:
    with EtcdClient(etcd_endpoint, transport="grpc") as client:
        transport = wire_of(client)
        assert isinstance(transport, GrpcTransport)
        leases = [client.lease_grant(30).id for _ in range(3)]
        assert [transport.lease_keepalive(lease) for lease in leases] == [30, 30, 30]
        streams = dict(transport._keepalives)
        assert list(streams) == [etcd_endpoint]
        assert [transport.lease_keepalive(lease) for lease in leases] == [30, 30, 30]
        assert transport._keepalives == streams  # the same stream again
        client.lease_revoke(leases[0])
        assert transport.lease_keepalive(leases[0]) == 0  # gone


def test_grpc_runs_no_fork_handlers_and_polls_with_poll_unless_told_otherwise() -> None:
    """What gRPC does around a fork depends on timing unless its handlers are off."""
    names = ("GRPC_POLL_STRATEGY", "GRPC_VERBOSITY", "GRPC_ENABLE_FORK_SUPPORT")
    show = f"""
        import os
        import etcdmap._transport.grpc
        import grpc._cython.cygrpc
        print(*(os.environ[name] for name in {names!r}))
        print(grpc._cython.cygrpc.is_fork_support_enabled())
    """
    env = {k: v for k, v in os.environ.items() if k not in names}
    chosen = subprocess.run([sys.executable, "-c", textwrap.dedent(show)], text=True,
                            capture_output=True, timeout=60, env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split() == ["poll", "ERROR", "false", "False"]
    kept = run_python(show, GRPC_POLL_STRATEGY="epoll1", GRPC_VERBOSITY="INFO",
                      GRPC_ENABLE_FORK_SUPPORT="1")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.split() == ["epoll1", "INFO", "1", "True"]


class _Broken(Exception):
    """A ``grpc.RpcError`` as gRPC reports a connection reset under a call."""

    def code(self) -> Any:
        import grpc
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Stream removed (sendmsg: Connection reset by peer (104))"


def test_a_call_broken_by_a_reset_is_indeterminate_for_a_write_and_retried_for_a_read() -> None:
    from etcdmap import EtcdConnectionError, EtcdIndeterminateWrite
    from etcdmap._transport.grpc.failures import failure

    write = failure(_Broken(), "http://m1", idempotent=False, waited=0.1)
    assert isinstance(write.error, EtcdIndeterminateWrite)
    assert not write.unsent and not write.answered  # never retried blindly
    read = failure(_Broken(), "http://m1", idempotent=True, waited=0.1)
    assert type(read.error) is EtcdConnectionError and not read.answered


def test_a_child_of_a_process_that_ran_grpc_talks_http_and_one_before_keeps_grpc(
        etcd_endpoint: str) -> None:
    """gRPC's core cannot run in a child forked after it started (docs/transports.rst)."""
    proc = run_python(f"""
        import os
        from etcdmap import EtcdClient
        from etcdmap._transport.forked import ForkSafe

        def wire(client):
            return type(client._transport.transport).__name__

        def in_child(work):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = work()
                finally:
                    os._exit(code)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

        client = EtcdClient({etcd_endpoint!r}, transport="grpc")
        def before():  # no channel was opened yet: the child keeps gRPC
            client.put("fork/before", "1")
            return 0 if wire(client) == "GrpcTransport" else 2
        print("before", in_child(before))
        client.put("fork/parent", "1")  # the parent runs gRPC from now on
        def after():
            client.put("fork/after", "1")
            fresh = EtcdClient({etcd_endpoint!r}, transport="grpc")
            ok = (wire(client) == "GatewayTransport"
                  and type(fresh._transport).__name__ == "GatewayTransport"
                  and fresh.get("fork/after").value == "1")
            return 0 if ok else 3
        print("after", in_child(after))
        print("parent", wire(client), client.get("fork/after").value)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["before 0", "after 0", "parent GrpcTransport 1"]
