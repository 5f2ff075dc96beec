"""The documentation builds without warnings, and its examples are true.

* ``sphinx-build -W`` builds ``docs/`` (autodoc reads the docstrings).
* Every ``>>>`` example in README.rst and docs/*.rst runs with
  :func:`doctest.testfile` against the session's real etcd
  (``ETCDCTL_ENDPOINTS`` points at it), so the output shown is real output.
* Every ``.. code-block:: console`` block in docs/*.rst is a shell session:
  each ``$ command`` runs with ``sh`` in a scratch directory (with the same
  ``ETCDCTL_ENDPOINTS``), and what it prints must be the lines that follow it.
  Use ``.. code-block:: shell`` for commands that are not to be run.
* ``python -m etcdmap demo`` (:func:`etcdmap.cli.demo.run_demo`) tours the
  session's etcd, and what it says is checked line by line.
* A temporary directory an example makes (``tempfile.mkdtemp``) lands in the
  test's own ``tmp_path`` and is removed with it; ``conftest.py`` checks that
  no such directory outlives the test session.

Each document writes only under its own key prefix (``PREFIXES``): it is
emptied before and after the run, and the rest of the keyspace must be the
same afterwards.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import default_transport

from etcdmap import EtcdClient
from etcdmap.cli.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# The key prefix each document's examples write under.
PREFIXES = {
    "README.rst": "app",
    "quickstart.rst": "quickstart",
    "mapping.rst": "shop",
    "codecs.rst": "codecs",
    "ttl.rst": "sessions",
    "watch.rst": "watched",
    "clusters.rst": "clustered",
    "transports.rst": "transports",
    "tls.rst": "secured",
    "cli.rst": "cli-guide",
    "testing.rst": "testing-guide",
    "cache.rst": "cached",
    "coordination.rst": "coordination",
    "migrating.rst": "migrating",
    "benchmarks.rst": "benchmarks",
    "index.rst": "index",
    "api.rst": "api",
}
DOCUMENTS = [ROOT / "README.rst", *sorted(DOCS.glob("*.rst"))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_every_document_has_a_prefix() -> None:
    names = {path.name for path in DOCUMENTS}
    assert names <= set(PREFIXES), names - set(PREFIXES)
    assert len(set(PREFIXES.values())) == len(PREFIXES)


@pytest.fixture(scope="module", autouse=True)
def sphinx_build(tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[subprocess.Popen[str], Path] | None]:
    """``sphinx-build -W`` into a scratch directory, started at once so that it
    runs while the examples run (test_sphinx_builds_without_warnings waits for it);
    not in the gRPC run, which leaves that test out."""
    if default_transport() == "grpc":
        yield None
        return
    out = tmp_path_factory.mktemp("docs-build")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        yield proc, out
    finally:
        proc.kill()
        proc.communicate()


def _keys(client: EtcdClient, outside: str) -> dict[bytes, int]:
    """``{key: mod_revision}`` of the keyspace except under ``outside/`` (or at it)."""
    mine = outside.encode()
    return {kv.key: kv.mod_revision for kv in client.range_iter(b"\0", b"\0", keys_only=True)
            if kv.key != mine and not kv.key.startswith(mine + b"/")}


@pytest.fixture
def isolated(request: pytest.FixtureRequest, etcd_endpoint: str,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The document's prefix: empty before and after; nothing else may change."""
    path: Path = request.param
    prefix = PREFIXES[path.name]
    for name in [n for n in os.environ if n.startswith("ETCDCTL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", etcd_endpoint)
    with EtcdClient(etcd_endpoint) as client:
        client.delete_range(prefix, prefix=True)
        before = _keys(client, prefix)
        yield prefix
        after = _keys(client, prefix)
        client.delete_range(prefix, prefix=True)
    # Keys may vanish meanwhile (other tests' TTLs), but none may appear or change.
    touched = {k for k, rev in after.items() if before.get(k) != rev}
    assert not touched, f"{path.name} wrote outside {prefix!r}: {sorted(touched)}"


def _with_examples(pattern: str) -> list[Path]:
    return [p for p in DOCUMENTS if re.search(pattern, p.read_text(encoding="utf-8"), re.M)]


@pytest.mark.parametrize("isolated", _with_examples(r"^\s*>>> "), indirect=True,
                         ids=lambda p: p.name)
def test_doctests(isolated: str, request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    path: Path = request.node.callspec.params["isolated"]
    # A document may make temporary files (tls.rst's keys, with tempfile.mkdtemp)
    # without showing the reader how it tidies up: they go here, and go with it.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = doctest.testfile(str(path), module_relative=False, optionflags=FLAGS,
                              globs={"__name__": f"doctest_{path.stem}"}, verbose=False,
                              raise_on_error=False, report=True)
    shutil.rmtree(scratch)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {path.name} failed (see above)"


def _console_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, lines)`` of each ``.. code-block:: console``, dedented."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: console":
            start = i + 1
            while start < len(lines) and not lines[start].strip():
                start += 1
            indent = len(lines[start]) - len(lines[start].lstrip())
            end = start
            while end < len(lines) and (not lines[end].strip() or
                                        len(lines[end]) - len(lines[end].lstrip()) >= indent):
                end += 1
            block = [line[indent:] for line in lines[start:end]]
            while block and not block[-1].strip():
                block.pop()
            yield start + 1, block
            i = end
        else:
            i += 1


@pytest.mark.parametrize("isolated", _with_examples(r"^\.\. code-block:: console"),
                         indirect=True, ids=lambda p: p.name)
def test_console_sessions(isolated: str, request: pytest.FixtureRequest,
                          tmp_path: Path) -> None:
    path: Path = request.node.callspec.params["isolated"]
    env = dict(os.environ)
    # The console script of this interpreter's etcdmap comes first.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "etcdmap"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m etcdmap "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"
    work.mkdir()
    ran = 0
    for lineno, block in _console_blocks(path.read_text(encoding="utf-8")):
        commands: list[tuple[str, list[str]]] = []
        for line in block:
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                assert commands, f"{path.name}:{lineno}: output before any command"
                commands[-1][1].append(line)
        for command, expected in commands:
            proc = subprocess.run(["sh", "-c", command], cwd=work, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=60)
            shown = proc.stdout.rstrip("\n").split("\n") if proc.stdout.strip("\n") else []
            assert shown == expected, f"{path.name}:{lineno}: $ {command}"
            ran += 1
    assert ran
    shutil.rmtree(work)


@pytest.mark.no_transport
def test_sphinx_builds_without_warnings(
        sphinx_build: tuple[subprocess.Popen[str], Path] | None) -> None:
    assert sphinx_build is not None
    proc, out = sphinx_build
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert (out / "html" / "index.html").is_file()
    assert (out / "html" / "api.html").is_file()


# What the demo says: {P} is its prefix, {EP} the endpoint, {TTL} a lease's
# seconds left, {S} seconds waited, {REV} a revision.
DEMO = """\
using etcd at {EP}

1. A dict over the prefix '{P}'
   cfg.to_dict() -> {"db": {"host": "db.internal", "port": "5432"}, "name": "shop"}
   len(cfg) -> 2; sorted(cfg) -> ['db', 'name']
   '{db[host]}:{db[port]}'.format_map(cfg) -> 'db.internal:5432'

2. A nested sub-mapping writes through
   cfg['db'] -> EtcdMapping(prefix='{P}db/', endpoints=['{EP}'])
   after db['user'] = 'app': etcd holds ['{P}db/host', '{P}db/port', '{P}db/user', '{P}name']

3. A key with a 2 s TTL
   'session' in cfg -> True; cfg.ttl('session') -> {TTL}
   DELETE after {S} s; 'session' in cfg -> False

4. Compare-and-swap
   cfg.replace('name', 'shop', 'store') -> True
   cfg.replace('name', 'shop', 'again') -> False
   cfg.setdefault('name', 'other') -> 'store'

5. A watch sees a change made by another thread
   PUT db/port: '5432' -> '6543' at revision {REV}"""


def _demo_pattern(template: str, endpoint: str, prefix: str) -> str:
    """A line of ``DEMO`` as a regular expression; ``prefix`` is the pattern for {P}."""
    fields = {"{P}": prefix, "{EP}": re.escape(endpoint), "{TTL}": "[0-2]", "{S}": r"\d+\.\d",
              "{REV}": r"\d+"}
    parts = re.split(r"(\{(?:P|EP|TTL|S|REV)\})", template)
    return "".join(fields.get(part) or re.escape(part) for part in parts)


def test_the_demo_tours_the_sessions_etcd_and_leaves_nothing(etcd_endpoint: str) -> None:
    said: list[str] = []
    run_demo(etcd_endpoint, say=said.append)
    lines, expected = "\n".join(said).split("\n"), DEMO.split("\n")
    found = re.fullmatch(_demo_pattern(expected[2], etcd_endpoint, "(etcdmap-demo/[0-9a-f]+/)"),
                         lines[2])
    assert found, lines
    assert len(lines) == len(expected), lines
    for line, template in zip(lines, expected, strict=True):
        assert re.fullmatch(_demo_pattern(template, etcd_endpoint, re.escape(found[1])), line), (
            template, line)
    with EtcdClient(etcd_endpoint) as client:
        assert client.range(found[1], prefix=True).kvs == ()
