"""How gateway and network failures surface: always as typed etcdmap errors.

Errors a real etcd sends on demand (a 129-op transaction, revoking an unknown
lease, a request that is too large...) are asked of the session's real etcd.
The other responses are mocked (``responses``) because a real server cannot
easily be made to send them here: malformed bodies, network failures, errors
that need a cluster without quorum, auth or a full disk (real ones in
test_cluster.py and test_auth.py), and etcd 3.6's error body shape, as no etcd
3.6 runs here.  Every body follows the shapes in the gateway brief.

The mocked tests are of the gateway transport itself (``http_only``: they
mock ``requests``); the tests against the real etcd run on every transport.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from etcdmap import (
    EtcdAuthError,
    EtcdClient,
    EtcdCompacted,
    EtcdConnectionError,
    EtcdError,
    EtcdIndeterminateWrite,
    EtcdInvalidArgument,
    EtcdLeaseNotFound,
    EtcdOutOfRange,
    EtcdPermissionError,
    EtcdProtocolError,
    EtcdQuotaExceeded,
    EtcdRequestTooLarge,
    EtcdServerError,
    EtcdTimeout,
    EtcdUnavailable,
)
from etcdmap.ops import Range

A = "http://etcd-a.invalid:2379"
B = "http://etcd-b.invalid:2379"
HEADER = {"cluster_id": "1", "member_id": "2", "revision": "7", "raft_term": "2"}


def body_v35(code: int, message: str) -> dict[str, Any]:
    """The unary error body of etcd 3.4 and 3.5."""
    return {"error": message, "code": code, "message": message}


def body_v36(code: int, message: str) -> dict[str, Any]:
    """The unary error body of etcd 3.6: no "error" key."""
    return {"code": code, "message": message}


def raises_exactly(cls: type[BaseException], call: Callable[[], object]) -> Any:
    """Run ``call``; it must raise ``cls`` itself, not a subclass or a raw exception."""
    with pytest.raises(BaseException) as info:
        call()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    return info.value


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def client() -> Iterator[EtcdClient]:
    # retry_deadline=0: an error that would be retried is raised at once.
    with EtcdClient(A, timeout=1.0, retry_deadline=0) as c:
        yield c


# -- malformed success responses --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "<html>not json</html>",
        '{"header":{"revision":"1"',
        "[]",
        '"just a string"',
        '{"header":{"revision":"seven"}}',
        '{"kvs":[{"key":"!!!"}]}',
        '{"kvs":"Zm9v"}',
        '{"header":"oops"}',
    ],
    ids=["garbage", "truncated", "array", "string", "bad-int", "bad-base64", "kvs-not-list",
         "header-not-object"],
)
@pytest.mark.http_only
def test_a_malformed_200_body_raises_protocol_error(mock, client, body) -> None:
    mock.post(f"{A}/v3/kv/range", body=body, status=200, content_type="application/json")
    raises_exactly(EtcdProtocolError, lambda: client.range("k"))


@pytest.mark.parametrize(
    ("path", "body", "call"),
    [
        ("/v3/cluster/member/list", {"header": HEADER, "members": ["m1"]},
         lambda c: c.members()),
        ("/v3/maintenance/status", {"header": "oops", "version": "3.5.1"},
         lambda c: c.status()),
        ("/v3/lease/keepalive", {"result": "oops"}, lambda c: c.lease_keepalive_once(1)),
        ("/v3/lease/grant", {"header": HEADER, "ID": "abc", "TTL": "5"},
         lambda c: c.lease_grant(5)),
    ],
    ids=["members", "status", "keepalive", "grant"],
)
@pytest.mark.http_only
def test_malformed_nested_fields_raise_protocol_error(mock, client, path, body, call) -> None:
    mock.post(A + path, json=body)
    raises_exactly(EtcdProtocolError, lambda: call(client))


@pytest.mark.http_only
def test_garbage_from_the_version_endpoint_raises_protocol_error(mock, client) -> None:
    mock.get(f"{A}/version", body="<html>", content_type="text/html")
    raises_exactly(EtcdProtocolError, client.version)


# -- error bodies ------------------------------------------------------------------

ERRORS = [
    (400, 3, "etcdserver: key is not provided", EtcdInvalidArgument),
    (400, 3, "etcdserver: too many operations in txn request", EtcdRequestTooLarge),
    (400, 3, "etcdserver: request is too large", EtcdRequestTooLarge),
    (429, 8, "grpc: received message larger than max (3145738 vs. 2097152)",
     EtcdRequestTooLarge),
    (400, 3, "etcdserver: authentication failed, invalid user ID or password", EtcdAuthError),
    (400, 3, "etcdserver: user name is empty", EtcdAuthError),
    (404, 5, "etcdserver: requested lease not found", EtcdLeaseNotFound),
    (403, 7, "etcdserver: permission denied", EtcdPermissionError),
    (429, 8, "etcdserver: mvcc: database space exceeded", EtcdQuotaExceeded),
    (400, 9, "etcdserver: lease already exists", EtcdServerError),
    (400, 11, "etcdserver: mvcc: required revision has been compacted", EtcdCompacted),
    (400, 11, "etcdserver: mvcc: required revision is a future revision", EtcdOutOfRange),
    (400, 11, "etcdserver: too large lease TTL", EtcdOutOfRange),
    (503, 14, "etcdserver: no leader", EtcdUnavailable),
    (503, 14, "etcdserver: leader changed", EtcdUnavailable),
    (401, 16, "etcdserver: invalid auth token", EtcdAuthError),
]


def _revoke_a_revoked_lease(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(5).id
    client.lease_revoke(lease)
    client.lease_revoke(lease)


def _grant_an_existing_lease(client: EtcdClient, prefix: str) -> None:
    lease = client.lease_grant(5).id
    try:
        client.lease_grant(5, lease_id=lease)
    finally:
        client.lease_revoke(lease)


# The rows of ERRORS a real etcd 3.5 sends on demand, and how to make it.
REAL: dict[str, Callable[[EtcdClient, str], object]] = {
    "etcdserver: key is not provided": lambda c, p: c.put("", "v"),
    "etcdserver: too many operations in txn request":
        lambda c, p: c.txn(success=[Range(f"{p}/{i}".encode()) for i in range(129)]),
    "etcdserver: request is too large": lambda c, p: c.put(f"{p}/k", "x" * 1_600_000),
    "grpc: received message larger than max (3145738 vs. 2097152)":
        lambda c, p: c.put(f"{p}/k", "x" * 2_200_000),
    "etcdserver: requested lease not found": _revoke_a_revoked_lease,
    "etcdserver: lease already exists": _grant_an_existing_lease,
    "etcdserver: mvcc: required revision is a future revision":
        lambda c, p: c.range(f"{p}/k", revision=c.range(f"{p}/k").revision + 1000),
    "etcdserver: too large lease TTL": lambda c, p: c.lease_grant(10**11),
}
MOCKED_ONLY = [e for e in ERRORS if e[2] not in REAL]


def _ids(errors: list[tuple[int, int, str, type[EtcdError]]]) -> list[str]:
    return [e[2].split(": ")[-1][:30] for e in errors]


def _sizes_dropped(message: str) -> str:
    """``message`` without the byte counts etcd puts in "(3145738 vs. 2097152)"."""
    return re.sub(r"\(\d+ vs\. \d+\)", "(N vs. N)", message)


def test_the_real_errors_are_rows_of_the_table() -> None:
    assert set(REAL) <= {e[2] for e in ERRORS}


@pytest.mark.parametrize(("status", "code", "message", "cls"),
                         [e for e in ERRORS if e[2] in REAL],
                         ids=_ids([e for e in ERRORS if e[2] in REAL]))
def test_errors_a_real_etcd_sends_map_to_typed_errors(etcd_endpoint, etcd_prefix, status, code,
                                                      message, cls) -> None:
    with EtcdClient(etcd_endpoint, timeout=5, retry_deadline=0) as client:
        err = raises_exactly(cls, lambda: REAL[message](client, etcd_prefix))
    assert (err.code, err.status, _sizes_dropped(err.message)) == (
        code, status, _sizes_dropped(message))


@pytest.mark.parametrize(("status", "code", "message", "cls"), MOCKED_ONLY, ids=_ids(MOCKED_ONLY))
@pytest.mark.http_only
def test_mocked_etcd35_error_bodies_map_to_typed_errors(mock, client, status, code, message,
                                                        cls) -> None:
    mock.post(f"{A}/v3/kv/range", json=body_v35(code, message), status=status)
    err = raises_exactly(cls, lambda: client.range("k"))
    assert (err.code, err.status, err.message) == (code, status, message)


@pytest.mark.parametrize(("status", "code", "message", "cls"), ERRORS, ids=_ids(ERRORS))
@pytest.mark.http_only
def test_mocked_etcd36_error_bodies_map_to_typed_errors(mock, client, status, code, message,
                                                        cls) -> None:
    mock.post(f"{A}/v3/kv/range", json=body_v36(code, message), status=status)
    err = raises_exactly(cls, lambda: client.range("k"))
    assert (err.code, err.status, err.message) == (code, status, message)


@pytest.mark.http_only
def test_an_invalid_argument_is_also_a_value_error(mock, client) -> None:
    mock.post(f"{A}/v3/kv/range", json=body_v35(3, "etcdserver: key is not provided"),
              status=400)
    with pytest.raises(ValueError):
        client.range("k")


@pytest.mark.http_only
def test_permission_denied_is_also_a_permission_error(mock, client) -> None:
    mock.post(f"{A}/v3/kv/put", json=body_v36(7, "etcdserver: permission denied"), status=403)
    with pytest.raises(PermissionError):
        client.put("k", "v")


@pytest.mark.http_only
def test_too_many_txn_ops_in_etcd36s_body_shape_raises_request_too_large(mock, client) -> None:
    # The same against a real etcd 3.5: test_errors_a_real_etcd_sends_map_to_typed_errors.
    mock.post(f"{A}/v3/kv/txn", status=400,
              json=body_v36(3, "etcdserver: too many operations in txn request"))
    ops = [Range(b"k%d" % i) for i in range(129)]
    raises_exactly(EtcdRequestTooLarge, lambda: client.txn(success=ops))


@pytest.mark.http_only
def test_revoking_an_unknown_lease_in_etcd36s_body_shape_raises_lease_not_found(mock,
                                                                              client) -> None:
    # The same against a real etcd 3.5: test_errors_a_real_etcd_sends_map_to_typed_errors.
    mock.post(f"{A}/v3/lease/revoke", status=404,
              json=body_v36(5, "etcdserver: requested lease not found"))
    raises_exactly(EtcdLeaseNotFound, lambda: client.lease_revoke(1))


@pytest.mark.parametrize(("status", "text"), [(500, "Internal Server Error"),
                                              (502, "Bad Gateway")])
@pytest.mark.http_only
def test_a_plain_text_5xx_raises_a_server_error_with_its_status(mock, client, status,
                                                                text) -> None:
    mock.post(f"{A}/v3/kv/range", body=text + "\n", status=status, content_type="text/plain")
    with pytest.raises(EtcdServerError) as info:
        client.range("k")
    assert info.value.status == status
    assert text in info.value.message


@pytest.mark.http_only
def test_a_plain_text_404_from_an_unknown_path_is_not_lease_not_found(mock, client) -> None:
    # What the gateway answers on a path it does not serve (e.g. a wrong API prefix).
    mock.post(f"{A}/v3/kv/range", body="404 page not found\n", status=404,
              content_type="text/plain")
    err = raises_exactly(EtcdServerError, lambda: client.range("k"))
    assert err.status == 404


# -- network failures --------------------------------------------------------------


@pytest.mark.http_only
def test_a_connection_error_raises_etcd_connection_error(mock, client) -> None:
    mock.post(f"{A}/v3/kv/range", body=requests.ConnectionError("connection reset by peer"))
    err = raises_exactly(EtcdConnectionError, lambda: client.range("k"))
    assert isinstance(err, ConnectionError)
    # The cause is the failure in one line, not urllib3's chain of internals.
    assert isinstance(err.__cause__, OSError)
    assert "connection reset by peer" in str(err.__cause__)
    assert err.__cause__.__cause__ is None and err.__cause__.__suppress_context__


@pytest.mark.http_only
def test_a_read_timeout_on_a_read_raises_etcd_timeout(mock, client) -> None:
    mock.post(f"{A}/v3/kv/range", body=requests.ReadTimeout("read timed out"))
    err = raises_exactly(EtcdTimeout, lambda: client.range("k"))
    assert isinstance(err, TimeoutError)


@pytest.mark.http_only
def test_a_read_timeout_on_a_write_raises_indeterminate_write_without_retry(mock) -> None:
    mock.post(f"{A}/v3/kv/put", body=requests.ReadTimeout("read timed out"))
    mock.post(f"{B}/v3/kv/put", json={"header": HEADER})
    with EtcdClient([A, B], timeout=1.0, retry_deadline=10) as client:
        raises_exactly(EtcdIndeterminateWrite, lambda: client.put("k", "v"))
    assert len(mock.calls) == 1


@pytest.mark.http_only
def test_a_refused_connection_on_a_write_fails_over(mock) -> None:
    # The request never left: retrying the write elsewhere is safe.
    refused = NewConnectionError(None, "Failed to establish a new connection: refused")
    mock.post(f"{A}/v3/kv/put",
              body=requests.ConnectionError(MaxRetryError(None, f"{A}/v3/kv/put", refused)))
    mock.post(f"{B}/v3/kv/put", json={"header": HEADER})
    with EtcdClient([A, B], timeout=1.0, retry_deadline=10) as client:
        assert client.put("k", "v").revision == 7
    assert [c.request.url for c in mock.calls] == [f"{A}/v3/kv/put", f"{B}/v3/kv/put"]


@pytest.mark.http_only
def test_no_leader_on_a_write_is_retried_on_the_next_endpoint(mock) -> None:
    mock.post(f"{A}/v3/kv/put", status=503, json=body_v35(14, "etcdserver: no leader"))
    mock.post(f"{B}/v3/kv/put", json={"header": HEADER})
    with EtcdClient([A, B], timeout=1.0, retry_deadline=10) as client:
        assert client.put("k", "v").revision == 7
        assert client.endpoints[0] == B
    assert [c.request.url for c in mock.calls] == [f"{A}/v3/kv/put", f"{B}/v3/kv/put"]


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, body_v35(14, "etcdserver: request timed out")),
     (503, body_v36(14, "etcdserver: request timed out, possibly due to previous leader failure")),
     (500, body_v35(2, "context deadline exceeded"))],
    ids=["timed-out", "timed-out-leader-failure", "deadline-exceeded"],
)
@pytest.mark.http_only
def test_an_ambiguous_write_failure_is_not_retried(mock, status, body) -> None:
    mock.post(f"{A}/v3/kv/put", status=status, json=body)
    mock.post(f"{B}/v3/kv/put", json={"header": HEADER})
    with EtcdClient([A, B], timeout=1.0, retry_deadline=10) as client:
        err = raises_exactly(EtcdIndeterminateWrite, lambda: client.put("k", "v"))
    assert isinstance(err.__cause__, EtcdUnavailable | EtcdServerError)
    assert len(mock.calls) == 1


@pytest.mark.http_only
def test_an_unavailable_read_is_retried_on_the_next_endpoint(mock) -> None:
    mock.post(f"{A}/v3/kv/range", status=503, json=body_v35(14, "etcdserver: leader changed"))
    mock.post(f"{B}/v3/kv/range", json={"header": HEADER, "count": "0"})
    with EtcdClient([A, B], timeout=1.0, retry_deadline=10) as client:
        assert client.range("k").revision == 7
    assert len(mock.calls) == 2


# -- authentication ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "call"),
    [("/v3/kv/range", lambda c: c.range("k")), ("/v3/kv/put", lambda c: c.put("k", "v"))],
    ids=["read", "write"],
)
@pytest.mark.http_only
def test_a_401_reauthenticates_once_and_retries(mock, path, call) -> None:
    auth = f"{A}/v3/auth/authenticate"
    mock.post(auth, json={"header": HEADER, "token": "token-1"})
    mock.post(auth, json={"header": HEADER, "token": "token-2"})
    mock.post(A + path, status=401, json=body_v35(16, "etcdserver: invalid auth token"))
    mock.post(A + path, json={"header": HEADER})
    with EtcdClient(A, username="alice", password="alicepw", timeout=1.0) as client:
        call(client)
    sent = [(c.request.url, c.request.headers.get("Authorization")) for c in mock.calls]
    assert sent == [(auth, None), (A + path, "token-1"), (auth, None), (A + path, "token-2")]


@pytest.mark.http_only
def test_a_persistent_401_raises_auth_error_after_one_reauthentication(mock) -> None:
    auth = f"{A}/v3/auth/authenticate"
    mock.post(auth, json={"header": HEADER, "token": "token"})
    mock.post(f"{A}/v3/kv/range", status=401,
              json=body_v36(16, "etcdserver: invalid auth token"))
    with EtcdClient(A, username="alice", password="alicepw", timeout=1.0) as client:
        raises_exactly(EtcdAuthError, lambda: client.range("k"))
    assert [c.request.url for c in mock.calls] == [auth, f"{A}/v3/kv/range"] * 2


@pytest.mark.http_only
def test_a_wrong_password_raises_auth_error(mock) -> None:
    mock.post(f"{A}/v3/auth/authenticate", status=400, json=body_v35(
        3, "etcdserver: authentication failed, invalid user ID or password"))
    with EtcdClient(A, username="alice", password="wrong", timeout=1.0) as client:
        raises_exactly(EtcdAuthError, lambda: client.range("k"))


def test_every_error_is_an_etcd_error() -> None:
    for cls in (EtcdAuthError, EtcdCompacted, EtcdConnectionError, EtcdIndeterminateWrite,
                EtcdProtocolError, EtcdTimeout, EtcdUnavailable):
        assert issubclass(cls, EtcdError)
