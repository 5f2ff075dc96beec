"""etcd auth against real servers: tokens, their expiry, and permission-limited roles.

Two servers for the module, both with auth enabled through the v3 JSON API:
one with simple tokens that expire after 2 s idle (``--auth-token-ttl 2``),
one with JWTs that expire 2 s after issue and carry the auth revision, so a
role change makes them stale.  Users: root (root role), alice (read-write on
``app/``), bob (read-only on ``app/``).

Requests are recorded with each one's token, on either transport
(``helpers.record_calls``): the server answers them all, the recorder only
notes what went out.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import AUTH_PATH as AUTH
from helpers import Recorder, Relay, record_calls, wait_until

from etcdmap import (
    EtcdAuthError,
    EtcdClient,
    EtcdIndeterminateWrite,
    EtcdMapping,
    EtcdPermissionError,
)
from etcdmap.ops import Compare, Put, Range
from etcdmap.testing import EtcdServer

TTL = 2  # seconds, for both kinds of token
PASSWORDS = {"root": "root-Pw-1f9c", "alice": "alice-Pw-7d2e", "bob": "bob-Pw-c4a1"}


@pytest.fixture(autouse=True)
def _no_etcdctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENDPOINTS", "CACERT", "CERT", "KEY", "USER", "PASSWORD", "DIAL_TIMEOUT"):
        monkeypatch.delenv(f"ETCDCTL_{name}", raising=False)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(endpoint: str, path: str, body: dict[str, Any], token: str | None = None
         ) -> requests.Response:
    headers = {"Authorization": token} if token else {}
    return requests.post(endpoint + path, json=body, headers=headers, timeout=10)


def token_of(endpoint: str, user: str) -> str:
    resp = post(endpoint, AUTH, {"name": user, "password": PASSWORDS[user]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def enable_auth(endpoint: str) -> None:
    """root, alice (READWRITE app/) and bob (READ app/), then auth on."""
    app = {"key": b64("app/"), "range_end": b64("app0")}
    for path, body in [
        ("user/add", {"name": "root", "password": PASSWORDS["root"]}),
        ("user/grant", {"user": "root", "role": "root"}),
        ("role/add", {"name": "app-rw"}),
        ("role/grant", {"name": "app-rw", "perm": {"permType": "READWRITE", **app}}),
        ("role/add", {"name": "app-ro"}),
        ("role/grant", {"name": "app-ro", "perm": {"permType": "READ", **app}}),
        ("user/add", {"name": "alice", "password": PASSWORDS["alice"]}),
        ("user/grant", {"user": "alice", "role": "app-rw"}),
        ("user/add", {"name": "bob", "password": PASSWORDS["bob"]}),
        ("user/grant", {"user": "bob", "role": "app-ro"}),
        ("enable", {}),
    ]:
        resp = post(endpoint, f"/v3/auth/{path}", body)
        assert resp.status_code == 200, (path, resp.text)
    # Auth is really on: no token, no access.
    assert post(endpoint, "/v3/kv/range", {"key": b64("app/x")}).status_code == 400


@pytest.fixture(scope="module")
def simple_auth() -> Iterator[str]:
    with EtcdServer(extra_args=["--auth-token-ttl", str(TTL)]) as server:
        enable_auth(server.endpoint)
        yield server.endpoint


@pytest.fixture(scope="module")
def jwt_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d: Path = tmp_path_factory.mktemp("jwt")
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "priv.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    spec = f"jwt,pub-key={d / 'pub.pem'},priv-key={d / 'priv.pem'},sign-method=ES256,ttl={TTL}s"
    with EtcdServer(extra_args=["--auth-token", spec]) as server:
        enable_auth(server.endpoint)
        yield server.endpoint


def recorded_client(endpoint: str, user: str, *, timeout: float = 5
                    ) -> tuple[EtcdClient, Recorder]:
    client = EtcdClient(endpoint, username=user, password=PASSWORDS[user], timeout=timeout)
    return client, record_calls(client)


def unique(name: str) -> str:
    return f"app/{name}-{time.monotonic_ns()}"


# -- tokens ----------------------------------------------------------------------------


def test_the_token_goes_with_every_request(simple_auth: str) -> None:
    client, rec = recorded_client(simple_auth, "alice")
    key = unique("token")
    with client:
        client.put(key, "1")
        assert client.get(key).value == "1"
        client.delete(key)
    assert rec.logins() == 1 and len(rec.tokens) == 1
    token = rec.tokens[0]
    assert rec.sent[0] == (AUTH, None)  # the password goes out without a token
    assert [t for _, t in rec.sent[1:]] == [token] * 3


def test_a_wrong_password_is_an_auth_error_that_never_shows_the_password(
        simple_auth: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Pw-9b1e"
    with EtcdClient(simple_auth, username="alice", password=wrong, timeout=5) as client:
        with pytest.raises(EtcdAuthError) as info:
            client.range("app/x")
        assert "authentication failed" in str(info.value)
        assert wrong not in repr(client)
    rendered = "".join(traceback.format_exception(info.value))  # with the chained causes
    assert wrong not in rendered and wrong not in repr(info.value)
    assert wrong not in caplog.text


def test_an_unknown_user_is_an_auth_error(simple_auth: str) -> None:
    with EtcdClient(simple_auth, username="mallory", password="x", timeout=5) as client, \
            pytest.raises(EtcdAuthError):
        client.range("app/x")


def test_no_credentials_on_a_server_with_auth_is_an_auth_error(simple_auth: str) -> None:
    with EtcdClient(simple_auth, timeout=5) as client, pytest.raises(EtcdAuthError) as info:
        client.range("app/x")
    assert "user name is empty" in str(info.value)


@pytest.mark.timeout(60)
def test_an_expired_token_is_renewed_by_one_thread_for_all(simple_auth: str) -> None:
    client, rec = recorded_client(simple_auth, "alice")
    threads = 8
    keys = [unique(f"stampede{i}") for i in range(threads)]
    with client:
        for key in keys:
            client.put(key, "0")
        first = rec.tokens[-1]
        time.sleep(TTL + 1.5)  # idle: the simple token expires
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def work(key: str) -> None:
            try:
                barrier.wait()
                assert client.testandset(key, "0", "1").value == "1"
                assert client.get(key).value == "1"
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(k,)) for k in keys]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert errors == []
        assert rec.logins() == 2, rec.sent  # the first login, then exactly one renewal
        assert len(set(rec.tokens)) == 2
        for key in keys:
            assert client.range(key).kvs[0].version == 2  # each swap applied exactly once
    # The first token really had expired.
    assert post(simple_auth, "/v3/kv/range", {"key": b64(keys[0])}, first).status_code == 401


@pytest.mark.timeout(60)
def test_a_jwt_past_its_ttl_is_renewed(jwt_auth: str) -> None:
    client, rec = recorded_client(jwt_auth, "alice")
    key = unique("jwt")
    with client, EtcdMapping("app", client=client) as m:
        name = key.removeprefix("app/")
        m[name] = "0"
        first = rec.tokens[-1]
        time.sleep(TTL + 1.5)  # exp has whole seconds: gone within TTL + 1 s
        assert m.replace(name, "0", "1") is True
        assert m[name] == "1"
        assert rec.logins() == 2
        assert client.range(key).kvs[0].version == 2
    resp = post(jwt_auth, "/v3/kv/range", {"key": b64(key)}, first)
    assert resp.status_code == 401, resp.text


@pytest.mark.timeout(60)
def test_a_role_change_makes_the_jwt_stale_and_the_client_logs_in_again(
        jwt_auth: str) -> None:
    """A JWT carries the auth revision; after any role change etcd refuses it (HTTP 500).

    A write refused so is not applied: the client must not call it indeterminate.
    """
    client, rec = recorded_client(jwt_auth, "alice")
    key = unique("revision")
    with client:
        client.put(key, "0")
        first = rec.tokens[-1]
        root = token_of(jwt_auth, "root")
        role = f"r{time.monotonic_ns()}"
        assert post(jwt_auth, "/v3/auth/role/add", {"name": role}, root).status_code == 200
        stale = post(jwt_auth, "/v3/kv/range", {"key": b64(key)}, first)
        assert "old" in stale.text, stale.text  # the server does refuse the old token
        k = key.encode()
        resp = client.txn([Compare(k, "VALUE", "==", b"0")], [Put(k, b"1")], [Range(k)])
        assert resp.succeeded
        assert rec.logins() == 2
        assert client.range(key).kvs[0].version == 2
        # And a read after the next change.
        assert post(jwt_auth, "/v3/auth/role/delete", {"role": role}, root).status_code == 200
        assert client.get(key).value == "1"
        assert rec.logins() == 3


def test_a_watch_sends_the_token(simple_auth: str) -> None:
    """A watch as the client's very first request: it must log in first."""
    client, rec = recorded_client(simple_auth, "alice")
    key = unique("watch")
    with client, client.watch_iter(key) as watcher:
        post(simple_auth, "/v3/kv/put", {"key": b64(key), "value": b64("w")},
             token_of(simple_auth, "alice"))
        event = watcher.next_event(timeout=10)
    assert event is not None and event.value == "w"
    assert rec.sent[0] == (AUTH, None)
    assert rec.sent[1] == ("/v3/watch", rec.tokens[0])


def test_a_watch_outside_the_role_raises_permission_error(simple_auth: str) -> None:
    client, _ = recorded_client(simple_auth, "alice", timeout=2)
    started = time.monotonic()
    with client, pytest.raises(EtcdPermissionError):  # noqa: SIM117 (the watch raises)
        with client.watch_iter("other/key") as watcher:
            watcher.next_event(timeout=10)
    assert time.monotonic() - started < 3


@pytest.mark.timeout(60)
def test_a_watch_that_reconnects_with_an_expired_jwt_renews_it_and_resumes(
        jwt_auth: str) -> None:
    # etcd cancels a watch made with an expired token with "permission denied"
    # (etcd-io/etcd#12385), not "invalid auth token": renew once and go on.
    relay = Relay(jwt_auth)
    key = unique("jwt-watch")
    try:
        with EtcdClient(relay.endpoint, username="alice", password=PASSWORDS["alice"],
                        timeout=5) as client, client.watch_iter(key) as watcher:
            stale = client._transport.policy.token
            assert stale
            wait_until(lambda: post(jwt_auth, "/v3/kv/range", {"key": b64(key)},
                                    stale).status_code == 401, 10, "the JWT expired")
            relay.cut()  # the watch reconnects, with the expired token
            put = post(jwt_auth, "/v3/kv/put", {"key": b64(key), "value": b64("after")},
                       token_of(jwt_auth, "alice"))
            assert put.status_code == 200, put.text
            event = watcher.next_event(timeout=10)
            assert client._transport.policy.token != stale
    finally:
        relay.close()
    assert event is not None and (event.key, event.value) == (key, "after")


def test_a_watch_as_the_first_call_with_a_wrong_password_raises_auth_error_at_once(
        simple_auth: str) -> None:
    started = time.monotonic()
    with EtcdClient(simple_auth, username="alice", password="wrong", timeout=5) as client, \
            pytest.raises(EtcdAuthError) as info:
        client.watch_iter(unique("watch"))
    # Not "watch not established" after the 5 s timeout: the login failed, say so.
    assert time.monotonic() - started < 3
    assert "authentication failed" in str(info.value) and "wrong" not in str(info.value)
    assert not [t for t in threading.enumerate()
                if t.name == "etcdmap-watch" and t.is_alive()], "a watch thread lives on"


def test_lease_keepalive_with_auth(simple_auth: str) -> None:
    client, _ = recorded_client(simple_auth, "alice")
    key = unique("lease")
    with client:
        lease = client.lease(3)
        client.put(key, "leased", lease=lease.id)
        time.sleep(3.5)  # longer than the lease's TTL
        assert not lease.expired
        assert client.get(key).value == "leased"
        lease.revoke()
        assert client.range(key).kvs == ()


# -- permissions ---------------------------------------------------------------------------


DENIED_MAPPING_OPS: dict[str, Callable[[EtcdMapping], object]] = {
    "getitem": lambda m: m["x"],
    "get with default": lambda m: m.get("x", "default"),
    "contains": lambda m: "x" in m,
    "iter": lambda m: list(m),
    "len": len,
    "bool": bool,
    "keys": lambda m: list(m.keys()),
    "items": lambda m: list(m.items()),
    "values": lambda m: list(m.values()),
    "to_dict": lambda m: m.to_dict(),
    "eq": lambda m: m == {},
    "setitem": lambda m: m.__setitem__("x", "1"),
    "delitem": lambda m: m.__delitem__("x"),
    "pop with default": lambda m: m.pop("x", None),
    "popitem": lambda m: m.popitem(),
    "setdefault": lambda m: m.setdefault("x", "1"),
    "replace": lambda m: m.replace("x", "0", "1"),
    "update": lambda m: m.update({"x": "1", "y": "2"}),
    "clear": lambda m: m.clear(),
}


@pytest.fixture(scope="module")
def alice(simple_auth: str) -> Iterator[EtcdClient]:
    with EtcdClient(simple_auth, username="alice", password=PASSWORDS["alice"],
                    timeout=5) as client:
        yield client


@pytest.mark.parametrize("op", DENIED_MAPPING_OPS.values(), ids=DENIED_MAPPING_OPS.keys())
@pytest.mark.parametrize("prefix", ["other", "", "ap", "app0"])
def test_a_mapping_outside_the_role_raises_permission_error_never_key_error(
        alice: EtcdClient, prefix: str, op: Callable[[EtcdMapping], object]) -> None:
    m = EtcdMapping(prefix, client=alice)
    with pytest.raises(EtcdPermissionError) as info:
        op(m)
    assert isinstance(info.value, PermissionError)
    assert not isinstance(info.value, (KeyError, EtcdIndeterminateWrite))


def test_a_mapping_inside_the_role_works(alice: EtcdClient) -> None:
    name = unique("inside").removeprefix("app/")
    m = EtcdMapping("app", client=alice).submapping(name)
    assert m.to_dict() == {} and len(m) == 0 and "x" not in m and m.get("x") is None
    with pytest.raises(KeyError):
        m["x"]
    m.update({"x": "1", "dir/y": "2"})
    assert m.setdefault("x", "9") == "1"
    assert m.replace("x", "1", "2") is True
    assert m.to_dict() == {"x": "2", "dir": {"y": "2"}}
    assert m.pop("dir") == {"y": "2"}
    m.clear()
    assert dict(m) == {}


def test_client_calls_outside_the_role_raise_permission_error(alice: EtcdClient) -> None:
    calls: list[Callable[[], object]] = [
        lambda: alice.range("other/x"),
        lambda: alice.range("", prefix=True),  # every key
        lambda: alice.range("app/", "\0"),  # app/ and on, past the role's range
        lambda: alice.put("other/x", "1"),
        lambda: alice.delete_range("other/x"),
        lambda: alice.txn([Compare(b"other/x", "VERSION", "==", 0)], [Put(b"app/x", b"1")]),
        lambda: alice.get("other/x"),
        lambda: alice.set("other/x", "1"),
        lambda: alice.testandset("other/x", "0", "1"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(EtcdPermissionError):
            call()
        assert time.monotonic() - started < 2  # refused, not retried


def test_a_read_only_role_reads_but_cannot_write(simple_auth: str, alice: EtcdClient) -> None:
    key = unique("ro")
    alice.put(key, "by alice")
    with EtcdClient(simple_auth, username="bob", password=PASSWORDS["bob"],
                    timeout=5) as bob:
        m = EtcdMapping("app", client=bob)
        name = key.removeprefix("app/")
        assert m[name] == "by alice" and name in m
        for write in (lambda: m.__setitem__(name, "by bob"), lambda: m.pop(name),
                      lambda: m.replace(name, "by alice", "by bob")):
            with pytest.raises(EtcdPermissionError):
                write()
        assert m[name] == "by alice"


def test_secrets_stay_out_of_reprs_errors_and_logs(
        simple_auth: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, rec = recorded_client(simple_auth, "alice")
    messages: list[str] = []
    with client:
        m = EtcdMapping("app", client=client)
        m[unique("secret").removeprefix("app/")] = "v"
        for denied in (lambda: client.put("other/x", "1"), lambda: EtcdMapping(
                "other", client=client)["x"]):
            with pytest.raises(EtcdPermissionError) as info:
                denied()
            messages.append("".join(traceback.format_exception(info.value)))
        shown = [repr(client), str(client), repr(m), *messages, caplog.text]
    secrets = [PASSWORDS["alice"], *rec.tokens]
    assert rec.tokens
    for secret in secrets:
        for text in shown:
            assert secret not in text
