"""A throw-away etcd cluster of several members on 127.0.0.1."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import requests

from .server import EtcdServer, EtcdTestingError, TLSFiles, find_etcd_binary, free_ports

__all__ = ["EtcdCluster"]


class EtcdCluster:
    """A ``size``-member etcd cluster on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | None = None,
        name: str = "etcdmap",
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        binary = find_etcd_binary(binary)
        ports = free_ports(2 * size)  # all at once, so members never collide
        names = [f"{name}-{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
        token = f"{name}-{uuid.uuid4().hex[:12]}"
        self.startup_timeout = startup_timeout
        self.members: list[EtcdServer] = [
            EtcdServer(
                binary=binary, name=n, client_port=ports[2 * i], peer_port=ports[2 * i + 1],
                extra_args=extra_args, tls=tls, env=env, startup_timeout=startup_timeout,
                initial_cluster=initial, initial_cluster_token=token,
            )
            for i, n in enumerate(names)
        ]  # fmt: skip

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of all members, in member order."""
        return [m.endpoint for m in self.members]

    def start(self) -> EtcdCluster:
        """Start every process, then wait until every member is healthy."""
        deadline = time.monotonic() + self.startup_timeout
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                member.wait_healthy(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every member and remove their data dirs."""
        for member in self.members:
            member.stop()

    def _status(self, member: EtcdServer) -> dict[str, Any] | None:
        try:
            resp = requests.post(
                f"{member.endpoint}/v3/maintenance/status", json={}, timeout=1.0,
                **member.requests_kwargs(),
            )  # fmt: skip
            body = resp.json() if resp.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _find_leader(self) -> int | None:
        best: int | None = None
        best_term = -1
        for i, member in enumerate(self.members):
            if not member.running or member.paused:
                continue
            status = self._status(member)
            if status is None:
                continue
            own = status.get("header", {}).get("member_id")
            term = int(status.get("raftTerm", 0))
            # A member reporting itself as leader; the highest term wins over a stale ex-leader.
            if own is not None and status.get("leader") == own and term > best_term:
                best, best_term = i, term
        return best

    def wait_for_leader(
        self, timeout: float = 10.0, exclude: int | Collection[int] | None = None
    ) -> int:
        """Return the leader's index once one (not in ``exclude``) is elected."""
        excluded = {exclude} if isinstance(exclude, int) else set(exclude or ())
        deadline = time.monotonic() + timeout
        while True:
            leader = self._find_leader()
            if leader is not None and leader not in excluded:
                return leader
            if time.monotonic() >= deadline:
                msg = f"no leader (excluding {sorted(excluded)}) after {timeout}s (saw {leader})"
                raise EtcdTestingError(msg)
            time.sleep(0.1)

    def leader_index(self, timeout: float = 10.0) -> int:
        """Index in :attr:`members` of the current leader (retries until known)."""
        return self.wait_for_leader(timeout)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (data dir kept)."""
        self.members[i].kill()

    def restart(self, i: int, *, wait: bool = True) -> None:
        """Restart member ``i`` with its data dir and ports; wait until it is healthy."""
        self.members[i].restart(wait=wait)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``."""
        self.members[i].pause()

    def resume(self, i: int) -> None:
        """SIGCONT member ``i``."""
        self.members[i].resume()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.members!r}>"
