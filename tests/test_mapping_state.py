"""``EtcdMapping`` against a plain nested ``dict``, driven by hypothesis.

The rules and the model are :class:`machines.MappingMachine`'s, shared with
the cache's machine (``test_cache_state.py``).  Every example runs on a fresh
prefix under the test's ``etcd_prefix``.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from machines import MappingMachine

from etcdmap import EtcdClient, EtcdMapping


# Passing takes well under a minute with the "ci" profile; the generous timeout
# lets hypothesis finish shrinking a failure (it gives up after 5 minutes).
@pytest.mark.timeout(600)
def test_mapping_behaves_like_a_nested_dict(etcd_client: EtcdClient, etcd_prefix: str) -> None:
    counter = itertools.count()

    def fresh_machine() -> MappingMachine:
        return MappingMachine(EtcdMapping(f"{etcd_prefix}/{next(counter)}", client=etcd_client))

    # max_examples comes from the active profile ("ci": 100).
    run_state_machine_as_test(fresh_machine, settings=settings(stateful_step_count=20))
