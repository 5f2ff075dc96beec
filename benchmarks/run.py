"""etcdmap benchmarks: ratios against its peers, measured side by side in one run.

    python benchmarks/run.py                  # full run (a few minutes)
    python benchmarks/run.py --quick          # smoke run (under a minute)
    python benchmarks/run.py --quick --only-etcdmap   # no peer libraries needed

It starts its own etcd (``etcdmap.testing.EtcdServer``), loads the data, and
runs every contender in a worker process of its own (``_worker.py``), round by
round and interleaved, so a burst of load on the machine hits every contender
alike.  etcdmap is measured over both transports: ``etcdmap`` (the JSON
gateway, the default) and ``etcdmap-grpc`` (``transport="grpc"``).  Each
contender's figure is its best round (its median is shown too); every ratio
is between two figures of the same run.  Results go to ``benchmarks/results/``
as ``results.json``, ``summary.md`` (the headline table, markdown) and
``results.png`` (matplotlib).

python-etcd3 needs protobuf<3.21 or ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``.
A full run creates (once) ``benchmarks/.venv-etcd3`` with a Python <= 3.10 and
protobuf 3.20 (its C++ implementation, python-etcd3's fast path) and runs
python-etcd3's worker there; ``--etcd3-venv no`` (or no such Python) uses
the main environment with the pure-Python protobuf instead, and says so.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_worker.py")
VENV = os.path.join(HERE, ".venv-etcd3")
if REPO not in sys.path:
    sys.path.insert(1, REPO)

from etcdmap import EtcdClient  # noqa: E402
from etcdmap.ops import Put  # noqa: E402
from etcdmap.testing import EtcdServer  # noqa: E402

LIB_TITLES = {
    "etcdmap": "etcdmap",
    "etcdmap-grpc": "etcdmap-grpc",
    "requests": "requests",
    "etcd3gw": "etcd3gw",
    "etcd3": "python-etcd3",
    "etcd3-pure": "python-etcd3 (pure-Python protobuf)",
}


@dataclass
class Config:
    quick: bool
    op_rounds: int        # rounds of the one-op-at-a-time loops (1, 4 membership, 6)
    rounds: int           # rounds of workloads 3 and 7
    cheap_rounds: int     # rounds of one-shot reads (2, 4 len)
    iter_rounds: int      # workload 5 timing rounds in the workers (+1 fresh-process sample)
    n_single: int         # workload 1: gets and puts per round
    n_tree: int           # workloads 2, 4, 6: subtree size
    n_write: int          # workload 3
    n_iter: tuple[int, int]  # workload 5: small and large subtree
    n_contains: int       # workload 4: lookups per round
    n_cached: int         # workload 6: cached and dict lookups per round
    n_uncached: int       # workload 6: uncached lookups per round
    n_watch: int          # workload 7: events per library per round
    n_getitems: int       # workload 8: keys per getitems (and single gets to compare)
    getitems_reps: int    # workload 8: getitems calls per round


# Per-op loops: 4 rounds x 250 = 1,000 ops per contender.
FULL = Config(quick=False, op_rounds=4, rounds=3, cheap_rounds=5, iter_rounds=2,
              n_single=250, n_tree=10_000, n_write=1000, n_iter=(20_000, 200_000),
              n_contains=250, n_cached=200_000, n_uncached=250, n_watch=100,
              n_getitems=100, getitems_reps=10)
QUICK = Config(quick=True, op_rounds=2, rounds=2, cheap_rounds=2, iter_rounds=1,
               n_single=25, n_tree=1000, n_write=100, n_iter=(2000, 20_000), n_contains=25,
               n_cached=20_000, n_uncached=25, n_watch=15, n_getitems=100, getitems_reps=2)

TREE = "bench/tree/"
SINGLE = "bench/w1/"


# -- workers ------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    """A ``_worker.py`` process for one library."""

    def __init__(self, lib: str, endpoint: str, python: str, env: dict[str, str],
                 log_path: str):
        self.lib = lib
        self.log = open(log_path, "ab")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [python, WORKER, lib, endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, env=env, text=True, bufsize=1)
        first = self._read()
        if "error" in first:
            self.close()
            raise WorkerError(first["error"].strip().splitlines()[-1])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.lib} worker exited (code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
                self.proc.wait(10)
            except (WorkerError, OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass
class Runtime:
    python: str
    env: dict[str, str]
    note: str = ""


PEERS = ("requests", "etcd3gw", "etcd3", "etcd3-pure")
ETCDMAP_LIBS = ("etcdmap", "etcdmap-grpc")


def main_env() -> dict[str, str]:
    """The environment of the workers that run in this Python: the checkout's etcdmap first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("ETCDMAP_TRANSPORT", None)  # each etcdmap worker names its transport
    return env


def grpc_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("grpc", "google.protobuf"))


IMPORT_CHECKS = [
    # name, code, whether grpc should be imported afterwards
    ("import etcdmap does not import grpc",
     "import etcdmap, sys", False),
    ("the http transport in use does not import grpc",
     "import etcdmap, sys\n"
     "c = etcdmap.EtcdClient(ENDPOINT, transport='http')\n"
     "c.get('bench/w1/k000000'); etcdmap.EtcdMapping('bench/tree', client=c).getitems(['k1'])\n"
     "w = c.watch_iter('bench/w7/import-check'); w.close(); c.close()", False),
    ("(sanity) transport='grpc' does import grpc",
     "import etcdmap, sys\n"
     "c = etcdmap.EtcdClient(ENDPOINT, transport='grpc'); c.get('bench/w1/k000000'); "
     "c.close()", True),
]


def import_checks(endpoint: str) -> list[dict[str, Any]]:
    """Whether grpc is in sys.modules after each snippet, each in a fresh interpreter."""
    out = []
    env = main_env()
    for name, code, expect in IMPORT_CHECKS:
        script = (f"import time; t0 = time.perf_counter()\nENDPOINT = {endpoint!r}\n{code}\n"
                  "import json; print(json.dumps(['grpc' in sys.modules, etcdmap.__file__, "
                  "time.perf_counter() - t0]))")
        check: dict[str, Any] = {"name": name, "expect": expect, "code": code}
        try:
            proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                  text=True, env=env, cwd=HERE, timeout=120, check=False)
            grpc_in, where, took = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError, subprocess.SubprocessError) as exc:
            tail = (proc.stderr.strip().splitlines() or [""])[-1] if "proc" in locals() else ""
            check["error"] = f"check failed: {tail or exc}"
            out.append(check)
            continue
        check["grpc_imported"] = grpc_in
        check["detail"] = (f"expected {expect}; etcdmap from {os.path.relpath(where, REPO)}, "
                           f"{took * 1e3:.0f} ms")
        if not os.path.abspath(where).startswith(REPO + os.sep):
            check["grpc_imported"] = None
            check["error"] = f"imported etcdmap from {where}, not from {REPO}"
        out.append(check)
    return out


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        major, minor = out.split()
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _old_python() -> str | None:
    """A Python 3.8-3.10: protobuf 3.20 has C++ wheels for those, not for 3.11+."""
    candidates = [shutil.which(f"python3.{m}") for m in (10, 9, 8)]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for m in (10, 9, 8):
        candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", f"3.{m}.*",
                                                    "bin", "python3")), reverse=True)
    for cand in candidates:
        if cand and (3, 8) <= (_python_version(cand) or (0, 0)) <= (3, 10):
            return cand
    return None


def _venv_python() -> str:
    return os.path.join(VENV, "bin", "python")


def make_etcd3_venv() -> str:
    """Create benchmarks/.venv-etcd3 (python-etcd3 with protobuf 3.20's C++ backend)."""
    base = _old_python()
    if base is None:
        raise RuntimeError("no Python 3.8-3.10 found for protobuf 3.20's C++ wheels")
    print(f"creating {os.path.relpath(VENV)} with {base} (python-etcd3, protobuf<3.21) ...",
          flush=True)
    subprocess.run([base, "-m", "venv", "--clear", VENV], check=True)
    subprocess.run([_venv_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "etcd3==0.12.0", "protobuf<3.21", "grpcio"], check=True)
    return _venv_python()


def resolve_etcd3(opts: argparse.Namespace) -> Runtime | str:
    """Where python-etcd3's worker runs, or why it cannot."""
    env = dict(os.environ)
    if opts.etcd3_python:
        return Runtime(opts.etcd3_python, env, f"--etcd3-python {opts.etcd3_python}")
    if opts.etcd3_venv != "no":
        if os.path.exists(_venv_python()):
            return Runtime(_venv_python(), env, "benchmarks/.venv-etcd3")
        if opts.etcd3_venv == "yes" or (opts.etcd3_venv == "auto" and not opts.quick):
            try:
                return Runtime(make_etcd3_venv(), env, "benchmarks/.venv-etcd3 (created)")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"python-etcd3 venv not created ({exc}); "
                      "falling back to the main environment", flush=True)
    if importlib.util.find_spec("etcd3") is None:
        return ("not installed: pip install -e '.[bench]' (or run with --etcd3-venv yes)")
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    return Runtime(sys.executable, env,
                   "main environment, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "
                   "(pure-Python protobuf: slower than python-etcd3's usual C++ backend)")


def pure_etcd3(etcd3: Runtime | str) -> Runtime | str:
    """python-etcd3 as it runs beside current protobuf: pure Python (its only way to import).

    The gateway's targets against python-etcd3 (workloads 2 and 3) were set
    against that runtime; the gRPC targets face its C++ fast path (``etcd3``).
    When ``etcd3`` itself runs that way, it stands for both.
    """
    if isinstance(etcd3, Runtime) and \
            etcd3.env.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION") == "python":
        return "same as python-etcd3 (it runs on pure-Python protobuf here)"
    if importlib.util.find_spec("etcd3") is None:
        return "not installed in this environment: pip install -e '.[bench]'"
    env = main_env()
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    return Runtime(sys.executable, env, "main environment, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
                   "=python (python-etcd3 with protobuf >= 4)")


def pure_peer(b: Bench) -> str:
    """The lib that is python-etcd3 on pure-Python protobuf in this run."""
    return "etcd3-pure" if b.has("etcd3-pure") else "etcd3"


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Contender:
    label: str
    lib: str
    op: str
    args: dict[str, Any]
    samples: list[float] = field(default_factory=list)  # per round: seconds per op
    cpu: list[float] = field(default_factory=list)      # per round: client CPU s per op
    lat: list[float] = field(default_factory=list)      # every op's latency, pooled
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> float | None:
        """The best round's mean time per op."""
        return min(self.samples) if self.samples else None

    @property
    def median(self) -> float | None:
        """p50 of every op's latency where ops were timed one by one, else the median round."""
        if self.lat:
            return statistics.median(self.lat)
        return statistics.median(self.samples) if self.samples else None


class Bench:
    def __init__(self, opts: argparse.Namespace, cfg: Config, endpoint: str):
        self.opts, self.cfg, self.endpoint = opts, cfg, endpoint
        self.workers: dict[str, Worker] = {}
        self.unavailable: dict[str, str] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.info: dict[str, Any] = {}
        self.workloads: dict[str, dict[str, Any]] = {}
        self.checks: list[dict[str, Any]] = []

    # workers

    def start_workers(self) -> None:
        main = Runtime(sys.executable, main_env())
        libs: dict[str, Runtime | str] = {"etcdmap": main}
        libs["etcdmap-grpc"] = main if grpc_installed() else (
            "grpcio/protobuf not installed: pip install -e '.[grpc]'")
        if self.opts.only_etcdmap:
            for lib in PEERS:
                self.unavailable[lib] = "skipped (--only-etcdmap)"
        else:
            libs["requests"] = main
            libs["etcd3gw"] = main if importlib.util.find_spec("etcd3gw") else \
                "not installed: pip install -e '.[bench]'"
            libs["etcd3"] = resolve_etcd3(self.opts)
            libs["etcd3-pure"] = pure_etcd3(libs["etcd3"])
        for lib, runtime in libs.items():
            if isinstance(runtime, str):
                self.unavailable[lib] = runtime
                continue
            log = os.path.join(self.opts.out, f"worker-{lib}.log")
            try:
                worker = Worker(lib, self.endpoint, runtime.python, runtime.env, log)
                self.info[lib] = {**worker.call("info"), "runtime": runtime.note}
                worker.call("warm", prefix=SINGLE)
            except WorkerError as exc:
                self.unavailable[lib] = f"cannot start: {exc}"
                continue
            self.workers[lib] = worker
            self.runtimes[lib] = runtime
        for lib, why in self.unavailable.items():
            print(f"  {LIB_TITLES[lib]}: not measured: {why}", flush=True)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()

    def has(self, lib: str) -> bool:
        return lib in self.workers

    # rounds

    def measure(self, contenders: list[Contender], rounds: int) -> list[Contender]:
        """Interleaved rounds; each round rotates the order of the contenders."""
        live = [c for c in contenders if self.has(c.lib)]
        for r in range(rounds):
            k = r % max(1, len(live))
            for c in live[k:] + live[:k]:
                if c.error is not None:
                    continue
                try:
                    res = self.workers[c.lib].call(c.op, **c.args)
                except WorkerError as exc:
                    c.error = str(exc).strip().splitlines()[-1]
                    print(f"    {c.label}: ERROR {c.error}", flush=True)
                    continue
                c.samples.append(res["seconds"] / res["n"])
                if "txn_reads" in res:
                    c.extra["txn_reads"] = res["txn_reads"]
                if "cpu" in res:
                    c.cpu.append(res["cpu"] / res["n"])
                c.lat.extend(res.get("lat", ()))
        return live

    def once_memory(self, lib: str, op: str, args: dict[str, Any], mode: str,
                    warm: str) -> dict[str, Any]:
        """One operation in a fresh worker process, for its peak memory."""
        rt = self.runtimes[lib]
        cmd = [rt.python, WORKER, lib, self.endpoint, "--once", op, "--args", json.dumps(args),
               "--mem", mode, "--warm", warm]
        log = os.path.join(self.opts.out, f"worker-{lib}.log")
        with open(log, "ab") as err:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                 env=rt.env, timeout=600, check=False).stdout
        lines = [line for line in out.splitlines() if line.strip()]
        if not lines:
            raise WorkerError(f"{lib} --once {op} printed nothing (see {log})")
        reply = json.loads(lines[-1])
        if "error" in reply:
            raise WorkerError(reply["error"].strip().splitlines()[-1])
        result: dict[str, Any] = reply["ok"]
        return result

    # tables

    def table(self, wid: str, name: str, unit: str, contenders: list[Contender],
              baseline_pref: list[str], note: str = "") -> dict[str, Any]:
        measured = [c for c in contenders if c.samples]
        base = next((c for label in baseline_pref for c in measured if c.label == label), None)
        rows = []
        for c in contenders:
            row: dict[str, Any] = {"label": c.label, "lib": c.lib, "op": c.op,
                                   "best_s": c.best, "median_s": c.median,
                                   "samples_s": c.samples, **c.extra}
            if c.cpu:
                row["cpu_best_s"] = min(c.cpu)
            if c.lat:
                row["median_kind"] = "p50 of per-op latencies"
                row["p90_s"] = _pct(c.lat, 0.90)
                row["p99_s"] = _pct(c.lat, 0.99)
                row["ops"] = len(c.lat)
            elif c.samples:
                row["median_kind"] = "median round"
            if c.error:
                row["error"] = c.error
            if base is not None and c.best is not None and base.best:
                row["ratio"] = c.best / base.best
                assert c.median is not None and base.median
                row["ratio_median"] = c.median / base.median
            rows.append(row)
        table = {"name": name, "unit": unit, "baseline": base.label if base else None,
                 "rows": rows, "note": note}
        self.workloads.setdefault(wid, {"tables": []})["tables"].append(table)
        return table


def by_label(contenders: list[Contender]) -> dict[str, Contender]:
    return {c.label: c for c in contenders}


# -- the workloads ------------------------------------------------------------------------

FLOOR = "requests HTTPAdapter.send (floor)"
NAIVE = "requests Session.post (naive)"
GRPC = "etcdmap-grpc"


def ours(rest: str, op: str, args: dict[str, Any] | Any) -> list[Contender]:
    """One etcdmap contender per transport: ``etcdmap <rest>`` (http), ``etcdmap-grpc <rest>``.

    ``args`` may be a function of the worker's name (for keys of their own).
    """
    return [Contender(f"{lib} {rest}", lib, op, args(lib) if callable(args) else args)
            for lib in ETCDMAP_LIBS]


def workload_1(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_single
    print(f"[1] sequential single-key get and put ({cfg.op_rounds} rounds x {n} each)",
          flush=True)
    a = {"prefix": SINGLE, "n": n}
    gets = b.measure([
        Contender(FLOOR, "requests", "get_floor", a),
        Contender(NAIVE, "requests", "get_naive", a),
        *ours("client.range(k)", "get_range", a),
        *ours("client.get(k)", "get_get", a),
        *ours("mapping[k]", "get_mapping", a),
        Contender("etcd3gw get(k)", "etcd3gw", "get_get", a),
        Contender("python-etcd3 get(k)", "etcd3", "get_get", a),
    ], cfg.op_rounds)
    b.table("1", f"single get ({cfg.op_rounds} x {n} keys)", "us/op", gets,
            [FLOOR, "etcdmap client.get(k)"],
            "floor: one PreparedRequest per key, prepared before timing, sent with "
            "the Session's HTTPAdapter.send; body read, not parsed")

    def p(slug: str) -> dict[str, Any]:
        return {"prefix": f"bench/w1put/{slug}/", "n": n}

    puts = b.measure([
        Contender(FLOOR, "requests", "put_floor", p("floor")),
        Contender(NAIVE, "requests", "put_naive", p("naive")),
        *ours("client.put(k, v)", "put_put", lambda lib: p(f"{lib}-put")),
        *ours("mapping[k] = v", "put_mapping", lambda lib: p(f"{lib}-map")),
        Contender("etcd3gw put(k, v)", "etcd3gw", "put_put", p("etcd3gw")),
        Contender("python-etcd3 put(k, v)", "etcd3", "put_put", p("etcd3")),
    ], cfg.op_rounds)
    b.table("1", f"single put ({cfg.op_rounds} x {n} keys)", "us/op", puts,
            [FLOOR, "etcdmap client.put(k, v)"],
            "floor: one prepared put sent N times")


def workload_2(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_tree
    print(f"[2] read a {n}-key subtree ({cfg.cheap_rounds} rounds)", flush=True)
    a = {"prefix": TREE, "expect": n}
    rows = b.measure([
        *ours("EtcdMapping.to_dict()", "subtree_to_dict", a),
        *ours("client.range_iter() -> dict", "subtree_range_iter", a),
        *ours("client.range(prefix) -> dict (1 request)", "subtree_range", a),
        Contender("requests floor: 1 unpaged range, body only", "requests",
                  "subtree_floor", a),
        Contender("requests naive: 1 unpaged range + json + b64", "requests",
                  "subtree_naive", a),
        Contender("etcd3gw get_prefix()", "etcd3gw", "subtree_get_prefix", a),
        Contender("python-etcd3 get_prefix()", "etcd3", "subtree_get_prefix", a),
        Contender("python-etcd3 get_prefix(), pure-Python protobuf", "etcd3-pure",
                  "subtree_get_prefix", a),
    ], cfg.cheap_rounds)
    b.table("2", f"read a {n}-key subtree", "ms", rows,
            ["python-etcd3 get_prefix()", "etcd3gw get_prefix()",
             "etcdmap EtcdMapping.to_dict()"],
            "to_dict pages 8000 keys, range_iter 1000 doubling, at one pinned revision")


def workload_3(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_write
    print(f"[3] write {n} keys ({cfg.rounds} rounds)", flush=True)

    def a(slug: str) -> dict[str, Any]:
        return {"prefix": f"bench/w3/{slug}/", "n": n}

    rows = b.measure([
        *ours("EtcdMapping.update(dict)", "write_update", lambda lib: a(f"{lib}-update")),
        *ours("client.txn, 128 puts each (no clearing)", "write_txn_puts",
              lambda lib: a(f"{lib}-txn")),
        *ours("client.put per key", "write_put_each", a),
        Contender("etcd3gw put per key", "etcd3gw", "write_put_each", a("etcd3gw")),
        Contender("python-etcd3 put per key", "etcd3", "write_put_each", a("etcd3")),
        Contender("python-etcd3 put per key, pure-Python protobuf", "etcd3-pure",
                  "write_put_each", a("etcd3-pure")),
    ], cfg.rounds)
    b.table("3", f"write {n} keys", "ms", rows, ["etcdmap EtcdMapping.update(dict)"],
            "update() sends ordered transactions of up to 128 ops, a delete-range (clearing "
            "any subtree) beside each put; the client.txn row is that ceiling without them")


def workload_4(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_tree
    print(f"[4] len() and membership on a {n}-key subtree", flush=True)
    a = {"prefix": TREE, "expect": n}
    rows = b.measure([
        *ours("len(mapping)", "len_len", a),
        *ours("client.range(count_only)", "len_count_only", a),
        Contender("requests naive count_only", "requests", "len_count_only", a),
        Contender("etcd3gw count_only (its post())", "etcd3gw", "len_count_only", a),
        Contender("python-etcd3 count_only (its kvstub)", "etcd3", "len_count_only", a),
    ], cfg.cheap_rounds)
    b.table("4", f"len() of a {n}-key subtree", "ms", rows,
            ["python-etcd3 count_only (its kvstub)", "etcd3gw count_only (its post())",
             "etcdmap client.range(count_only)"],
            "peers: one count_only range; len(mapping) counts children (not keys), "
            "so it scans keys_only pages")
    m = cfg.n_contains
    c = {"prefix": TREE, "n": m}
    rows = b.measure([
        *ours("k in mapping", "contains_in", c),
        *ours("client.range(k, count_only)", "contains_count_only", c),
        Contender("etcd3gw get(k)", "etcd3gw", "contains_get", c),
        Contender("python-etcd3 get(k)", "etcd3", "contains_get", c),
    ], cfg.op_rounds)
    b.table("4", f"membership ({cfg.op_rounds} x {m} existing keys)", "us/op", rows,
            ["python-etcd3 get(k)", "etcd3gw get(k)", "etcdmap client.range(k, count_only)"],
            "k in mapping is one txn: the leaf and whether a subtree exists, count_only")


def workload_5(b: Bench) -> None:
    cfg = b.cfg
    small, large = cfg.n_iter
    rounds = cfg.iter_rounds
    print(f"[5] iterate {large} keys: time ({rounds} rounds + 1 in a fresh process) and peak "
          f"memory ({small} vs {large} keys, one fresh process per measurement)", flush=True)
    spec = [
        *((f"{lib} {what}", lib, op) for lib in ETCDMAP_LIBS
          for what, op in (("EtcdMapping.items()", "iterate_items"),
                           ("client.range_iter()", "iterate_range_iter"))),
        ("etcd3gw get_prefix()", "etcd3gw", "iterate_get_prefix"),
        ("python-etcd3 get_prefix()", "etcd3", "iterate_get_prefix"),
    ]
    big = {"prefix": _iter_prefix(large), "expect": large}
    rows = b.measure([Contender(label, lib, op, big) for label, lib, op in spec], rounds)
    mem_rows = []
    for (label, lib, op), contender in zip(spec, rows, strict=False):
        if not b.has(lib):
            continue
        row: dict[str, Any] = {"label": label, "lib": lib, "op": op}
        modes = ["rss"] + (["tracemalloc"] if lib != "etcd3" else [])
        for mode in modes:
            for size in (small, large):
                args = {"prefix": _iter_prefix(size), "expect": size}
                try:
                    res = b.once_memory(lib, op, args, mode, _iter_prefix(size))
                except (WorkerError, subprocess.SubprocessError) as exc:
                    row["error"] = str(exc)
                    continue
                row[f"{mode}_{size}"] = res["peak_bytes"]
                if mode == "rss" and size == large and contender.label == label:
                    contender.samples.append(res["seconds"])  # a third timing sample
                    contender.cpu.append(res["cpu"])
            if row.get(f"{mode}_{small}") and f"{mode}_{large}" in row:
                row[f"{mode}_ratio"] = row[f"{mode}_{large}"] / row[f"{mode}_{small}"]
        if lib == "etcd3":
            row["tracemalloc_note"] = "n/a: protobuf's C++ objects are invisible to tracemalloc"
        elif lib == GRPC:
            row["tracemalloc_note"] = ("Python objects only: protobuf's (upb) messages and "
                                       "grpc's buffers are invisible to tracemalloc")
        mem_rows.append(row)
        print(f"    memory {label}: " + ", ".join(
            f"{k}={_mib(v)}" for k, v in row.items() if k.startswith(("rss_", "tracemalloc_"))
            and isinstance(v, int)), flush=True)
    b.table("5", f"iterate {large} keys", "ms", rows,
            ["etcd3gw get_prefix()", "etcdmap client.range_iter()"],
            "etcdmap pages 1000 keys per request at one pinned revision; the peers "
            "load the whole range in one reply; the last sample of each comes from the "
            "fresh process of its RSS measurement")
    b.workloads["5"]["memory"] = {
        "name": f"peak memory while iterating {small} vs {large} keys",
        "sizes": [small, large], "rows": mem_rows,
        "note": "rss: growth of the peak RSS (VmHWM reset before the operation); "
                "tracemalloc: peak of Python allocations (not protobuf's C memory: "
                "python-etcd3 not measured, etcdmap-grpc partly); one fresh process each",
    }


def _iter_prefix(n: int) -> str:
    return f"bench/iter{n}/"


def workload_6(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_tree
    print(f"[6] cached reads vs uncached gets vs a plain dict ({n}-key subtree)", flush=True)
    setup: dict[str, float] = {}
    for lib in ETCDMAP_LIBS:
        if not b.has(lib):
            continue
        try:
            setup[lib] = b.workers[lib].call("cached_setup", prefix=TREE, expect=n)["seconds"]
        except WorkerError as exc:
            print(f"    {lib} m.cached(): ERROR {str(exc).strip().splitlines()[-1]}", flush=True)
    if "etcdmap" not in setup:
        b.workloads["6"] = {"tables": [], "error": "etcdmap m.cached() failed"}
        return
    cached = {"size": n, "n": cfg.n_cached}
    rows = b.measure([
        Contender("plain dict d[k]", "etcdmap", "cached_dict", cached),
        *(c for c in ours("m.cached()[k]", "cached_cached", cached) if c.lib in setup),
        *ours("m[k] (uncached)", "cached_uncached",
              {"prefix": TREE, "size": n, "n": cfg.n_uncached}),
    ], cfg.op_rounds)
    took = ", ".join(f"{lib} {sec * 1e3:.0f} ms" for lib, sec in setup.items())
    b.table("6", f"lookups of existing keys ({n}-key subtree)", "us/op", rows,
            ["plain dict d[k]"],
            f"the same loop `for k in keys: obj[k]` for all; m.cached() itself "
            f"took {took} (load + watch)")


def workload_7(b: Bench) -> None:
    cfg = b.cfg
    n = cfg.n_watch
    print(f"[7] watch latency, put to event ({n} events x {cfg.rounds} rounds per library)",
          flush=True)
    spec = [
        ("etcdmap watch_iter", "etcdmap"),
        ("etcdmap-grpc watch_iter", GRPC),
        ("etcd3gw watch", "etcd3gw"),
        ("python-etcd3 watch", "etcd3"),
    ]
    lat: dict[str, list[float]] = {label: [] for label, _ in spec}
    errors: dict[str, str] = {}
    live = [(label, lib) for label, lib in spec if b.has(lib)]
    for r in range(cfg.rounds):
        k = r % max(1, len(live))
        for label, lib in live[k:] + live[:k]:
            if label in errors:
                continue
            try:
                res = b.workers[lib].call("watch_watch", key=f"bench/w7/{lib}", n=n)
            except WorkerError as exc:
                errors[label] = str(exc).strip().splitlines()[-1]
                continue
            lat[label] += res["latencies"]
    rows = []
    for label, lib in live:
        values = lat[label]
        row: dict[str, Any] = {"label": label, "lib": lib, "n": len(values)}
        if values:
            row["p50_s"] = _pct(values, 0.50)
            row["p99_s"] = _pct(values, 0.99)
        if label in errors:
            row["error"] = errors[label]
        rows.append(row)
    base = next((r for r in rows if r["label"] == "python-etcd3 watch" and "p50_s" in r),
                next((r for r in rows if "p50_s" in r), None))
    for row in rows:
        if base is not None and "p50_s" in row:
            row["ratio_p50"] = row["p50_s"] / base["p50_s"]
            row["ratio_p99"] = row["p99_s"] / base["p99_s"]
    b.workloads["7"] = {"tables": [], "latency": {
        "name": "watch latency: just before the put to the event in the consumer",
        "baseline": base["label"] if base else None, "rows": rows,
        "note": "every library's events come from the same writer (stdlib http.client "
                "puts); samples pooled over the rounds"}}


def workload_8(b: Bench) -> None:
    cfg = b.cfg
    size, k, reps = cfg.n_tree, cfg.n_getitems, cfg.getitems_reps
    print(f"[8] getitems of {k} keys vs {k} single gets ({cfg.op_rounds} rounds x {reps})",
          flush=True)
    a = {"prefix": TREE, "size": size, "k": k, "reps": reps}
    forced = {**a, "force_txn_reads": True}
    rows = b.measure([
        *ours(f"m.getitems({k} keys)", "getitems_getitems", a),
        *ours(f"m.getitems({k} keys), txn reads forced", "getitems_getitems", forced),
        *ours(f"{k} x mapping[k]", "getitems_mapping", a),
        *ours(f"{k} x client.get(k)", "getitems_get", a),
        Contender(f"python-etcd3 {k} x get(k)", "etcd3", "getitems_get", a),
        Contender(f"python-etcd3 transaction of {k} gets", "etcd3", "getitems_txn", a),
    ], cfg.op_rounds)
    b.table("8", f"read {k} keys of a {size}-key subtree", "ms", rows,
            [f"etcdmap {k} x mapping[k]"],
            "getitems reads every key at one revision, a leaf and a subtree probe per key, "
            "in read-only transactions of up to 128 ranges, but as separate ranges on "
            "etcd 3.5.0-3.5.6 (they can crash on an abandoned read-only txn; gRPC keeps "
            "many in flight, the gateway reads one after another); 'txn reads forced' "
            "pretends the member is >= 3.5.7 (the benchmark's 30 s timeout never abandons "
            "one)")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


WORKLOADS = {"1": workload_1, "2": workload_2, "3": workload_3, "4": workload_4,
             "5": workload_5, "6": workload_6, "7": workload_7, "8": workload_8}


# -- data -----------------------------------------------------------------------------------


def load(client: EtcdClient, prefix: str, n: int) -> None:
    """``n`` small keys under ``prefix``, in transactions of 128 puts."""
    batch = client.max_txn_ops
    for start in range(0, n, batch):
        client.txn(success=[Put(f"{prefix}k{i:06d}".encode(), f"value-{i:06d}".encode())
                            for i in range(start, min(start + batch, n))])


# -- targets ----------------------------------------------------------------------------------


def _row(b: Bench, wid: str, table: int, label: str) -> dict[str, Any] | None:
    tables = b.workloads.get(wid, {}).get("tables", [])
    if table >= len(tables):
        return None
    return next((r for r in tables[table]["rows"]
                 if r["label"] == label and r.get("best_s")), None)


def targets(b: Bench) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, threshold: float, detail: str,
            why_missing: str = "not measured") -> None:
        if value is None:
            out.append({"name": name, "status": "SKIP", "detail": why_missing,
                        "threshold": threshold, "op": op})
            return
        ok = value <= threshold if op == "<=" else value >= threshold
        out.append({"name": name, "status": "PASS" if ok else "FAIL", "value": value,
                    "op": op, "threshold": threshold, "detail": detail})

    def ratio(name: str, wid: str, table: int, num: str, den: str, op: str,
              threshold: float, unit: str = "us") -> None:
        """A target on ``num``'s best time / ``den``'s best time, from one table."""
        top, bottom = _row(b, wid, table, num), _row(b, wid, table, den)
        if top and bottom:
            scale = 1e6 if unit == "us" else 1e3
            add(name, top["best_s"] / bottom["best_s"], op, threshold,
                f"{top['best_s'] * scale:.{0 if unit == 'us' else 1}f} {unit} vs "
                f"{bottom['best_s'] * scale:.{0 if unit == 'us' else 1}f} {unit}; median ratio "
                f"{top['median_s'] / bottom['median_s']:.2f}")
            return
        missing = [label for label in (num, den) if not _row(b, wid, table, label)]
        libs = {lib for lib in LIB_TITLES if any(m.startswith(LIB_TITLES[lib] + " ")
                                                 for m in missing)}
        why = "; ".join(f"{LIB_TITLES[lib]}: {b.unavailable[lib]}" for lib in sorted(libs)
                        if lib in b.unavailable)
        add(name, None, op, threshold, "", why or f"not measured: {', '.join(missing)}")

    # 1. single get within 1.15x of the floor
    floor = _row(b, "1", 0, FLOOR)
    for label in ("etcdmap client.get(k)", "etcdmap client.range(k)"):
        ours = _row(b, "1", 0, label)
        if floor and ours:
            add(f"single get: {label} / HTTPAdapter.send floor", ours["best_s"] / floor["best_s"],
                "<=", 1.15, f"{ours['best_s'] * 1e6:.0f} us vs {floor['best_s'] * 1e6:.0f} us")
        else:
            add(f"single get: {label} / HTTPAdapter.send floor", None, "<=", 1.15, "",
                "needs the requests worker (not with --only-etcdmap)")
    # 2. subtree read at least 1.3x faster than python-etcd3 as it runs beside
    # current protobuf (the gRPC transport faces its C++ fast path below)
    pure = pure_peer(b)
    peer_label = ("python-etcd3 get_prefix(), pure-Python protobuf" if pure == "etcd3-pure"
                  else "python-etcd3 get_prefix()")
    name = "subtree read: python-etcd3 get_prefix (pure-Python protobuf) / etcdmap to_dict"
    ours = _row(b, "2", 0, "etcdmap EtcdMapping.to_dict()")
    peer = _row(b, "2", 0, peer_label)
    if ours and peer:
        add(name, peer["best_s"] / ours["best_s"], ">=", 1.3,
            f"{ours['best_s'] * 1e3:.1f} ms vs python-etcd3 {peer['best_s'] * 1e3:.1f} ms")
    else:
        add(name, None, ">=", 1.3, "", "python-etcd3: " + b.unavailable.get(pure, "not measured"))
    # 2. (gateway) to_dict within 1.15x of the bare requests.post + json + base64 read
    naive = "requests naive: 1 unpaged range + json + b64"
    ratio("subtree read: etcdmap to_dict / requests.post+json+b64", "2", 0,
          "etcdmap EtcdMapping.to_dict()", naive, "<=", 1.15, "ms")
    # gRPC transport against python-etcd3 (and getitems against single gets)
    ratio("gRPC single get: etcdmap-grpc client.get(k) / python-etcd3 get(k)", "1", 0,
          f"{GRPC} client.get(k)", "python-etcd3 get(k)", "<=", 1.0)
    ratio("gRPC single get: etcdmap-grpc client.range(k) / python-etcd3 get(k)", "1", 0,
          f"{GRPC} client.range(k)", "python-etcd3 get(k)", "<=", 1.0)
    ratio("gRPC single put: etcdmap-grpc client.put / python-etcd3 put", "1", 1,
          f"{GRPC} client.put(k, v)", "python-etcd3 put(k, v)", "<=", 1.0)
    ratio("gRPC subtree read: python-etcd3 get_prefix / etcdmap-grpc to_dict", "2", 0,
          "python-etcd3 get_prefix()", f"{GRPC} EtcdMapping.to_dict()", ">=", 1.4, "ms")
    ratio("gRPC subtree read: python-etcd3 get_prefix / etcdmap-grpc client.range(prefix)",
          "2", 0, "python-etcd3 get_prefix()",
          f"{GRPC} client.range(prefix) -> dict (1 request)", ">=", 1.4, "ms")
    k = b.cfg.n_getitems
    ratio(f"gRPC getitems: {k} x mapping[k] / m.getitems({k} keys)", "8", 0,
          f"{GRPC} {k} x mapping[k]", f"{GRPC} m.getitems({k} keys)", ">=", 3, "ms")
    ratio(f"gRPC getitems: {k} x client.get(k) / m.getitems({k} keys)", "8", 0,
          f"{GRPC} {k} x client.get(k)", f"{GRPC} m.getitems({k} keys)", ">=", 3, "ms")
    for single in ("mapping[k]", "client.get(k)"):
        ratio(f"gRPC getitems, txn reads forced (as on etcd >= 3.5.7): {k} x {single} / "
              "getitems", "8", 0, f"{GRPC} {k} x {single}",
              f"{GRPC} m.getitems({k} keys), txn reads forced", ">=", 3, "ms")
    # import etcdmap does not import grpc (unless the gRPC transport is used)
    for check in b.checks:
        got = check.get("grpc_imported")
        add(check["name"], None if got is None else float(got == check["expect"]), ">=", 1,
            check.get("detail", ""), check.get("error", "not measured"))
        if got is not None:
            out[-1]["shown"] = f"'grpc' in sys.modules: {got}"
    # 3. update() at least 20x faster than one put per key (each per-key contender)
    upd = _row(b, "3", 0, "etcdmap EtcdMapping.update(dict)")
    pure_puts = ("python-etcd3 put per key, pure-Python protobuf" if pure == "etcd3-pure"
                 else "python-etcd3 put per key")
    for label in ("etcdmap client.put per key", "etcd3gw put per key", pure_puts):
        per = _row(b, "3", 0, label)
        if upd and per:
            add(f"write many: {label} / update()", per["best_s"] / upd["best_s"], ">=", 20,
                f"{per['best_s'] * 1e3:.0f} ms vs update() {upd['best_s'] * 1e3:.1f} ms")
        elif not label.startswith("etcdmap"):
            add(f"write many: {label} / update()", None, ">=", 20, "",
                b.unavailable.get(label.split()[0].replace("python-", ""), "not measured"))
    # 5. peak memory independent of the key count
    mem = b.workloads.get("5", {}).get("memory")
    if mem:
        small, large = mem["sizes"]
        for row in mem["rows"]:
            if row["lib"] not in ETCDMAP_LIBS:
                continue
            r = row.get("tracemalloc_ratio")
            detail = (f"tracemalloc peak {_mib(row.get(f'tracemalloc_{small}'))} at {small} vs "
                      f"{_mib(row.get(f'tracemalloc_{large}'))} at {large} keys; RSS growth "
                      f"{_mib(row.get(f'rss_{small}'))} vs {_mib(row.get(f'rss_{large}'))}")
            add(f"iterate memory: {row['label']} peak {large}/{small} keys", r, "<=", 1.2,
                detail)
    # 6. cached reads
    d = _row(b, "6", 0, "plain dict d[k]")
    c = _row(b, "6", 0, "etcdmap m.cached()[k]")
    u = _row(b, "6", 0, "etcdmap m[k] (uncached)")
    if c and u:
        add("cached reads: uncached m[k] / cached()[k]", u["best_s"] / c["best_s"], ">=", 1000,
            f"{u['best_s'] * 1e6:.0f} us vs {c['best_s'] * 1e9:.0f} ns")
    if c and d:
        add("cached reads: cached()[k] / plain dict", c["best_s"] / d["best_s"], "<=", 3,
            f"{c['best_s'] * 1e9:.0f} ns vs {d['best_s'] * 1e9:.0f} ns")
    return out


# -- output -----------------------------------------------------------------------------------


def _mib(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v / 2**20:.2f} MiB"


def _fmt(seconds: float | None, unit: str) -> str:
    if seconds is None:
        return "-"
    if unit == "us/op":
        us = seconds * 1e6
        return f"{us * 1e3:.0f} ns" if us < 1 else f"{us:.1f} us"
    return f"{seconds * 1e3:.1f} ms"


def summary(b: Bench) -> str:
    """The headline figures, one row per contender: a markdown table for a README."""
    n, k = b.cfg.n_tree, b.cfg.n_getitems
    gi, gif, gs = f"m.getitems({k} keys)", f"m.getitems({k} keys), txn reads forced", \
        f"{k} x client.get(k)"
    # contender: (get, put, to_dict, one range, getitems, k single gets), labels per table
    mine: list[tuple[str, list[str | None]]] = [
        (f"etcdmap, {'gRPC' if lib == GRPC else 'JSON gateway'}",
         [f"{lib} client.get(k)", f"{lib} client.put(k, v)", f"{lib} EtcdMapping.to_dict()",
          f"{lib} client.range(prefix) -> dict (1 request)", f"{lib} {gi}", f"{lib} {gs}"])
        for lib in ETCDMAP_LIBS]
    spec: list[tuple[str, list[str | None]]] = [
        *mine,
        ("python-etcd3 (gRPC)", ["python-etcd3 get(k)", "python-etcd3 put(k, v)", None,
                                 "python-etcd3 get_prefix()",
                                 f"python-etcd3 transaction of {k} gets",
                                 f"python-etcd3 {k} x get(k)"]),
        ("etcd3gw (JSON gateway)", ["etcd3gw get(k)", "etcd3gw put(k, v)", None,
                                    "etcd3gw get_prefix()", None, None]),
        ("requests, naive", [NAIVE, NAIVE, None,
                             "requests naive: 1 unpaged range + json + b64", None, None]),
        ("requests, floor", [FLOOR, FLOOR, None, "requests floor: 1 unpaged range, body only",
                             None, None]),
    ]
    where = [("1", 0, "us"), ("1", 1, "us"), ("2", 0, "ms"), ("2", 0, "ms"), ("8", 0, "ms"),
             ("8", 0, "ms")]
    head = ["contender", "single get", "single put", f"{n:,}-key to_dict()",
            f"{n:,}-key one range", f"getitems {k} keys", f"{k} single gets"]
    rows = []
    for title, labels in spec:
        cells = [title]
        for label, (wid, table, unit) in zip(labels, where, strict=True):
            row = _row(b, wid, table, label) if label else None
            if label is None or row is None:
                cells.append("-")
                continue
            cell = (f"{row['best_s'] * 1e6:.0f} us" if unit == "us"
                    else f"{row['best_s'] * 1e3:.1f} ms")
            if label.endswith(gi):
                forced = _row(b, wid, table, label.replace(gi, gif))
                if forced and not row.get("txn_reads"):
                    cell += f" ({forced['best_s'] * 1e3:.1f} ms in txns)"
            cells.append(cell)
        if any(c != "-" for c in cells[1:]):
            rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def render(b: Bench, results: dict[str, Any]) -> str:
    lines: list[str] = []
    w = 52
    for wid in sorted(b.workloads):
        wl = b.workloads[wid]
        for t in wl.get("tables", []):
            lines.append("")
            lines.append(f"[{wid}] {t['name']}  (best = best round's mean; median = "
                         f"{t['rows'][0].get('median_kind', 'median') if t['rows'] else ''};"
                         f" ratio = time / {t['baseline'] or 'n/a'})")
            lines.append(f"  {'contender':<{w}} {'best':>10} {'median':>10} {'ratio':>8}"
                         f" {'ratio(med)':>10} {'client CPU':>10}")
            for r in t["rows"]:
                if r.get("error"):
                    lines.append(f"  {r['label']:<{w}} ERROR {r['error'][:60]}")
                    continue
                ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
                rmed = f"{r['ratio_median']:.2f}x" if "ratio_median" in r else "-"
                lines.append(f"  {r['label']:<{w}} {_fmt(r['best_s'], t['unit']):>10} "
                             f"{_fmt(r['median_s'], t['unit']):>10} {ratio:>8} {rmed:>10} "
                             f"{_fmt(r.get('cpu_best_s'), t['unit']):>10}")
            if t.get("note"):
                lines.append(f"  note: {t['note']}")
        if "memory" in wl:
            mem = wl["memory"]
            small, large = mem["sizes"]
            lines.append("")
            lines.append(f"[{wid}] {mem['name']}")
            lines.append(f"  {'contender':<{w - 12}} {'RSS ' + str(small):>12} "
                         f"{'RSS ' + str(large):>12} {'ratio':>6} {'tm ' + str(small):>11} "
                         f"{'tm ' + str(large):>11} {'ratio':>6}")
            for r in mem["rows"]:
                def ratio(key: str, r: dict[str, Any] = r) -> str:
                    return f"{r[key]:.2f}x" if key in r else "-"
                lines.append(
                    f"  {r['label']:<{w - 12}} {_mib(r.get(f'rss_{small}')):>12} "
                    f"{_mib(r.get(f'rss_{large}')):>12} {ratio('rss_ratio'):>6} "
                    f"{_mib(r.get(f'tracemalloc_{small}')):>11} "
                    f"{_mib(r.get(f'tracemalloc_{large}')):>11} {ratio('tracemalloc_ratio'):>6}")
            lines.append(f"  note: {mem['note']}")
        if "latency" in wl:
            lat = wl["latency"]
            lines.append("")
            lines.append(f"[{wid}] {lat['name']}  (ratio vs {lat['baseline']})")
            lines.append(f"  {'contender':<{w}} {'p50':>9} {'p99':>9} {'n':>5} {'p50 ratio':>10}"
                         f" {'p99 ratio':>10}")
            for r in lat["rows"]:
                if "p50_s" not in r:
                    lines.append(f"  {r['label']:<{w}} ERROR {r.get('error', '')[:60]}")
                    continue
                lines.append(f"  {r['label']:<{w}} {r['p50_s'] * 1e3:>7.2f}ms "
                             f"{r['p99_s'] * 1e3:>7.2f}ms {r['n']:>5} "
                             f"{r.get('ratio_p50', 0):>9.2f}x {r.get('ratio_p99', 0):>9.2f}x")
            lines.append(f"  note: {lat['note']}")
    lines.append("")
    lines.append(f"Summary (best round; etcd {results['meta']['etcd']}, "
                 f"{'quick' if results['meta']['quick'] else 'full'} run; also in summary.md)")
    lines.append(results["summary"])
    lines.append("")
    lines.append("Targets")
    for t in results["targets"]:
        if t["status"] == "SKIP":
            lines.append(f"  SKIP  {t['name']} {t['op']} {t['threshold']}: {t['detail']}")
        elif "shown" in t:
            lines.append(f"  {t['status']}  {t['name']}: {t['shown']} ({t['detail']})")
        else:
            lines.append(f"  {t['status']}  {t['name']} = {t['value']:.3g} "
                         f"(target {t['op']} {t['threshold']}; {t['detail']})")
    if b.unavailable:
        lines.append("")
        lines.append("Not measured")
        for lib, why in b.unavailable.items():
            lines.append(f"  {LIB_TITLES[lib]}: {why}")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'): no chart"
    panels: list[tuple[str, str, Any]] = []
    for wid in sorted(results["workloads"]):
        wl = results["workloads"][wid]
        for t in wl.get("tables", []):
            panels.append(("table", f"[{wid}] {t['name']}", t))
        if "memory" in wl:
            panels.append(("memory", f"[{wid}] {wl['memory']['name']}", wl["memory"]))
        if "latency" in wl:
            panels.append(("latency", f"[{wid}] watch latency", wl["latency"]))
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.2 * rows), squeeze=False)
    for ax, (kind, title, data) in zip(axes.flat, panels, strict=False):
        ax.set_title(title, fontsize=9)
        if kind == "table":
            good = [r for r in data["rows"] if r.get("best_s")]
            labels = [r["label"] for r in good]
            scale = 1e6 if data["unit"] == "us/op" else 1e3
            values = [r["best_s"] * scale for r in good]
            colors = [{"etcdmap": "tab:blue", GRPC: "tab:green"}.get(r["lib"], "tab:gray")
                      for r in good]
            ax.barh(labels, values, color=colors)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("us per op (log)" if scale == 1e6 else "ms (log)", fontsize=8)
            for i, r in enumerate(good):
                if "ratio" in r:
                    ax.text(values[i], i, f" {r['ratio']:.2f}x", va="center", fontsize=7)
        elif kind == "memory":
            small, large = data["sizes"]
            labels = [r["label"] for r in data["rows"]]
            ys = range(len(labels))
            for off, size, color in ((-0.2, small, "tab:cyan"), (0.2, large, "tab:purple")):
                vals = [(r.get(f"rss_{size}") or 0) / 2**20 for r in data["rows"]]
                ax.barh([y + off for y in ys], vals, height=0.4, color=color,
                        label=f"RSS growth, {size} keys")
            ax.set_yticks(list(ys), labels)
            ax.set_xlabel("MiB", fontsize=8)
            ax.legend(fontsize=7)
        else:
            good = [r for r in data["rows"] if "p50_s" in r]
            labels = [r["label"] for r in good]
            ys = range(len(labels))
            ax.barh([y - 0.2 for y in ys], [r["p50_s"] * 1e3 for r in good], height=0.4,
                    label="p50")
            ax.barh([y + 0.2 for y in ys], [r["p99_s"] * 1e3 for r in good], height=0.4,
                    label="p99")
            ax.set_yticks(list(ys), labels)
            ax.set_xlabel("ms", fontsize=8)
            ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    mode = "quick" if results["meta"]["quick"] else "full"
    fig.suptitle(f"etcdmap benchmarks ({mode} run, {results['meta']['started']}); "
                 "blue = etcdmap (JSON gateway), green = etcdmap-grpc, label = ratio to the "
                 "table's baseline", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark etcdmap against requests, etcd3gw and python-etcd3.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only-etcdmap", action="store_true",
                        help="measure etcdmap alone (no peer libraries needed)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"),
                        help="directory for results.json and results.png")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated subset of 1-8")
    parser.add_argument("--rounds", type=int, default=None, help="override the rounds")
    parser.add_argument("--etcd3-venv", choices=["auto", "yes", "no"], default="auto",
                        help="python-etcd3 in benchmarks/.venv-etcd3 (auto: use it if "
                             "present, create it on full runs)")
    parser.add_argument("--etcd3-python", default=None,
                        help="interpreter that has python-etcd3 importable")
    parser.add_argument("--no-chart", action="store_true")
    opts = parser.parse_args(argv)
    cfg = QUICK if opts.quick else FULL
    if opts.rounds:
        cfg = Config(**{**cfg.__dict__, "op_rounds": opts.rounds, "rounds": opts.rounds,
                        "cheap_rounds": opts.rounds, "iter_rounds": opts.rounds})
    chosen = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {unknown}")
    os.makedirs(opts.out, exist_ok=True)
    for old in glob.glob(os.path.join(opts.out, "worker-*.log")):
        os.remove(old)
    started = time.time()
    print(f"etcdmap benchmarks ({'quick' if opts.quick else 'full'} run)", flush=True)
    with EtcdServer(name="etcdmap-bench") as server:
        print(f"  etcd {server.version} at {server.endpoint} (data dir {server.data_dir})",
              flush=True)
        client = EtcdClient(server.endpoint, timeout=30)
        t0 = time.perf_counter()
        load(client, SINGLE, cfg.n_single)
        load(client, TREE, cfg.n_tree)
        if "5" in chosen:
            # The large set first: then both sets' revisions are above 256. Below
            # that CPython shares its small ints, and a smaller set written early
            # would look lighter per key for its revision numbers, not its size.
            for n in sorted(cfg.n_iter, reverse=True):
                load(client, _iter_prefix(n), n)
        print(f"  loaded the data in {time.perf_counter() - t0:.1f} s", flush=True)
        bench = Bench(opts, cfg, server.endpoint)
        elapsed: dict[str, float] = {"load": round(time.perf_counter() - t0, 1)}
        bench.checks = import_checks(server.endpoint)
        for check in bench.checks:
            print(f"  {check['name']}: 'grpc' in sys.modules = "
                  f"{check.get('grpc_imported', check.get('error'))}", flush=True)
        try:
            bench.start_workers()
            load_before = os.getloadavg()
            for wid in chosen:
                t_w = time.perf_counter()
                WORKLOADS[wid](bench)
                elapsed[wid] = round(time.perf_counter() - t_w, 1)
                print(f"    ({elapsed[wid]} s)", flush=True)
            load_after = os.getloadavg()
        finally:
            bench.close()
        client.close()
        etcd_version = server.version
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "quick": opts.quick, "only_etcdmap": opts.only_etcdmap,
            "config": cfg.__dict__, "etcd": etcd_version,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_before": load_before,
            "loadavg_after": load_after, "libraries": bench.info,
            "statistic": "best round (min of per-round means); medians alongside",
            "elapsed_s": elapsed,
        },
        "unavailable": bench.unavailable,
        "import_checks": bench.checks,
        "workloads": bench.workloads,
    }
    results["targets"] = targets(bench)
    results["summary"] = summary(bench)
    text = render(bench, results)
    with open(os.path.join(opts.out, "summary.md"), "w") as f:
        f.write(results["summary"] + "\n")
    print(text)
    json_path = os.path.join(opts.out, "results.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {os.path.relpath(json_path)}")
    if not opts.no_chart:
        print("wrote " + chart(results, os.path.join(opts.out, "results.png")))
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
