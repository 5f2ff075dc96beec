"""One benchmark worker process: one client library, driven by JSON lines.

``benchmarks/run.py`` starts one worker per library (etcdmap over the JSON
gateway, etcdmap over gRPC, plain requests, etcd3gw, python-etcd3) and sends it
operations one at a time, round by round, so every library is timed the same
way, in a process of its own, side by side.
The module imports only the standard library at the top: python-etcd3 may run
in a separate virtualenv (an older Python with protobuf<3.21) that has nothing
else installed.

Protocol: one JSON object per line on stdin, ``{"op": name, "args": {...}}``;
one JSON object per line on the original stdout, ``{"ok": result}`` or
``{"error": traceback}``.  Anything the libraries print goes to stderr.

``--once OP`` runs a single operation in a fresh process and measures its peak
memory (``--mem rss``: the growth of the peak RSS; ``--mem tracemalloc``: the
peak of Python allocations), for workload 5.
"""

from __future__ import annotations

import argparse
import base64
import gc
import http.client
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

perf = time.perf_counter
cpu = time.process_time  # every thread of this process: the client's own work

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def keys_of(prefix: str, n: int) -> list[str]:
    """The benchmark's key names: ``<prefix>k000000`` ..."""
    return [f"{prefix}k{i:06d}" for i in range(n)]


def names_of(n: int) -> list[str]:
    return [f"k{i:06d}" for i in range(n)]


def value_of(i: int) -> str:
    return f"value-{i:06d}"


def prefix_end(p: bytes) -> bytes:
    for i in range(len(p) - 1, -1, -1):
        if p[i] < 0xFF:
            return p[:i] + bytes([p[i] + 1])
    return b"\0"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class GatewayWriter:
    """The same writer for every library's watch test: stdlib HTTP/1.1 puts."""

    def __init__(self, endpoint: str):
        parts = urlsplit(endpoint)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=10)

    def put(self, key: str, value: str) -> None:
        body = json.dumps({"key": b64(key.encode()), "value": b64(value.encode())})
        self.conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"writer put failed: HTTP {resp.status}")

    def close(self) -> None:
        self.conn.close()


def watch_latency(endpoint: str, key: str, n: int,
                  start: Callable[[], tuple[Any, Callable[[], None]]],
                  value_of_event: Callable[[Any], Any]) -> list[float]:
    """Put ``n`` times; the latency from just before each put to the event.

    ``start()`` opens the library's watch and returns ``(iterator, stop)``.  A
    consumer thread reads the iterator; each value is the send time in ns.
    """
    events, stop = start()
    latencies: list[float] = []
    got = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for event in events:
                received = time.monotonic_ns()
                raw = value_of_event(event)
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                latencies.append((received - int(text)) / 1e9)
                got.set()
                if len(latencies) >= n:
                    return
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            got.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    writer = GatewayWriter(endpoint)
    try:
        time.sleep(0.05)  # let the watch settle
        for _ in range(n):
            got.clear()
            writer.put(key, str(time.monotonic_ns()))
            if not got.wait(10) or failure:
                raise RuntimeError(f"watch event not received: {failure!r}")
            time.sleep(0.002)  # one event in flight at a time, no batching
    finally:
        writer.close()
        stop()
    thread.join(2)
    return latencies


def loop(fn: Callable[[Any], Any], items: list[Any]) -> dict[str, Any]:
    """The per-op harness of every library: total time and each call's latency."""
    lat = []
    append = lat.append
    c0, start = cpu(), perf()
    for item in items:
        t0 = perf()
        fn(item)
        append(perf() - t0)
    return {"seconds": perf() - start, "cpu": cpu() - c0, "n": len(items), "lat": lat}


class Clock:
    """Wall and CPU time of a block: ``with Clock() as clk: ...``."""

    def __enter__(self) -> Clock:
        self.c0, self.t0 = cpu(), perf()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds, self.cpu = perf() - self.t0, cpu() - self.c0

    def result(self, n: int = 1) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu": self.cpu, "n": n}


def lookups(obj: Any, keys: list[str]) -> dict[str, Any]:
    """Workload 6's harness, the same for the cache, the mapping and a dict."""
    with Clock() as clk:
        for k in keys:
            obj[k]
    return clk.result(len(keys))


# -- the libraries -----------------------------------------------------------------------


class Lib:
    """Each method ``op_<workload>_<variant>`` returns ``{"seconds": s, "n": ops}``."""

    name = "?"

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname or "127.0.0.1", int(parts.port or 2379)

    def info(self) -> dict[str, Any]:
        return {"python": sys.version.split()[0], "executable": sys.executable}

    def close(self) -> None:
        pass


class EtcdmapLib(Lib):
    """etcdmap over its default transport, the JSON gateway (requests)."""

    name = "etcdmap"
    transport = "http"

    def __init__(self, endpoint: str):
        super().__init__(endpoint)
        if REPO in sys.path:
            sys.path.remove(REPO)
        sys.path.insert(0, REPO)  # measure the checkout, not some other install
        import etcdmap
        from etcdmap import EtcdClient, EtcdMapping

        if not os.path.abspath(etcdmap.__file__).startswith(REPO + os.sep):
            raise RuntimeError(f"imported etcdmap from {etcdmap.__file__}, not from {REPO}")
        self.etcdmap = etcdmap
        # The transport is explicit: ETCDMAP_TRANSPORT in the environment changes nothing.
        self.c = EtcdClient(endpoint, timeout=30, transport=self.transport)
        self.EtcdMapping = EtcdMapping
        self.cache: Any = None
        self.plain: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        import requests
        import urllib3

        return {**super().info(), "etcdmap": self.etcdmap.__version__,
                "etcdmap_file": self.etcdmap.__file__, "transport": self.transport,
                "transport_class": type(self.c._transport).__name__,
                "requests": requests.__version__, "urllib3": urllib3.__version__,
                "grpc_imported": "grpc" in sys.modules}

    def m(self, prefix: str) -> Any:
        return self.EtcdMapping(prefix.rstrip("/"), client=self.c)

    def warm(self, prefix: str) -> None:
        self.c.range(prefix + "k000000")

    # 1. single key
    def op_get_range(self, prefix: str, n: int) -> dict[str, Any]:
        return loop(self.c.range, keys_of(prefix, n))

    def op_get_get(self, prefix: str, n: int) -> dict[str, Any]:
        return loop(self.c.get, keys_of(prefix, n))

    def op_get_mapping(self, prefix: str, n: int) -> dict[str, Any]:
        return loop(self.m(prefix).__getitem__, names_of(n))

    def op_put_put(self, prefix: str, n: int) -> dict[str, Any]:
        put = self.c.put
        pairs = [(k, value_of(i)) for i, k in enumerate(keys_of(prefix, n))]
        return loop(lambda kv: put(*kv), pairs)

    def op_put_mapping(self, prefix: str, n: int) -> dict[str, Any]:
        setitem = self.m(prefix).__setitem__
        pairs = [(k, value_of(i)) for i, k in enumerate(names_of(n))]
        return loop(lambda kv: setitem(*kv), pairs)

    # 2. read a subtree
    def op_subtree_to_dict(self, prefix: str, expect: int) -> dict[str, Any]:
        m = self.m(prefix)
        with Clock() as clk:
            d = m.to_dict()
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    def op_subtree_range_iter(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            d = {kv.key: kv.value for kv in self.c.range_iter(prefix, prefix=True)}
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    def op_subtree_range(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            d = {kv.key: kv.value for kv in self.c.range(prefix, prefix=True).kvs}
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    # 8. getitems: one read of many keys against a get per key
    def _some_keys(self, size: int, k: int) -> list[str]:
        names = names_of(size)
        return [names[(i * 7919) % size] for i in range(k)]  # spread over the subtree

    def _txn_reads(self, force: bool) -> Callable[[], None]:
        """``force``: pretend the member is etcd >= 3.5.7; returns what undoes it."""
        safety = self.c._txn_read_safety
        saved = dict(safety)
        if force:
            safety[self.c._transport.endpoint] = True

        def restore() -> None:
            safety.clear()
            safety.update(saved)

        return restore

    def op_getitems_getitems(self, prefix: str, size: int, k: int, reps: int,
                             force_txn_reads: bool = False) -> dict[str, Any]:
        m = self.m(prefix)
        keys = self._some_keys(size, k)
        restore = self._txn_reads(force_txn_reads)
        try:
            if force_txn_reads:
                assert self.c.txn_reads
            check = m.getitems(keys)
            assert len(check) == k, (len(check), k)
            r = loop(m.getitems, [keys] * reps)
        finally:
            restore()
        r["txn_reads"] = bool(force_txn_reads or self.c.txn_reads)
        return r

    def op_getitems_mapping(self, prefix: str, size: int, k: int,
                            reps: int) -> dict[str, Any]:
        getitem = self.m(prefix).__getitem__
        keys = self._some_keys(size, k)

        def singles(ks: list[str]) -> None:
            for key in ks:
                getitem(key)

        return loop(singles, [keys] * reps)

    def op_getitems_get(self, prefix: str, size: int, k: int, reps: int) -> dict[str, Any]:
        get = self.c.get
        keys = [prefix + name for name in self._some_keys(size, k)]

        def singles(ks: list[str]) -> None:
            for key in ks:
                get(key)

        return loop(singles, [keys] * reps)

    # 3. write many keys
    def op_write_update(self, prefix: str, n: int) -> dict[str, Any]:
        m = self.m(prefix)
        data = {name: value_of(i) for i, name in enumerate(names_of(n))}
        with Clock() as clk:
            m.update(data)
        return clk.result()

    def op_write_put_each(self, prefix: str, n: int) -> dict[str, Any]:
        r = self.op_put_put(prefix, n)
        return {"seconds": r["seconds"], "cpu": r["cpu"], "n": 1}

    def op_write_txn_puts(self, prefix: str, n: int) -> dict[str, Any]:
        from etcdmap.ops import Put

        puts = [Put(k.encode(), value_of(i).encode()) for i, k in enumerate(keys_of(prefix, n))]
        step = self.c.max_txn_ops
        with Clock() as clk:
            for i in range(0, n, step):
                self.c.txn(success=puts[i:i + step])
        return clk.result()

    # 4. len and membership
    def op_len_len(self, prefix: str, expect: int) -> dict[str, Any]:
        m = self.m(prefix)
        with Clock() as clk:
            n = len(m)
        assert n == expect, (n, expect)
        return clk.result()

    def op_len_count_only(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            n = self.c.range(prefix, prefix=True, count_only=True).count
        assert n == expect, (n, expect)
        return clk.result()

    def op_contains_in(self, prefix: str, n: int) -> dict[str, Any]:
        m = self.m(prefix)

        def check(k: str) -> None:
            if k not in m:
                raise AssertionError(k)

        return loop(check, names_of(n))

    def op_contains_count_only(self, prefix: str, n: int) -> dict[str, Any]:
        r = self.c.range

        def check(k: str) -> None:
            if not r(k, count_only=True).count:
                raise AssertionError(k)

        return loop(check, keys_of(prefix, n))

    # 5. iterate a huge subtree
    def op_iterate_items(self, prefix: str, expect: int) -> dict[str, Any]:
        m = self.m(prefix)
        n = 0
        with Clock() as clk:
            for _name, _value in m.items():
                n += 1
        assert n == expect, (n, expect)
        return clk.result()

    def op_iterate_range_iter(self, prefix: str, expect: int) -> dict[str, Any]:
        n = 0
        with Clock() as clk:
            for _kv in self.c.range_iter(prefix, prefix=True):
                n += 1
        assert n == expect, (n, expect)
        return clk.result()

    # 6. cached reads: the same harness for the cache, the mapping and a dict
    def op_cached_setup(self, prefix: str, expect: int) -> dict[str, Any]:
        m = self.m(prefix)
        if self.cache is not None:
            self.cache.close()
        with Clock() as clk:
            self.cache = m.cached()
        self.plain = m.to_dict()
        assert len(self.cache) == len(self.plain) == expect
        return clk.result()

    def _lookup_keys(self, size: int, n: int) -> list[str]:
        names = names_of(size)
        return [names[(i * 7919) % size] for i in range(n)]  # spread over the subtree

    def op_cached_cached(self, size: int, n: int) -> dict[str, Any]:
        return lookups(self.cache, self._lookup_keys(size, n))

    def op_cached_dict(self, size: int, n: int) -> dict[str, Any]:
        return lookups(self.plain, self._lookup_keys(size, n))

    def op_cached_uncached(self, prefix: str, size: int, n: int) -> dict[str, Any]:
        return lookups(self.m(prefix), self._lookup_keys(size, n))

    # 7. watch latency
    def op_watch_watch(self, key: str, n: int) -> dict[str, Any]:
        def start() -> tuple[Any, Callable[[], None]]:
            w = self.c.watch_iter(key)
            return w, w.close

        lat = watch_latency(self.endpoint, key, n, start, lambda e: e.value)
        return {"latencies": lat}

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.c.close()


class EtcdmapGrpcLib(EtcdmapLib):
    """etcdmap over its optional gRPC transport (grpcio, protobuf)."""

    name = "etcdmap-grpc"
    transport = "grpc"

    def info(self) -> dict[str, Any]:
        import grpc
        from google.protobuf import __version__ as pb_version
        from google.protobuf.internal import api_implementation

        return {**super().info(), "grpcio": grpc.__version__, "protobuf": pb_version,
                "protobuf_impl": api_implementation.Type()}


class RequestsLib(Lib):
    """The naive client (``Session.post``) and requests' floor (``HTTPAdapter.send``)."""

    name = "requests"

    def __init__(self, endpoint: str):
        super().__init__(endpoint)
        import requests

        self.requests = requests
        self.naive = requests.Session()
        self.floor = requests.Session()
        self.adapter = self.floor.get_adapter(endpoint)

    def info(self) -> dict[str, Any]:
        import urllib3

        return {**super().info(), "requests": self.requests.__version__,
                "urllib3": urllib3.__version__}

    def warm(self, prefix: str) -> None:
        self.naive.post(self.endpoint + "/v3/kv/range", json={"key": b64(b"warm")}).json()
        self.adapter.send(self._prepare("/v3/kv/range", {"key": b64(b"warm")}), timeout=30)

    # The very headers and body bytes etcdmap sends, so the floor differs only
    # in the client work around the send.
    HEADERS: ClassVar[dict[str, str]] = {
        "Content-Type": "application/json", "Accept": "application/json",
        "Grpc-Metadata-hasleader": "true",
    }

    def _prepare(self, path: str, body: dict[str, Any]) -> Any:
        req = self.requests.Request("POST", self.endpoint + path,
                                    data=json.dumps(body, separators=(",", ":")).encode(),
                                    headers=self.HEADERS)
        return self.floor.prepare_request(req)

    def _send_all(self, preps: list[Any]) -> dict[str, Any]:
        send = self.adapter.send

        def one(prep: Any) -> None:
            send(prep, timeout=30).content  # noqa: B018 (read the body, as any client must)

        return loop(one, preps)

    def op_get_floor(self, prefix: str, n: int) -> dict[str, Any]:
        preps = [self._prepare("/v3/kv/range", {"key": b64(k.encode())})
                 for k in keys_of(prefix, n)]
        return self._send_all(preps)

    def op_get_naive(self, prefix: str, n: int) -> dict[str, Any]:
        post, url = self.naive.post, self.endpoint + "/v3/kv/range"

        def one(k: str) -> None:
            reply = post(url, json={"key": b64(k.encode())}).json()
            base64.b64decode(reply["kvs"][0].get("value", ""))

        return loop(one, keys_of(prefix, n))

    def op_put_floor(self, prefix: str, n: int) -> dict[str, Any]:
        prep = self._prepare("/v3/kv/put", {"key": b64(f"{prefix}k000000".encode()),
                                            "value": b64(value_of(0).encode())})
        return self._send_all([prep] * n)

    def op_put_naive(self, prefix: str, n: int) -> dict[str, Any]:
        post, url = self.naive.post, self.endpoint + "/v3/kv/put"
        pairs = [(k, value_of(i)) for i, k in enumerate(keys_of(prefix, n))]

        def one(kv: tuple[str, str]) -> None:
            post(url, json={"key": b64(kv[0].encode()), "value": b64(kv[1].encode())}).json()

        return loop(one, pairs)

    def _range_body(self, prefix: str, **extra: Any) -> dict[str, Any]:
        p = prefix.encode()
        return {"key": b64(p), "range_end": b64(prefix_end(p)), **extra}

    def op_subtree_floor(self, prefix: str, expect: int) -> dict[str, Any]:
        prep = self._prepare("/v3/kv/range", self._range_body(prefix))
        r = self._send_all([prep])
        return {"seconds": r["seconds"], "cpu": r["cpu"], "n": 1}

    def op_subtree_naive(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            reply = self.naive.post(self.endpoint + "/v3/kv/range",
                                    json=self._range_body(prefix)).json()
            d = {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
                 for kv in reply.get("kvs", [])}
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    def op_len_count_only(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            reply = self.naive.post(self.endpoint + "/v3/kv/range",
                                    json=self._range_body(prefix, count_only=True)).json()
        assert int(reply.get("count", 0)) == expect
        return clk.result()

    def close(self) -> None:
        self.naive.close()
        self.floor.close()


class Etcd3gwLib(Lib):
    name = "etcd3gw"

    def __init__(self, endpoint: str):
        super().__init__(endpoint)
        import etcd3gw

        self.mod = etcd3gw
        self.g = etcd3gw.client(host=self.host, port=self.port, timeout=30)

    def info(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {**super().info(), "etcd3gw": version("etcd3gw")}

    def warm(self, prefix: str) -> None:
        self.g.get(prefix + "k000000")

    def op_get_get(self, prefix: str, n: int) -> dict[str, Any]:
        return loop(self.g.get, keys_of(prefix, n))

    def op_put_put(self, prefix: str, n: int) -> dict[str, Any]:
        put = self.g.put
        pairs = [(k, value_of(i)) for i, k in enumerate(keys_of(prefix, n))]
        return loop(lambda kv: put(*kv), pairs)

    def op_subtree_get_prefix(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            d = self.g.get_prefix(prefix)
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    def op_write_put_each(self, prefix: str, n: int) -> dict[str, Any]:
        r = self.op_put_put(prefix, n)
        return {"seconds": r["seconds"], "cpu": r["cpu"], "n": 1}

    def op_len_count_only(self, prefix: str, expect: int) -> dict[str, Any]:
        # etcd3gw.get() drops the count of a count_only reply; its own post() keeps it.
        p = prefix.encode()
        body = {"key": b64(p), "range_end": b64(prefix_end(p)), "count_only": True}
        with Clock() as clk:
            count = int(self.g.post(self.g.get_url("/kv/range"), json=body).get("count", 0))
        assert count == expect, (count, expect)
        return clk.result()

    def op_contains_get(self, prefix: str, n: int) -> dict[str, Any]:
        g = self.g.get

        def check(k: str) -> None:
            if not g(k):
                raise AssertionError(k)

        return loop(check, keys_of(prefix, n))

    def op_iterate_get_prefix(self, prefix: str, expect: int) -> dict[str, Any]:
        n = 0
        with Clock() as clk:
            for _value, _meta in self.g.get_prefix(prefix):
                n += 1
        assert n == expect, (n, expect)
        return clk.result()

    def op_watch_watch(self, key: str, n: int) -> dict[str, Any]:
        def start() -> tuple[Any, Callable[[], None]]:
            return self.g.watch(key)

        lat = watch_latency(self.endpoint, key, n, start, lambda e: e["kv"]["value"])
        return {"latencies": lat}


class Etcd3Lib(Lib):
    """python-etcd3 (gRPC)."""

    name = "etcd3"

    def __init__(self, endpoint: str):
        super().__init__(endpoint)
        import etcd3

        self.mod = etcd3
        unlimited = [("grpc.max_receive_message_length", -1),
                     ("grpc.max_send_message_length", -1)]
        self.c = etcd3.client(self.host, self.port, timeout=60, grpc_options=unlimited)

    def info(self) -> dict[str, Any]:
        import grpc
        from google.protobuf import __version__ as pb_version
        from google.protobuf.internal import api_implementation

        return {**super().info(), "etcd3": self.mod.__version__, "grpcio": grpc.__version__,
                "protobuf": pb_version, "protobuf_impl": api_implementation.Type()}

    def warm(self, prefix: str) -> None:
        self.c.get(prefix + "k000000")

    def op_get_get(self, prefix: str, n: int) -> dict[str, Any]:
        return loop(self.c.get, keys_of(prefix, n))

    def op_put_put(self, prefix: str, n: int) -> dict[str, Any]:
        put = self.c.put
        pairs = [(k, value_of(i)) for i, k in enumerate(keys_of(prefix, n))]
        return loop(lambda kv: put(*kv), pairs)

    def op_subtree_get_prefix(self, prefix: str, expect: int) -> dict[str, Any]:
        with Clock() as clk:
            d = list(self.c.get_prefix(prefix))  # a lazy generator: consume it
        assert len(d) == expect, (len(d), expect)
        return clk.result()

    def op_write_put_each(self, prefix: str, n: int) -> dict[str, Any]:
        r = self.op_put_put(prefix, n)
        return {"seconds": r["seconds"], "cpu": r["cpu"], "n": 1}

    def op_getitems_get(self, prefix: str, size: int, k: int, reps: int) -> dict[str, Any]:
        get = self.c.get
        names = names_of(size)
        keys = [prefix + names[(i * 7919) % size] for i in range(k)]

        def singles(ks: list[str]) -> None:
            for key in ks:
                get(key)

        return loop(singles, [keys] * reps)

    def op_getitems_txn(self, prefix: str, size: int, k: int, reps: int) -> dict[str, Any]:
        # python-etcd3's nearest to getitems: one transaction of k gets (no 3.5.x guard).
        c = self.c
        names = names_of(size)
        gets = [c.transactions.get(prefix + names[(i * 7919) % size]) for i in range(k)]

        def one(ops: list[Any]) -> None:
            _ok, responses = c.transaction(compare=[], success=ops, failure=[])
            assert len(responses) == k

        return loop(one, [gets] * reps)

    def op_len_count_only(self, prefix: str, expect: int) -> dict[str, Any]:
        # python-etcd3's get_prefix ignores count_only; its own stub honours it.
        from etcd3 import etcdrpc

        p = prefix.encode()
        c = self.c
        with Clock() as clk:
            req = etcdrpc.RangeRequest(key=p, range_end=prefix_end(p), count_only=True)
            count = c.kvstub.Range(req, c.timeout, credentials=c.call_credentials,
                                   metadata=c.metadata).count
        assert count == expect, (count, expect)
        return clk.result()

    def op_contains_get(self, prefix: str, n: int) -> dict[str, Any]:
        g = self.c.get

        def check(k: str) -> None:
            if g(k)[0] is None:
                raise AssertionError(k)

        return loop(check, keys_of(prefix, n))

    def op_iterate_get_prefix(self, prefix: str, expect: int) -> dict[str, Any]:
        n = 0
        with Clock() as clk:
            for _value, _meta in self.c.get_prefix(prefix):
                n += 1
        assert n == expect, (n, expect)
        return clk.result()

    def op_watch_watch(self, key: str, n: int) -> dict[str, Any]:
        def start() -> tuple[Any, Callable[[], None]]:
            return self.c.watch(key)

        lat = watch_latency(self.endpoint, key, n, start, lambda e: e.value)
        return {"latencies": lat}

    def close(self) -> None:
        self.c.close()


LIBS: dict[str, type[Lib]] = {
    "etcdmap": EtcdmapLib, "etcdmap-grpc": EtcdmapGrpcLib, "requests": RequestsLib,
    "etcd3gw": Etcd3gwLib, "etcd3": Etcd3Lib,
    "etcd3-pure": Etcd3Lib,  # python-etcd3 on pure-Python protobuf (run.py sets the env)
}


# -- memory (workload 5) --------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0) so the peak counts from now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(lib: Lib, op: str, args: dict[str, Any], mode: str) -> dict[str, Any]:
    fn = getattr(lib, "op_" + op)
    gc.collect()
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        result = fn(**args)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {**result, "peak_bytes": peak, "mode": mode}
    reset = _reset_peak_rss()
    before = _status_kib("VmRSS")
    if not reset:
        import resource

        before = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    result = fn(**args)
    peak = _status_kib("VmHWM")
    return {**result, "peak_bytes": max(0, peak - before) * 1024, "mode": mode,
            "rss_before_bytes": before * 1024}


# -- main -----------------------------------------------------------------------------------


def serve(lib: Lib, proto: Any) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        op = msg["op"]
        try:
            if op == "info":
                result: Any = lib.info()
            elif op == "warm":
                lib.warm(**msg.get("args", {}))
                result = None
            elif op == "has":
                result = [name[3:] for name in dir(lib) if name.startswith("op_")]
            elif op == "quit":
                proto.write(json.dumps({"ok": None}) + "\n")
                proto.flush()
                return
            else:
                result = getattr(lib, "op_" + op)(**msg.get("args", {}))
            reply = {"ok": result}
        except Exception:
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lib", choices=sorted(LIBS))
    parser.add_argument("endpoint")
    parser.add_argument("--once", metavar="OP", help="run one operation and exit")
    parser.add_argument("--args", default="{}", help="JSON arguments of --once")
    parser.add_argument("--mem", choices=["rss", "tracemalloc"], default="rss")
    parser.add_argument("--warm", default=None, help="prefix to warm the connection with")
    opts = parser.parse_args()
    # The protocol owns the real stdout; library chatter goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        lib = LIBS[opts.lib](opts.endpoint)
    except Exception:
        proto.write(json.dumps({"error": traceback.format_exc()}) + "\n")
        proto.flush()
        sys.exit(2)
    try:
        if opts.once:
            try:
                if opts.warm:
                    lib.warm(opts.warm)
                reply = {"ok": measure_memory(lib, opts.once, json.loads(opts.args), opts.mem)}
            except Exception:
                reply = {"error": traceback.format_exc()}
            proto.write(json.dumps(reply) + "\n")
            proto.flush()
        else:
            proto.write(json.dumps({"ok": "ready"}) + "\n")
            proto.flush()
            serve(lib, proto)
    finally:
        lib.close()


if __name__ == "__main__":
    main()
