"""Watches that survive failures: nothing lost, nothing repeated, never a silent hang.

Against real etcds: the module's own server (killed, restarted and paused; the
session server is shared and never harmed) and, for network failures, a TCP
relay in front of the session server whose connections can be frozen (a silent
partition) or cut.  Stream shapes a real server cannot easily be made to send
(an error frame, a stream cut inside a message) come from ``responses``: those
tests are of the gateway's JSON stream (``http_only``).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from helpers import Relay, call_log_of, default_transport, once_watching, url_log_of, wait_until
from helpers import collect as collect_events

from etcdmap import EtcdClient, EtcdCompacted, EtcdPermissionError, EtcdTimeout, Event
from etcdmap._transport import HTTPTransport
from etcdmap._wire.stream import JSONStreamDecoder
from etcdmap.ops import Put
from etcdmap.testing import EtcdServer
from etcdmap.watch import Watcher

_names = itertools.count()

# -- helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    """This module's own etcd, which tests may kill, restart and pause (1 s progress ticks)."""
    with EtcdServer(extra_args=["--experimental-watch-progress-notify-interval=1s"]) as srv:
        yield srv


@pytest.fixture
def own_client(server: EtcdServer) -> Iterator[EtcdClient]:
    """A client of the module's own etcd, patient enough to ride out a restart."""
    with EtcdClient(server.endpoint, timeout=5, retry_deadline=15) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix on the module's own etcd (ends with "/")."""
    return f"resume-{next(_names)}/"


def collect(watcher: Watcher[Any], count: int, timeout: float = 10) -> list[Event[Any]]:
    """Like helpers.collect, with room for a reconnect."""
    return collect_events(watcher, count, timeout, quiet=0.5)


def sending(thread: threading.Thread) -> bool:
    """Whether ``thread`` sent its watch and waits for the answer, on either transport
    (inside the gateway's send, or waiting for etcd to confirm a gRPC watch)."""
    waits = {HTTPTransport._send.__code__}
    if default_transport() == "grpc":
        from etcdmap._transport.grpc.watch import GrpcWatch
        waits.add(GrpcWatch.wait_created.__code__)
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code in waits:
            return True
        frame = frame.f_back
    return False


def watch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "etcdmap-watch"}


# -- server failures ---------------------------------------------------------------------


def test_events_written_before_a_kill_and_after_the_restart_arrive_once_each_in_order(
        server: EtcdServer, own_client: EtcdClient, prefix: str) -> None:
    with own_client.watch_iter(prefix, prefix=True, read_timeout=2) as watcher:
        # Written just before the kill: the watcher may not have read them yet.
        revisions = [own_client.put(f"{prefix}before{i}", str(i)).revision for i in range(5)]
        server.kill()
        server.restart()
        revisions += [own_client.put(f"{prefix}after{i}", str(i)).revision for i in range(5)]
        events = collect(watcher, 10)
    assert [e.revision for e in events] == revisions
    assert [e.key for e in events] == [f"{prefix}before{i}" for i in range(5)] + \
        [f"{prefix}after{i}" for i in range(5)]


def test_a_graceful_restart_mid_watch_loses_and_repeats_nothing(
        server: EtcdServer, own_client: EtcdClient, prefix: str) -> None:
    with own_client.watch_iter(prefix, prefix=True, read_timeout=2) as watcher:
        first = own_client.put(prefix + "a", "1").revision
        assert collect(watcher, 1)[0].revision == first
        server.restart()  # SIGTERM: the gateway ends the stream with an error frame
        later = [own_client.put(prefix + k, "2").revision for k in "bc"]
        assert [e.revision for e in collect(watcher, 2)] == later


def test_a_watch_on_a_frozen_server_keeps_reconnecting_and_resumes_once_it_thaws(
        server: EtcdServer, own_client: EtcdClient, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = call_log_of(own_client, monkeypatch, full=False)
    with own_client.watch_iter(prefix, prefix=True, read_timeout=1) as watcher:
        before = own_client.put(prefix + "a", "1").revision
        assert collect(watcher, 1)[0].revision == before
        server.pause()
        paused = len(log)
        time.sleep(2.5)  # the freeze lasts longer than the read timeout
        server.resume()
        resumed = len(log)
        after = [own_client.put(prefix + k, "2").revision for k in "bc"]
        assert [e.revision for e in collect(watcher, 2)] == after
    # Each read timeout during the freeze was followed by a new attempt.
    assert log[paused:resumed].count("/v3/watch") >= 1, log[paused:resumed]


def test_progress_notifications_advance_the_resume_point(
        server: EtcdServer, own_client: EtcdClient, prefix: str) -> None:
    relay = Relay(server.endpoint)
    try:
        with EtcdClient(relay.endpoint) as via_relay, \
                via_relay.watch_iter(prefix, prefix=True) as watcher:
            # Elsewhere the store moves on; this watch sees no event, only progress.
            latest = [own_client.put(f"other-{prefix}{i}", "x").revision for i in range(3)][-1]
            # The server sends a progress notification every second: wait for one.
            wait_until(lambda: (watcher._reader.resume or 0) >= latest, 10,
                       "a progress notification past the writes")
            own_client.compact(latest)
            relay.cut()  # reconnect: from the progressed revision, not a compacted one
            mine = own_client.put(prefix + "k", "v").revision
            assert [e.revision for e in collect(watcher, 1)] == [mine]
    finally:
        relay.close()


# -- network failures ----------------------------------------------------------------------


def test_a_silently_dead_connection_is_detected_and_the_watch_resumes(
        relay: Relay, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True, read_timeout=1) as watcher:
        first = etcd_client.put(prefix + "a", "1").revision
        assert collect(watcher, 1)[0].revision == first
        relay.freeze()  # the connection stays open, but nothing gets through any more
        later = [etcd_client.put(prefix + k, "2").revision for k in "bc"]
        assert [e.revision for e in collect(watcher, 2, timeout=6)] == later


def test_a_watch_fails_over_to_another_endpoint_and_resumes(
        relay: Relay, etcd_client: EtcdClient, etcd_endpoint: str, etcd_prefix: str) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient([relay.endpoint, etcd_endpoint]) as client, \
            client.watch_iter(prefix, prefix=True) as watcher:
        first = etcd_client.put(prefix + "a", "1").revision
        assert collect(watcher, 1)[0].revision == first
        relay.close()  # this endpoint is gone for good
        later = [etcd_client.put(prefix + k, "2").revision for k in "bc"]
        assert [e.revision for e in collect(watcher, 2, timeout=6)] == later
        assert client.endpoints[0] == etcd_endpoint


def test_a_watch_cut_before_its_first_event_still_starts_from_its_creation(
        relay: Relay, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    prefix = etcd_prefix + "/"
    etcd_client.put(prefix + "old", "history")
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True) as watcher:
        relay.cut()
        new = etcd_client.put(prefix + "new", "1").revision
        assert [(e.key, e.revision) for e in collect(watcher, 1)] == [(prefix + "new", new)]


def test_the_events_of_one_revision_missed_while_disconnected_arrive_together(
        relay: Relay, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True, read_timeout=1) as watcher:
        relay.freeze()
        txn = etcd_client.txn(success=[Put(f"{prefix}{k}".encode(), b"v") for k in "abc"])
        batch = watcher.next_batch(6)
        assert sorted(e.key for e in batch) == [prefix + k for k in "abc"]
        assert {e.revision for e in batch} == {txn.revision}
        assert watcher.next_event(0.5) is None


def test_a_quiet_watch_checks_its_member_and_loses_or_repeats_nothing(
        etcd_endpoint: str, etcd_client: EtcdClient, etcd_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = etcd_prefix + "/"
    revisions: list[int] = []
    with EtcdClient(etcd_endpoint) as own:
        log = url_log_of(own, monkeypatch)
        with own.watch_iter(prefix, prefix=True, read_timeout=0.3) as watcher:
            for burst in range(3):
                revisions += [etcd_client.put(f"{prefix}{burst}-{i}", "v").revision
                              for i in range(3)]
                checks = sum(u.endswith("/v3/kv/range") for u in log)
                # A silence follows each burst: the watch asks its member about it.
                wait_until(lambda c=checks: sum(u.endswith("/v3/kv/range") for u in log) > c,
                           10, "a silence checked")
            events = collect(watcher, 9)
    assert [e.revision for e in events] == revisions
    assert sum(u.endswith("/v3/watch") for u in log) == 1, "a healthy quiet stream was replaced"


def test_resuming_to_a_compacted_revision_raises_etcd_compacted(
        relay: Relay, etcd_client: EtcdClient, etcd_prefix: str) -> None:
    prefix = etcd_prefix + "/"
    with EtcdClient(relay.endpoint) as via_relay, \
            via_relay.watch_iter(prefix, prefix=True) as watcher:
        latest = [etcd_client.put(f"{etcd_prefix}-other/{i}", "x").revision for i in range(3)][-1]
        etcd_client.compact(latest)
        relay.cut()  # the watch must resume from before the compaction
        with pytest.raises(EtcdCompacted) as info:
            watcher.next_event(6)
    assert info.value.compact_revision == latest


# -- never a silent hang, and ending at once ------------------------------------------------


def test_a_blocking_watch_returns_none_on_time(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    started = time.monotonic()
    assert etcd_client.watch(f"{etcd_prefix}/k", timeout=1) is None
    assert 1 <= time.monotonic() - started < 3


def test_a_blocking_watch_returns_the_next_change(
        etcd_client: EtcdClient, etcd_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"{etcd_prefix}/k"
    etcd_client.put(key, "old")
    # The put comes once the watch is established, so it cannot precede the watch.
    writer = once_watching(etcd_client, monkeypatch, lambda: etcd_client.put(key, "new"))
    try:
        event = etcd_client.watch(key, timeout=5)
    finally:
        writer.join()
    assert event is not None
    assert (event.type, event.key, event.value, event.prev_value) == ("PUT", key, "new", "old")


def test_closing_a_watcher_that_waits_on_a_frozen_server_ends_it_at_once(
        server: EtcdServer, own_client: EtcdClient, prefix: str) -> None:
    rev = own_client.put(prefix + "k", "1").revision
    before = watch_threads()
    server.pause()
    try:
        watcher = own_client.watch_iter(prefix + "k", start_revision=rev, read_timeout=20)
        (thread,) = watch_threads() - before
        # Its request is on the way (in the transport's send); no answer will come.
        wait_until(lambda: sending(thread), 5, "the watch sending its request")
        started = time.monotonic()
        watcher.close()
        took = time.monotonic() - started
        alive = thread.is_alive()
    finally:
        server.resume()
    assert took < 2, f"close() took {took:.1f} s"
    assert not alive, "the watch thread outlived close()"


def test_a_blocking_watch_on_a_frozen_server_gives_up_on_time(
        server: EtcdServer, prefix: str) -> None:
    with EtcdClient(server.endpoint, timeout=1) as client:
        server.pause()
        try:
            started = time.monotonic()
            with contextlib.suppress(EtcdTimeout):  # None or a timeout: either is on time
                client.watch(prefix + "k", timeout=1)
            took = time.monotonic() - started
        finally:
            server.resume()
    assert took < 3, f"watch(timeout=1) with a 1 s client timeout took {took:.1f} s"


def test_breaking_out_of_a_for_loop_inside_with_ends_the_watch_thread_at_once(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    rev = etcd_client.put(key, "1").revision
    before = watch_threads()
    started = time.monotonic()
    with etcd_client.watch_iter(key, start_revision=rev) as watcher:
        (thread,) = watch_threads() - before
        for _event in watcher:
            break
    assert not thread.is_alive()
    assert time.monotonic() - started < 2


def test_breaking_out_of_a_bare_for_loop_over_a_watcher_ends_its_thread(
        etcd_client: EtcdClient, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}/k"
    rev = etcd_client.put(key, "1").revision
    before = watch_threads()
    for _event in etcd_client.watch_iter(key, start_revision=rev):
        (thread,) = watch_threads() - before
        break
    try:
        gc.collect()
        thread.join(timeout=2)
        assert not thread.is_alive(), "the watch thread outlived the loop"
    finally:  # don't leave a leaked watch running against the shared server
        leaked = getattr(thread, "_target", None)
        if thread.is_alive() and leaked is not None:
            leaked.__self__.close()


# -- stream shapes from a scripted gateway (responses) -----------------------------------------

GATEWAY = "http://etcd-gateway.invalid:2379"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def created(revision: int) -> dict[str, Any]:
    return {"result": {"header": {"revision": str(revision)}, "created": True}}


def put_event(key: str, value: str, revision: int) -> dict[str, Any]:
    kv = {"key": b64(key), "create_revision": str(revision), "mod_revision": str(revision),
          "version": "1", "value": b64(value)}
    return {"result": {"header": {"revision": str(revision)}, "events": [{"kv": kv}]}}


def lines(*messages: dict[str, Any]) -> str:
    return "".join(json.dumps(m) + "\n" for m in messages)


class ScriptedGateway:
    """Answers each ``/v3/watch`` with the next scripted body; records the requests."""

    def __init__(self, mock: responses.RequestsMock, *bodies: str) -> None:
        self.bodies = list(bodies)
        self.requests: list[dict[str, Any]] = []
        mock.add_callback(responses.POST, f"{GATEWAY}/v3/watch", callback=self._answer)

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}")
        self.requests.append(body["create_request"])
        if self.bodies:
            return 200, {}, self.bodies.pop(0)
        time.sleep(0.1)
        return 503, {}, json.dumps({"code": 14, "message": "etcdserver: no leader"})

    def start_revisions(self) -> list[int | None]:
        return [r.get("start_revision") for r in self.requests]


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def gateway_client() -> Iterator[EtcdClient]:
    with EtcdClient(GATEWAY, timeout=2) as client:
        yield client


@pytest.mark.http_only
def test_an_unavailable_error_frame_reconnects_from_the_last_revision(
        mock: responses.RequestsMock, gateway_client: EtcdClient) -> None:
    unavailable = {"error": {"grpc_code": 14, "http_code": 503, "http_status":
                             "Service Unavailable", "message": "error reading from server: EOF"}}
    gateway = ScriptedGateway(
        mock,
        lines(created(5), put_event("k/a", "1", 6), unavailable),
        lines(created(6), put_event("k/b", "2", 7), put_event("k/c", "3", 8)),
    )
    with gateway_client.watch_iter("k/", prefix=True) as watcher:
        events = collect(watcher, 3)
    assert [(e.key, e.revision) for e in events] == [("k/a", 6), ("k/b", 7), ("k/c", 8)]
    assert gateway.start_revisions()[:2] == [None, 7]
    assert set(gateway.start_revisions()[2:]) <= {9}


@pytest.mark.http_only
def test_a_stream_cut_inside_a_message_resumes_at_that_message(
        mock: responses.RequestsMock, gateway_client: EtcdClient) -> None:
    cut = lines(created(5), put_event("k/a", "1", 6), put_event("k/b", "2", 7))
    cut = cut[:cut.rindex('"kv"')]  # the stream ends half-way through revision 7
    gateway = ScriptedGateway(
        mock, cut, lines(created(6), put_event("k/b", "2", 7), put_event("k/c", "3", 8)))
    with gateway_client.watch_iter("k/", prefix=True) as watcher:
        events = collect(watcher, 3)
    assert [(e.key, e.revision) for e in events] == [("k/a", 6), ("k/b", 7), ("k/c", 8)]
    assert gateway.start_revisions()[:2] == [None, 7]


@pytest.mark.http_only
def test_a_permission_denied_error_frame_raises_etcd_permission_error(
        mock: responses.RequestsMock, gateway_client: EtcdClient) -> None:
    denied = {"error": {"grpc_code": 7, "http_code": 403, "http_status": "Forbidden",
                        "message": "etcdserver: permission denied"}}
    ScriptedGateway(mock, lines(created(5), denied))
    with gateway_client.watch_iter("k/", prefix=True) as watcher, \
            pytest.raises(EtcdPermissionError, match="permission denied"):
        watcher.next_event(5)


def test_a_stream_split_at_any_byte_decodes_every_message_once() -> None:
    messages = [created(5), put_event("k/é", "ünïcode", 6),
                {"error": {"grpc_code": 14, "message": "säy ✓"}}]
    data = lines(*messages).encode()
    for cut in range(1, len(data)):
        decoder = JSONStreamDecoder()
        out = decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.close()
        assert out == messages, f"split at byte {cut}"
