"""pytest fixtures for testing code that uses etcd, against a real etcd.

Installed as a pytest plugin with etcdmap.  One etcd server is started per test
session (on free loopback ports, in a temporary data dir); each test gets its
own key prefix, emptied afterwards::

    def test_config(etcd_client, etcd_prefix):
        etcd_client.put(etcd_prefix + "/a", "1")

Set ``ETCDMAP_TEST_ENDPOINTS`` to use a running etcd instead, and
``ETCDMAP_ETCD_BINARY`` to pick the etcd binary.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator

import pytest

from etcdmap.client import EtcdClient
from etcdmap.launcher import EtcdServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer | None]:
    """A real etcd for the whole session (``None`` with ETCDMAP_TEST_ENDPOINTS)."""
    if os.environ.get("ETCDMAP_TEST_ENDPOINTS"):
        yield None
        return
    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_server: EtcdServer | None) -> str:
    """The URL of the session's etcd."""
    if etcd_server is None:
        return os.environ["ETCDMAP_TEST_ENDPOINTS"].split(",")[0]
    return etcd_server.endpoint


@pytest.fixture
def etcd_client(etcd_endpoint: str) -> Iterator[EtcdClient]:
    """A fresh client of the session's etcd, closed after the test."""
    with EtcdClient(etcd_endpoint) as client:
        yield client


@pytest.fixture
def etcd_prefix(etcd_endpoint: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test (no trailing separator); emptied afterwards."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    prefix = f"etcdmap-test/{name}-{os.getpid()}-{next(_counter)}"
    yield prefix
    with EtcdClient(etcd_endpoint) as client:
        client.delete_range(prefix, prefix=True)
