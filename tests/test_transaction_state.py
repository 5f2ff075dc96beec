"""``cfg.transaction()`` against a dict model, with a second writer in between, by hypothesis.

One transaction is always open.  Rules read, write and delete through it, and
a second client writes or deletes keys between any two of its steps; a commit
(or an abort) ends it and opens the next.  The keys are few (leaves ``a``,
``b``, ``c``, ``d/x``, ``d/y``; ``d`` is only ever a subtree), so the writers
collide often.

The model is the state etcd holds (flat: key -> value) plus, for the open
transaction, its snapshot (a copy of that state, taken by the first read that
goes to etcd), its planned operations (the overlay, applied in order to the
snapshot for reads and to etcd's state at commit), and what it read from etcd:
the keys it looked up one by one and the subtrees it listed.  A read the
transaction answers from its own writes goes nowhere; a listing always goes to
etcd (once per subtree), so it counts even where the transaction's own writes
shadow the subtree.  At commit the model predicts :class:`EtcdConflict` iff the
transaction wrote something and what it read no longer holds: the second
writer, after the snapshot, put or deleted a key it looked up or any key in a
subtree it listed, and that key was there in the snapshot (its mod revision
moved, even if its value came back) or is there now (it was absent; a key
created and deleted again is still absent, which is no conflict).  Otherwise
etcd must then hold the model's state exactly.

Every draw depends only on earlier draws and the model, never on timing.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from etcdmap import EtcdClient, EtcdConflict, EtcdMapping, Transaction

LEAVES = ["a", "b", "c", "d/x", "d/y"]
NAMES = [*LEAVES, "d"]
leaves = st.sampled_from(LEAVES)
names = st.sampled_from(NAMES)
values = st.sampled_from(["0", "1", "2"])

STEPS = 3  # a transaction ends (commit or abort) only after this many other steps
Op = tuple[str, str, str]  # ("put", key, value) | ("del", key, "") | ("clear", "", "")


def _under(key: str, prefix: str) -> bool:
    return key.startswith(prefix)


def cleared_by(op: Op, key: str) -> bool:
    """Whether ``op`` removes ``key`` (as a nested dict would), not counting a put at it."""
    kind, target, _ = op
    if kind == "clear":
        return True
    if kind == "del":
        return key == target or _under(key, target + "/")
    # A put removes the subtree below it and any leaf at an ancestor.
    return _under(key, target + "/") or _under(target, key + "/")


def apply(ops: list[Op], state: dict[str, str]) -> dict[str, str]:
    """``state`` after ``ops``, in order."""
    out = dict(state)
    for op in ops:
        for key in [k for k in out if cleared_by(op, k)]:
            del out[key]
        if op[0] == "put":
            out[op[1]] = op[2]
    return out


def nested(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


class Boom(Exception):
    pass


class TransactionMachine(RuleBasedStateMachine):
    """``self.tx`` (one open transaction of ``self.m``) and ``self.other`` against the model."""

    def __init__(self, m: EtcdMapping, other: EtcdMapping):
        super().__init__()
        self.m, self.other = m, other
        self.etcd: dict[str, str] = {}  # what etcd holds
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.begin()

    def begin(self) -> None:
        self.cm = self.m.transaction()
        self.tx: Transaction = self.cm.__enter__()
        self.snapshot: dict[str, str] | None = None
        self.ops: list[Op] = []
        self.looked_up: set[str] = set()  # keys read from etcd one by one
        self.listed: set[str] = set()  # prefixes of subtrees read from etcd ("": all)
        self.changed: set[str] = set()  # keys the other writer put or deleted after it
        self.steps = 0  # rules run in this transaction

    @initialize(state=st.dictionaries(leaves, values))
    def seed(self, state: dict[str, str]) -> None:
        """What etcd holds before the first transaction reads."""
        for key, value in state.items():
            self.other[key] = value
            self.etcd[key] = value

    def teardown(self) -> None:
        self.cm.__exit__(Boom, Boom(), None)
        self.m.clear()

    # -- the model of the open transaction ---------------------------------------------

    def pin(self) -> None:
        if self.snapshot is None:
            self.snapshot = dict(self.etcd)

    def view(self) -> dict[str, str]:
        assert self.snapshot is not None
        return apply(self.ops, self.snapshot)

    def own(self, key: str) -> tuple[bool, str | None]:
        """Whether the transaction's own writes decide ``key``, and its value if so."""
        for op in reversed(self.ops):
            if op[0] == "put" and op[1] == key:
                return True, op[2]
            if cleared_by(op, key):
                return True, None
        return False, None

    def leaf(self, key: str) -> str | None:
        decided, value = self.own(key)
        if decided:
            return value
        if not any(_under(key, p) for p in self.listed):  # else listed already
            self.pin()
            self.looked_up.add(key)
        return self.view().get(key)

    def listing(self, prefix: str) -> dict[str, str]:
        self.pin()
        self.listed.add(prefix)
        return {k: v for k, v in self.view().items() if _under(k, prefix)}

    def lookup(self, key: str) -> str | dict[str, str] | None:
        """What ``tx[key]`` finds: a leaf's value, a subtree (flat), or None."""
        value = self.leaf(key)
        if value is not None:
            return value
        return self.listing(key + "/") or None

    def check_pinned(self) -> None:
        assert (self.tx.revision > 0) == (self.snapshot is not None), self.tx.revision

    # -- reads ----------------------------------------------------------------------

    @rule(key=names)
    def get(self, key: str) -> None:
        self.steps += 1
        expected = self.lookup(key)
        got = self.tx.get(key)
        if isinstance(expected, dict):
            assert isinstance(got, Transaction)
            assert got.to_dict() == nested({k[len(key) + 1:]: v for k, v in expected.items()})
        else:
            assert got == expected
        self.check_pinned()

    @rule(key=names)
    def contains(self, key: str) -> None:
        self.steps += 1
        assert (key in self.tx) == (self.lookup(key) is not None)
        self.check_pinned()

    @rule()
    def list_d(self) -> None:
        self.steps += 1
        expected = self.listing("d/")
        sub = self.tx.submapping("d")
        assert sub.to_dict() == nested({k[2:]: v for k, v in expected.items()})
        assert len(sub) == len(expected)
        self.check_pinned()

    @rule()
    def list_all(self) -> None:
        self.steps += 1
        expected = nested(self.listing(""))
        assert self.tx.to_dict() == expected
        assert sorted(self.tx) == sorted(expected)
        self.check_pinned()

    # -- writes -----------------------------------------------------------------------

    @rule(key=leaves, value=values)
    def put(self, key: str, value: str) -> None:
        self.steps += 1
        self.tx[key] = value
        self.ops.append(("put", key, value))

    @rule(key=names)
    def delete(self, key: str) -> None:
        self.steps += 1
        present = self.lookup(key) is not None
        try:
            del self.tx[key]
        except KeyError:
            assert not present, f"del tx[{key!r}] raised KeyError but the model has it"
        else:
            assert present, f"del tx[{key!r}] succeeded but the model lacks it"
            self.ops.append(("del", key, ""))
        self.check_pinned()

    @rule(key=names)
    def pop(self, key: str) -> None:
        self.steps += 1
        expected = self.lookup(key)
        got = self.tx.pop(key, None)
        if isinstance(expected, dict):  # a subtree comes back as a plain dict
            expected = nested({k[len(key) + 1:]: v for k, v in expected.items()})
        assert got == expected
        if expected is not None:
            self.ops.append(("del", key, ""))
        self.check_pinned()

    @rule()
    def clear(self) -> None:
        self.steps += 1
        self.tx.clear()
        self.ops.append(("clear", "", ""))

    # -- the second writer ----------------------------------------------------------------

    @rule(key=leaves, value=values)
    def other_puts(self, key: str, value: str) -> None:
        self.steps += 1
        self.other[key] = value
        self.etcd[key] = value
        if self.snapshot is not None:
            self.changed.add(key)

    @rule(key=names)
    def other_deletes(self, key: str) -> None:
        self.steps += 1
        gone = [k for k in self.etcd if k == key or _under(k, key + "/")]
        try:
            del self.other[key]
        except KeyError:
            assert not gone
        else:
            assert gone
            for k in gone:
                del self.etcd[k]
            if self.snapshot is not None:
                self.changed.update(gone)

    # -- the end of a transaction -----------------------------------------------------------

    def etcd_holds(self) -> dict[str, str]:
        base = self.m.prefix.encode()
        kvs = self.m.client.range(base, prefix=True).kvs
        return {kv.key[len(base):].decode(): kv.value.decode() for kv in kvs}

    @precondition(lambda self: self.steps >= STEPS)
    @rule()
    def commit(self) -> None:
        # What it read no longer holds: a key it saw was changed (even back to its
        # value: its mod revision moved), or a key it saw absent is there now.
        assert self.snapshot is not None or not self.changed
        stale = [k for k in sorted(self.changed)
                 if (k in self.looked_up or any(_under(k, p) for p in self.listed))
                 and (k in (self.snapshot or {}) or k in self.etcd)]
        conflict = bool(self.ops) and bool(stale)
        try:
            self.cm.__exit__(None, None, None)
        except EtcdConflict:
            assert conflict, f"a conflict, but the other writer changed only {self.changed}"
            self.outcomes["conflict"] += 1
        else:
            assert not conflict, f"no conflict, but the other writer changed {stale}"
            self.etcd = apply(self.ops, self.etcd)
            self.outcomes["commit" if self.ops else "read-only"] += 1
            if self.ops and self.changed:
                self.outcomes["commit beside the other writer's changes"] += 1
        assert self.etcd_holds() == self.etcd
        self.begin()

    @precondition(lambda self: self.steps >= STEPS)
    @rule()
    def abort(self) -> None:
        assert self.cm.__exit__(Boom, Boom(), None) is False  # the exception goes on
        assert self.etcd_holds() == self.etcd
        self.begin()


# Passing takes well under a minute; the generous timeout lets hypothesis finish
# shrinking a failure.
@pytest.mark.timeout(600)
def test_transactions_behave_like_a_snapshot_and_an_overlay(
        etcd_client: EtcdClient, etcd_endpoint: str, etcd_prefix: str) -> None:
    counter = itertools.count()
    machines: list[TransactionMachine] = []
    with EtcdClient(etcd_endpoint) as other_client:

        def fresh_machine() -> TransactionMachine:
            prefix = f"{etcd_prefix}/{next(counter)}"
            machine = TransactionMachine(EtcdMapping(prefix, client=etcd_client),
                                         EtcdMapping(prefix, client=other_client))
            machines.append(machine)
            return machine

        run_state_machine_as_test(fresh_machine, settings=settings(stateful_step_count=50))
    # How often each outcome came up (``-s`` shows it).  None is required: the
    # deterministic tests in test_transaction.py show each of them.
    outcomes = sum((machine.outcomes for machine in machines), collections.Counter())
    print(f"\ntransaction state machine, {len(machines)} examples: {dict(outcomes)}")
