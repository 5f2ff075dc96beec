"""``cfg.atomic`` across real processes (issue 13): the bank test.

Eight Python processes (``python -c``, each with its own client) each make
``TRANSFERS`` random transfers between ten accounts with ``cfg.atomic``; the
body refuses a transfer (returns without writing) when the source would go
negative.  Every process reports the transfers it made and how often its
function ran; the runs beyond one per transfer are the conflicts it retried.
The processes say when they are ready and start together on the test's word,
so their transfers overlap; what is asserted holds whatever the interleaving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from etcdmap import EtcdClient, EtcdMapping

PROCESSES = 8
ACCOUNTS = 10
TRANSFERS = 30  # per process
OPENING = 100  # each account's opening balance
WAIT = 60.0  # seconds all the processes together may take

WORKER = r"""
import json, random, sys
from etcdmap import EtcdMapping

endpoint, prefix = sys.argv[1], sys.argv[2]
accounts, transfers, seed = map(int, sys.argv[3:6])
names = [str(i) for i in range(accounts)]
rng = random.Random(seed)
runs = 0

def transfer(tx, src, dst, amount):
    global runs
    runs += 1
    have = int(tx[src])
    if have < amount:
        return False  # refused: nothing written
    tx[src] = str(have - amount)
    tx[dst] = str(int(tx[dst]) + amount)
    return True

with EtcdMapping(prefix, endpoints=endpoint) as bank:
    print("ready", flush=True)
    sys.stdin.readline()  # the test's word to start
    made, refused = [], 0
    for _ in range(transfers):
        src, dst = rng.sample(names, 2)
        amount = rng.randint(1, 60)
        if bank.atomic(lambda tx: transfer(tx, src, dst, amount)):
            made.append([src, dst, amount])
        else:
            refused += 1
    print(json.dumps({"runs": runs, "calls": transfers, "made": made, "refused": refused}))
"""


@pytest.fixture
def bank(etcd_client: EtcdClient, etcd_prefix: str) -> EtcdMapping:
    """Ten accounts, ``OPENING`` each."""
    m = EtcdMapping(f"{etcd_prefix}/bank", client=etcd_client)
    m.update({str(i): str(OPENING) for i in range(ACCOUNTS)})
    return m


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Started worker processes, killed if the test ends before they do."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_eight_processes_moving_money_keep_the_total_and_no_account_negative(
        bank: EtcdMapping, etcd_endpoint: str, processes: list[subprocess.Popen[str]],
        record_property: Callable[[str, object], None]) -> None:
    began = time.monotonic()
    for seed in range(PROCESSES):
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, etcd_endpoint, bank.prefix, str(ACCOUNTS),
             str(TRANSFERS), str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in processes:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", (line, proc.stderr.read() if proc.stderr else "")
    moving = time.monotonic()
    reports = []
    for proc in processes:  # everyone is ready: start them all together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in processes:
        out, err = proc.communicate(timeout=max(WAIT - (time.monotonic() - began), 1))
        assert proc.returncode == 0, err
        reports.append(json.loads(out.splitlines()[-1]))
    done = time.monotonic()

    balances = {name: int(value) for name, value in bank.items()}
    assert sorted(balances) == [str(i) for i in range(ACCOUNTS)]
    assert sum(balances.values()) == ACCOUNTS * OPENING
    assert min(balances.values()) >= 0
    # Every transfer a process saw succeed landed exactly once; nothing else did.
    expected = dict.fromkeys(balances, OPENING)
    for report in reports:
        assert report["calls"] == TRANSFERS == len(report["made"]) + report["refused"]
        for src, dst, amount in report["made"]:
            expected[src] -= amount
            expected[dst] += amount
    assert balances == expected

    conflicts = [r["runs"] - r["calls"] for r in reports]
    assert min(conflicts) >= 0
    made = sum(len(r["made"]) for r in reports)
    refused = sum(r["refused"] for r in reports)
    record_property("bank_conflicts_per_process", conflicts)
    record_property("bank_conflicts", sum(conflicts))
    record_property("bank_transfers", {"made": made, "refused": refused})
    print(f"\nbank: {PROCESSES} processes x {TRANSFERS} transfers: {made} made, {refused} "
          f"refused; conflicts retried: {sum(conflicts)} (per process {conflicts}); "
          f"{done - moving:.1f} s moving, {done - began:.1f} s in all")
