"""The transport when the other end is not a healthy etcd: nothing there, not etcd, too slow.

Real sockets throughout: a port nothing listens on, a tiny HTTP server that
is not etcd, a server that trickles its reply, and a relay that goes silent.
``responses`` only for reply bodies a real etcd never sends (a short txn
reply, absurd nesting): those, and the gateway's own texts, are ``http_only``.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import responses
from helpers import Relay, call_log_of, default_transport

from etcdmap import (
    EtcdClient,
    EtcdConnectionError,
    EtcdIndeterminateWrite,
    EtcdProtocolError,
    EtcdServerError,
    EtcdTimeout,
)
from etcdmap._wire.stream import JSONStreamDecoder
from etcdmap.ops import Range
from etcdmap.testing import free_port

# -- nothing listens -----------------------------------------------------------------------

NO_ETCD = textwrap.dedent("""
    import time
    from etcdmap import EtcdMapping
    started = time.monotonic()
    try:
        EtcdMapping("app")["x"]
    finally:
        print(f"took {time.monotonic() - started:.2f}", flush=True)
""")


def test_with_nothing_listening_the_first_call_fails_soon_with_a_short_clear_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([sys.executable, "-c", NO_ETCD], capture_output=True, text=True,
                          timeout=60, env={"ETCDCTL_ENDPOINTS": endpoint, "PATH": "",
                                           "ETCDMAP_TRANSPORT": default_transport()})
    assert proc.returncode == 1
    took = float(proc.stdout.split()[-1])
    # etcdctl's dial timeout (2 s), not the 5 s request timeout: the old client took 5.2 s.
    assert took < 4.0, took
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("etcdmap.errors.EtcdConnectionError: cannot connect to etcd at "
                                f"{endpoint}"), lines[-1]
    assert "ETCDCTL_ENDPOINTS" in lines[-1] and "etcdmap serve" in lines[-1]
    assert "urllib3" not in proc.stderr and "requests" not in proc.stderr
    # Our own frames and the one-line cause; the old chain of urllib3 internals was ~60 lines.
    assert len(lines) < 40, proc.stderr
    assert ("ConnectionRefusedError: [Errno 111] Connection refused"
            if default_transport() == "http" else "Connection refused") in proc.stderr


def test_an_explicit_retry_deadline_rides_out_a_late_start() -> None:
    # Someone who sets retry_deadline means it: the call waits for the server.
    port = free_port()
    with EtcdClient(f"http://127.0.0.1:{port}", timeout=1, retry_deadline=30) as client:
        from etcdmap.testing import EtcdServer
        result: list[object] = []
        calling = threading.Thread(target=lambda: result.append(client.range("k").count))
        calling.start()
        try:
            with EtcdServer(client_port=port) as server:
                calling.join(40)
                assert result == [0], result
                assert server.running
        finally:
            calling.join(40)


# -- something that is not etcd answers ---------------------------------------------------


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    status = 501
    content_type = "text/html"
    body = b"<html><body><h1>501 Not Implemented</h1></body></html>"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        if self.content_type:
            self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def web_server() -> Iterator[str]:
    yield from _serve(_NotEtcd)


class _Empty404(_NotEtcd):
    status = 404
    content_type = ""
    body = b""


@pytest.fixture
def empty_404() -> Iterator[str]:
    yield from _serve(_Empty404)


class _Html200(_NotEtcd):
    status = 200


@pytest.fixture
def html_200() -> Iterator[str]:
    yield from _serve(_Html200)


@pytest.mark.parametrize("fixture", ["web_server", "empty_404", "html_200"])
def test_a_server_that_is_not_etcd_is_a_protocol_error_at_once(
        fixture: str, request: pytest.FixtureRequest) -> None:
    endpoint: str = request.getfixturevalue(fixture)
    with EtcdClient(endpoint, timeout=2, retry_deadline=10) as client:
        started = time.monotonic()
        with pytest.raises(EtcdProtocolError) as info:
            client.range("k")
        took = time.monotonic() - started
    message = str(info.value)
    assert endpoint in message and "<html>" not in message and "\n" not in message
    assert took < 2.0, took  # an answer, however wrong, is not retried until the deadline


@pytest.mark.http_only  # the gateway's wording: HTTP status and content type
@pytest.mark.parametrize("fixture", ["web_server", "empty_404", "html_200"])
def test_a_server_that_is_not_etcd_is_named_in_one_line(
        fixture: str, request: pytest.FixtureRequest) -> None:
    endpoint: str = request.getfixturevalue(fixture)
    with EtcdClient(endpoint, timeout=2) as client, \
            pytest.raises(EtcdProtocolError) as info:
        client.range("k")
    message = str(info.value)
    status, kind = {"web_server": (501, "text/html"), "empty_404": (404, "no content type"),
                    "html_200": (200, "text/html")}[fixture]
    assert message == (f"{endpoint} does not answer like an etcd v3 gateway "
                       f"(HTTP {status}, {kind})")
    assert "<html>" not in message and "\n" not in message


@pytest.mark.http_only  # a gateway path of its own
def test_a_plain_text_error_names_its_endpoint(etcd_endpoint: str) -> None:
    # A real etcd on a path it does not serve answers a line of plain text.
    with EtcdClient(etcd_endpoint) as client, pytest.raises(EtcdServerError) as info:
        client._transport.http.call("/v3/no/such/path", {}, idempotent=True)
    assert info.value.status == 404
    assert str(info.value) == f"Not Found (HTTP 404 from {etcd_endpoint})"


@pytest.mark.http_only
@responses.activate
def test_a_txn_reply_with_too_few_answers_is_a_protocol_error() -> None:
    endpoint = "http://etcd.invalid:2379"
    responses.post(f"{endpoint}/v3/kv/txn", json={
        "header": {"revision": "5"}, "succeeded": True,
        "responses": [{"response_range": {"header": {"revision": "5"}}}]})
    with EtcdClient(endpoint, timeout=1) as client, \
            pytest.raises(EtcdProtocolError, match="a transaction of 2 ops got 1 answers"):
        client.txn(success=[Range(b"a"), Range(b"b")])


@pytest.mark.http_only
@responses.activate
def test_a_txn_reply_with_answers_of_the_wrong_kind_is_a_protocol_error() -> None:
    endpoint = "http://etcd.invalid:2379"
    responses.post(f"{endpoint}/v3/kv/txn", json={
        "header": {"revision": "5"}, "succeeded": True,
        "responses": [{"response_put": {}}, {"response_put": {}}]})
    with EtcdClient(endpoint, timeout=1) as client, pytest.raises(EtcdProtocolError):
        client.txn(success=[Range(b"a"), Range(b"b")])


@pytest.mark.http_only
@responses.activate
def test_absurdly_nested_json_is_a_protocol_error() -> None:
    endpoint = "http://etcd.invalid:2379"
    responses.post(f"{endpoint}/v3/kv/range", body="[" * 100_000 + "]" * 100_000,
                   content_type="application/json")
    with EtcdClient(endpoint, timeout=1) as client, pytest.raises(EtcdProtocolError):
        client.range("k")


@pytest.mark.http_only
@responses.activate
def test_absurdly_nested_txn_replies_are_a_protocol_error() -> None:
    endpoint = "http://etcd.invalid:2379"
    depth = 5000
    body = '{"responses":[{"response_txn":' * depth + "{}" + "}]}" * depth
    responses.post(f"{endpoint}/v3/kv/txn", body=body, content_type="application/json")
    with EtcdClient(endpoint, timeout=1) as client, pytest.raises(EtcdProtocolError):
        client.txn()


def test_absurdly_nested_json_in_a_watch_stream_is_a_protocol_error() -> None:
    decoder = JSONStreamDecoder()
    with pytest.raises(EtcdProtocolError):
        decoder.feed(("[" * 100_000 + "]" * 100_000 + "\n").encode())


# -- a server that trickles its reply --------------------------------------------------------

REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


class Trickler:
    """Answers every request with a valid reply, one byte every ``pause`` seconds."""

    def __init__(self, reply: bytes = REPLY, pause: float = 0.3):
        self._reply, self._pause = reply, pause
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for byte in self._reply:
                    if self._stop.wait(self._pause):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    t = Trickler()
    yield t
    t.close()


def test_a_call_ends_within_its_deadline_however_slowly_the_reply_trickles(
        trickler: Trickler) -> None:
    with EtcdClient(trickler.endpoint, timeout=1, retry_deadline=1) as client:
        started = time.monotonic()
        with pytest.raises(EtcdTimeout):
            client.range("k")
        took = time.monotonic() - started
    # One second per attempt, two attempts at most; the old client took 14 s
    # (each byte came within the 1 s socket timeout).
    assert took < 4.0, took


@pytest.mark.http_only  # over gRPC a trickle is no HTTP/2 connection, so nothing was sent
def test_a_write_cut_off_by_its_deadline_is_indeterminate(trickler: Trickler) -> None:
    with EtcdClient(trickler.endpoint, timeout=1, retry_deadline=5) as client:
        started = time.monotonic()
        with pytest.raises(EtcdIndeterminateWrite):
            client.put("k", "v")
        assert time.monotonic() - started < 3.0  # never retried: it may have applied


def test_a_watch_set_up_ends_within_its_deadline(trickler: Trickler) -> None:
    with EtcdClient(trickler.endpoint, timeout=1, retry_deadline=1) as client:
        started = time.monotonic()
        with pytest.raises(EtcdConnectionError):
            client.watch_iter("k")  # "from now" waits for the watch to be established
        assert time.monotonic() - started < 4.0


# -- a member that goes silent ---------------------------------------------------------------


def test_a_write_whose_answer_never_comes_is_indeterminate_at_its_deadline(
        relay: Relay, etcd_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with EtcdClient([relay.endpoint, etcd_endpoint], timeout=1, retry_deadline=5) as client:
        client.range("k")  # connected through the relay
        sent = call_log_of(client, monkeypatch, full=True)
        relay.freeze()  # the request goes out; no answer comes back
        started = time.monotonic()
        with pytest.raises(EtcdIndeterminateWrite):
            client.put("k", "v")
        took = time.monotonic() - started
    assert 0.9 < took < 3.0, took  # the timeout
    assert sent == [relay.endpoint + "/v3/kv/put"]  # never retried elsewhere: it may have applied


def test_a_read_whose_answer_never_comes_times_out_at_its_deadline(relay: Relay) -> None:
    with EtcdClient(relay.endpoint, timeout=1, retry_deadline=1) as client:
        client.range("k")
        relay.freeze()
        started = time.monotonic()
        with pytest.raises(EtcdTimeout):
            client.range("k")
        took = time.monotonic() - started
    assert 0.9 < took < 4.0, took
