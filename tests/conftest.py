"""Shared fixtures; the etcd server fixtures come from etcdmap.pytest_plugin."""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import Relay, call_log_of, default_transport
from hypothesis import HealthCheck, settings

from etcdmap import CachedMapping, EtcdClient, EtcdMapping

# Every example talks to a real etcd, so deadlines measure the machine, not us.
settings.register_profile(
    "etcd",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("etcd"), max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "etcd"))


@pytest.fixture(scope="session", autouse=True)
def _no_temporary_directory_left_behind() -> Iterator[None]:
    """Every directory made with ``tempfile.mkdtemp`` in this process is gone by the end."""
    made: list[str] = []
    original = tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = original(*args, **kwargs)
        made.append(path)
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "mkdtemp", mkdtemp)
        yield
    gc.collect()  # an unreferenced EtcdServer removes its data directory when collected
    left = [path for path in made if os.path.exists(path)]
    assert not left, f"the tests left temporary directories behind: {left}"


def http_log_of(client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The gateway path of every request ``client`` sends from now on, on either transport.

    Over gRPC each call is logged under the path the gateway gives it
    (``Range`` as ``/v3/kv/range``), so request counts read the same.
    """
    return call_log_of(client, monkeypatch, full=False)


@pytest.fixture
def http_log(etcd_client: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The URL path of every HTTP request ``etcd_client`` sends from now on."""
    yield http_log_of(etcd_client, monkeypatch)


@pytest.fixture
def caches() -> Iterator[Callable[..., CachedMapping]]:
    """``caches(mapping, **kw)``: ``mapping.cached(**kw)``, closed after the test."""
    opened: list[CachedMapping] = []

    def open_cache(mapping: EtcdMapping, **kw: Any) -> CachedMapping:
        cache = mapping.cached(**kw)
        opened.append(cache)
        return cache

    yield open_cache
    for cache in opened:
        cache.close()


@pytest.fixture
def relay(etcd_endpoint: str) -> Iterator[Relay]:
    """A relay in front of the session's etcd (see helpers.Relay)."""
    r = Relay(etcd_endpoint)
    yield r
    r.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Over gRPC (``ETCDMAP_TRANSPORT=grpc``), tests of the HTTP transport itself and
    tests that use no client of the chosen transport (they ran in the HTTP run) are
    deselected (and counted as such), whatever ``-m`` says."""
    if default_transport() != "grpc":
        return

    def once(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(name) for name in ("http_only", "no_transport"))

    skipped = [item for item in items if once(item)]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not once(item)]
