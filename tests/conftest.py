"""Shared fixtures; the etcd server fixtures come from etcdmap.pytest_plugin."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Every example talks to a real etcd, so deadlines measure the machine, not us.
settings.register_profile(
    "etcd",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("etcd"), max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "etcd"))
