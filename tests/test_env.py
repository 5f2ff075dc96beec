"""etcdctl's environment variables, against real servers; explicit arguments win.

The TLS server here asks for client certificates and has auth on (user alice,
read-write on ``app/``), so one client built from the environment alone shows
ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY and ETCDCTL_USER
all taking effect.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import trustme

from etcdmap import EtcdAuthError, EtcdClient, EtcdConnectionError, EtcdMapping, EtcdTimeout
from etcdmap.testing import EtcdServer, TLSFiles, free_port

VARIABLES = ("ENDPOINTS", "CACERT", "CERT", "KEY", "USER", "PASSWORD", "DIAL_TIMEOUT")
ALICE_PASSWORD = "alice:Pw-3e8a"  # a colon too: ETCDCTL_USER splits at the first one


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean etcdctl environment for each test."""
    for name in VARIABLES:
        monkeypatch.delenv(f"ETCDCTL_{name}", raising=False)
    return monkeypatch


@dataclass(frozen=True)
class Pki:
    ca: str
    cert: str
    key: str
    combined: str
    stranger_ca: str
    stranger_cert: str
    stranger_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d: Path = tmp_path_factory.mktemp("env-tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("client@etcdmap.test")  # no CommonName: auth is on (brief §12)
    stranger = other.issue_cert("client@etcdmap.test")

    def write(name: str, blob: trustme.Blob) -> str:
        blob.write_to_path(str(d / name))
        return str(d / name)

    write("server.pem", server.cert_chain_pems[0])
    write("server.key", server.private_key_pem)
    return Pki(
        ca=write("ca.pem", ca.cert_pem),
        cert=write("client.pem", client.cert_chain_pems[0]),
        key=write("client.key", client.private_key_pem),
        combined=write("combined.pem", client.private_key_and_cert_chain_pem),
        stranger_ca=write("stranger-ca.pem", other.cert_pem),
        stranger_cert=write("stranger.pem", stranger.cert_chain_pems[0]),
        stranger_key=write("stranger.key", stranger.private_key_pem),
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def secure(pki: Pki) -> Iterator[str]:
    """An etcd with TLS, client certificates and auth (alice on app/)."""
    d = Path(pki.ca).parent
    tls = TLSFiles(ca=pki.ca, cert=str(d / "server.pem"), key=str(d / "server.key"),
                   client_cert_auth=True, client_cert=pki.cert, client_key=pki.key)
    with EtcdServer(tls=tls) as server:
        for path, body in [
            ("user/add", {"name": "root", "password": "root-Pw-0b7d"}),
            ("user/grant", {"user": "root", "role": "root"}),
            ("role/add", {"name": "app"}),
            ("role/grant", {"name": "app", "perm": {
                "permType": "READWRITE", "key": b64("app/"), "range_end": b64("app0")}}),
            ("user/add", {"name": "alice", "password": ALICE_PASSWORD}),
            ("user/grant", {"user": "alice", "role": "app"}),
            ("enable", {}),
        ]:
            resp = requests.post(f"{server.endpoint}/v3/auth/{path}", json=body, timeout=10,
                                 **server.requests_kwargs())
            assert resp.status_code == 200, (path, resp.text)
        yield server.endpoint


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def round_trip(client: EtcdClient, key: str) -> None:
    value = f"v{time.monotonic_ns()}"
    client.put(key, value)
    assert client.get(key).value == value


# -- ETCDCTL_ENDPOINTS -------------------------------------------------------------------


def test_etcdctl_endpoints_is_used_with_failover(
        env: pytest.MonkeyPatch, etcd_endpoint: str, etcd_prefix: str) -> None:
    dead = dead_endpoint()
    env.setenv("ETCDCTL_ENDPOINTS", f"{dead},{etcd_endpoint}")
    with EtcdClient(timeout=2) as client:
        assert client.endpoints == [dead, etcd_endpoint]
        round_trip(client, f"{etcd_prefix}/k")
        assert client.endpoints[0] == etcd_endpoint
    with EtcdMapping(etcd_prefix) as m:  # a mapping without a client builds one the same way
        assert m.client.endpoints == [dead, etcd_endpoint]
        m["via-env"] = "yes"
        assert m["via-env"] == "yes"


def test_explicit_endpoints_win_over_etcdctl_endpoints(
        env: pytest.MonkeyPatch, etcd_endpoint: str, etcd_prefix: str) -> None:
    env.setenv("ETCDCTL_ENDPOINTS", dead_endpoint())
    with EtcdClient(etcd_endpoint, timeout=2) as client:
        assert client.endpoints == [etcd_endpoint]
        round_trip(client, f"{etcd_prefix}/k")
    with EtcdMapping(etcd_prefix, endpoints=etcd_endpoint) as m:
        assert m["k"]


# -- ETCDCTL_DIAL_TIMEOUT -------------------------------------------------------------------


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint that accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def times_out_after(client: EtcdClient, low: float, high: float) -> None:
    started = time.monotonic()
    with pytest.raises(EtcdTimeout):
        client.range("k")
    took = time.monotonic() - started
    assert low <= took < high, took


def test_etcdctl_dial_timeout_bounds_each_call(env: pytest.MonkeyPatch, silent: str) -> None:
    env.setenv("ETCDCTL_DIAL_TIMEOUT", "1s")
    with EtcdClient(silent, retry_deadline=0) as client:
        assert client.timeout == 1.0
        times_out_after(client, 0.9, 2.0)


def test_an_explicit_timeout_wins_over_etcdctl_dial_timeout(
        env: pytest.MonkeyPatch, silent: str) -> None:
    env.setenv("ETCDCTL_DIAL_TIMEOUT", "30s")
    with EtcdClient(silent, timeout=0.3, retry_deadline=0) as client:
        assert client.timeout == 0.3
        times_out_after(client, 0.25, 1.5)


@pytest.mark.parametrize(("duration", "seconds"), [("500ms", 0.5), ("1m30s", 90.0)])
def test_etcdctl_dial_timeout_takes_go_durations(
        env: pytest.MonkeyPatch, duration: str, seconds: float) -> None:
    env.setenv("ETCDCTL_DIAL_TIMEOUT", duration)
    with EtcdClient("http://127.0.0.1:2379") as client:
        assert client.timeout == seconds


# -- TLS and the user ----------------------------------------------------------------------


def set_tls_env(env: pytest.MonkeyPatch, endpoint: str, pki: Pki) -> None:
    env.setenv("ETCDCTL_ENDPOINTS", endpoint)
    env.setenv("ETCDCTL_CACERT", pki.ca)
    env.setenv("ETCDCTL_CERT", pki.cert)
    env.setenv("ETCDCTL_KEY", pki.key)


def test_the_environment_alone_configures_tls_and_the_user(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_USER", f"alice:{ALICE_PASSWORD}")
    with EtcdClient(timeout=5) as client:
        round_trip(client, "app/env-user-colon")
        assert ALICE_PASSWORD not in repr(client)
    with EtcdMapping("app") as m:
        m["env-mapping"] = "1"
        assert m["env-mapping"] == "1"


def test_etcdctl_user_with_etcdctl_password(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_USER", "alice")
    env.setenv("ETCDCTL_PASSWORD", ALICE_PASSWORD)
    with EtcdClient(timeout=5) as client:
        round_trip(client, "app/env-password")


def test_a_wrong_password_from_the_environment_stays_secret(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_USER", "alice:not-Her-Pw-51c2")
    with EtcdClient(timeout=5) as client, pytest.raises(EtcdAuthError) as info:
        client.range("app/x")
    assert "not-Her-Pw-51c2" not in str(info.value) and "not-Her-Pw-51c2" not in repr(client)


def test_explicit_credentials_win_over_etcdctl_user(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_USER", "alice:wrong")
    env.setenv("ETCDCTL_PASSWORD", "wrong too")
    with EtcdClient(username="alice", password=ALICE_PASSWORD, timeout=5) as client:
        round_trip(client, "app/explicit-user")


def test_without_the_environment_the_tls_server_refuses(secure: str, pki: Pki) -> None:
    """The control: the variables above are what made those clients work."""
    with EtcdClient(secure, timeout=2, retry_deadline=2) as client, \
            pytest.raises(EtcdConnectionError):
        client.range("app/x")


def test_explicit_ca_cert_wins_over_etcdctl_cacert(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_CACERT", pki.stranger_ca)
    env.setenv("ETCDCTL_USER", f"alice:{ALICE_PASSWORD}")
    with EtcdClient(timeout=2, retry_deadline=2) as client, \
            pytest.raises(EtcdConnectionError, match="verify"):
        client.range("app/x")  # the environment's CA alone cannot verify the server
    with EtcdClient(ca_cert=pki.ca, timeout=5) as client:
        round_trip(client, "app/explicit-ca")


def test_explicit_cert_and_key_win_over_the_environment(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_CERT", pki.stranger_cert)
    env.setenv("ETCDCTL_KEY", pki.stranger_key)
    env.setenv("ETCDCTL_USER", f"alice:{ALICE_PASSWORD}")
    with EtcdClient(timeout=2, retry_deadline=2) as client, \
            pytest.raises(EtcdConnectionError, match="client certificate"):
        client.range("app/x")
    with EtcdClient(cert=pki.cert, key=pki.key, timeout=5) as client:
        round_trip(client, "app/explicit-cert")
    with EtcdClient(ssl_cert=pki.cert, ssl_key=pki.key, timeout=5) as client:
        round_trip(client, "app/explicit-ssl-cert")


def test_an_explicit_combined_pem_wins_over_etcdctl_key(
        env: pytest.MonkeyPatch, secure: str, pki: Pki) -> None:
    set_tls_env(env, secure, pki)
    env.setenv("ETCDCTL_CERT", pki.stranger_cert)
    env.setenv("ETCDCTL_KEY", pki.stranger_key)
    env.setenv("ETCDCTL_USER", f"alice:{ALICE_PASSWORD}")
    with EtcdClient(ssl_cert=pki.combined, timeout=2, retry_deadline=2) as client:
        round_trip(client, "app/explicit-combined")
