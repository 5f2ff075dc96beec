"""The benchmark suite runs end to end: ``benchmarks/run.py --quick --only-etcdmap``.

It starts its own etcd, so this needs only what the test extra installs (no
peer libraries, no matplotlib).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_transport  # runs once, not again over gRPC

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


@pytest.mark.timeout(300)
def test_quick_benchmark_writes_every_workload(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only-etcdmap", "--no-chart",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["workloads"]) == {str(i) for i in range(1, 9)}
    workloads = results["workloads"]
    for wid in ("1", "2", "3", "4", "6"):
        tables = workloads[wid]["tables"]
        assert tables, wid
        for table in tables:
            measured = [r for r in table["rows"] if r.get("best_s")]
            libs = {r["lib"] for r in measured}
            assert libs == {"etcdmap", "etcdmap-grpc"}, (wid, table)
            assert not [r for r in table["rows"] if r.get("error")], (wid, table)
    memory = workloads["5"]["memory"]["rows"]
    assert {r["label"] for r in memory} == {
        f"{lib} {what}" for lib in ("etcdmap", "etcdmap-grpc")
        for what in ("EtcdMapping.items()", "client.range_iter()")}
    assert all(r["tracemalloc_ratio"] > 0 for r in memory)
    latency = workloads["7"]["latency"]["rows"]
    assert latency and all(r["n"] > 0 and r["p99_s"] > 0 for r in latency)
    statuses = {t["name"]: t["status"] for t in results["targets"]}
    assert statuses, results["targets"]
    assert "Targets" in proc.stdout
