"""The ``etcdmap`` command, run as ``python -m etcdmap`` against real etcd servers.

Every test runs the real command line in a subprocess; nothing is mocked.  To
show the behaviour without an optional dependency, the subprocess blocks that
import (``sys.modules[name] = None``) before running ``etcdmap.cli.main``.
"""

from __future__ import annotations

import base64
import fcntl
import http.server
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from etcdmap import EtcdClient
from etcdmap.testing import EtcdServer, TLSFiles, free_port

ETCDCTL = ("ENDPOINTS", "CACERT", "CERT", "KEY", "USER", "PASSWORD", "DIAL_TIMEOUT")


@dataclass
class Result:
    code: int
    out: str
    err: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env.update(extra or {})
    return env


def watch_lines(ep: str, prefix: str, start: int, count: int,
                then: Callable[[], object] | None = None) -> list[dict[str, Any]]:
    """``etcdmap watch PREFIX --rev START``: its first ``count`` lines (then one more after
    ``then()``), and proof that Ctrl-C ends it quietly with exit code 0."""
    proc = subprocess.Popen([sys.executable, "-m", "etcdmap", "watch", prefix, "--rev",
                             str(start), "--endpoints", ep], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(count)]
        if then is not None:
            then()
            lines.append(json.loads(proc.stdout.readline()))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out, err) == (0, "", "")
    return lines


def run(*args: str, endpoint: str | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None, block: Sequence[str] = ()) -> Result:
    """``python -m etcdmap ARGS`` (with ``--endpoints`` when given)."""
    argv = [*args, "--endpoints", endpoint] if endpoint else list(args)
    if block:
        code = (f"import sys; sys.modules.update(dict.fromkeys({list(block)!r})); "
                "from etcdmap.cli import main; raise SystemExit(main(sys.argv[1:]))")
        cmd = [sys.executable, "-c", code, *argv]
    else:
        cmd = [sys.executable, "-m", "etcdmap", *argv]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60,
                          env=_env(env))
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_all(commands: Sequence[Sequence[str]], endpoint: str) -> list[Result]:
    """Several independent runs at once (an empty command runs without ``--endpoints``)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run(*args, endpoint=endpoint if args else None),
                             commands))


def one_line_error(result: Result, code: int, *fragments: str) -> None:
    """The run failed with ``code`` and exactly one line on stderr holding ``fragments``."""
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("etcdmap"), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.err


def tree(client: EtcdClient, prefix: str) -> dict[str, str]:
    """Every key under ``prefix/``, relative to it."""
    base = prefix + "/"
    return {k[len(base):]: v for k, v in client.get_recursive(prefix).items()
            if k.startswith(base)}


@pytest.fixture
def ep(etcd_endpoint: str) -> str:
    return etcd_endpoint


# -- get, set, rm ----------------------------------------------------------------------------


def test_set_get_rm_and_their_exit_codes(ep: str, etcd_prefix: str,
                                         etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    assert run("set", f"{p}/db/host", "db.internal", endpoint=ep) == Result(0, "", "")
    assert run("set", f"{p}/name", "shop ünïcode", endpoint=ep).code == 0
    assert run("get", f"{p}/db/host", endpoint=ep) == Result(0, "db.internal\n", "")
    assert run("get", f"{p}/name", endpoint=ep).out == "shop ünïcode\n"
    # A directory prints as a JSON document.
    got = run("get", f"{p}/db", endpoint=ep)
    assert got.code == 0 and json.loads(got.out) == {"host": "db.internal"}
    one_line_error(run("get", f"{p}/nope", endpoint=ep), 1, f"{p}/nope", "not found")
    # rm: a leaf; a directory needs -r; a missing key is exit 1.
    one_line_error(run("rm", f"{p}/db", endpoint=ep), 2, "directory", "-r")
    assert etcd_client.get(f"{p}/db/host").value == "db.internal"
    assert run("rm", f"{p}/name", endpoint=ep) == Result(0, "", "")
    one_line_error(run("rm", f"{p}/name", endpoint=ep), 1, "not found")
    assert run("rm", "-r", f"{p}/db/", endpoint=ep) == Result(0, "", "")
    one_line_error(run("rm", "-r", f"{p}/db", endpoint=ep), 1, "not found")
    assert tree(etcd_client, p) == {}


def test_set_follows_the_mapping_rules(ep: str, etcd_prefix: str,
                                       etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    etcd_client.put(f"{p}/a/x", "1")
    etcd_client.put(f"{p}/a/y", "2")
    assert run("set", f"{p}/a", "leaf", endpoint=ep).code == 0  # replaces the directory
    assert tree(etcd_client, p) == {"a": "leaf"}
    # As cfg["a/b"] = "deep" would: the value at a/ goes, a nested dict cannot hold both.
    assert run("set", f"{p}/a/b", "deep", endpoint=ep).code == 0
    assert tree(etcd_client, p) == {"a/b": "deep"}
    etcd_client.put(f"{p}/a", "written by another tool")
    assert run("set", f"{p}/a/b/c", "deeper", "--ttl", "60", endpoint=ep).code == 0
    assert tree(etcd_client, p) == {"a/b/c": "deeper"}
    # Keys written with a leading slash are those etcd keys.
    assert run("set", f"/{p}/abs", "slash", endpoint=ep).code == 0
    assert etcd_client.get(f"/{p}/abs").value == "slash"
    assert run("get", f"/{p}/abs", endpoint=ep).out == "slash\n"
    etcd_client.delete(f"/{p}/abs")


def test_set_with_ttl_attaches_a_lease(ep: str, etcd_prefix: str,
                                       etcd_client: EtcdClient) -> None:
    key = f"{etcd_prefix}/session"
    assert run("set", key, "token", "--ttl", "30", endpoint=ep).code == 0
    kv = etcd_client.range(key).kvs[0]
    assert kv.value == b"token" and kv.lease
    assert 0 < etcd_client.lease_time_to_live(kv.lease).ttl <= 30
    one_line_error(run("set", key, "x", "--ttl", "0", endpoint=ep), 2, "--ttl")


def test_get_prints_bytes_unchanged(ep: str, etcd_prefix: str,
                                    etcd_client: EtcdClient) -> None:
    etcd_client.put(f"{etcd_prefix}/blob", b"\xff\x00raw")
    proc = subprocess.run([sys.executable, "-m", "etcdmap", "get", f"{etcd_prefix}/blob",
                           "--endpoints", ep], capture_output=True, timeout=60, env=_env())
    assert (proc.returncode, proc.stdout) == (0, b"\xff\x00raw\n")


# -- ls ------------------------------------------------------------------------------------


def test_ls_and_the_tree_view(ep: str, etcd_prefix: str, etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    for key in ("db/host", "db/port", "name", "svc/a/x", "svc/b"):
        etcd_client.put(f"{p}/{key}", "v")
    etcd_client.put(f"{p}/svc", "leaf and directory")  # written by another tool
    # ls lists the children as the mapping (and get, dump) see them: the leaf wins,
    # so svc is listed once, as a value; ls svc/ and ls -R still show what is under it.
    assert run("ls", p, endpoint=ep) == Result(0, "db/\nname\nsvc\n", "")
    assert run("ls", f"{p}/svc/", endpoint=ep).out == "a/\nb\n"
    assert run("ls", f"{p}/db/", endpoint=ep).out == "host\nport\n"
    assert run("ls", "-R", p, endpoint=ep) == Result(0, "\n".join([
        f"{p}/",
        "├── db/",
        "│   ├── host",
        "│   └── port",
        "├── name",
        "├── svc",
        "└── svc/",
        "    ├── a/",
        "    │   └── x",
        "    └── b",
    ]) + "\n", "")
    assert run("ls", f"{p}/name", endpoint=ep).out == f"{p}/name\n"  # a leaf, like ls FILE
    one_line_error(run("ls", f"{p}/nothing", endpoint=ep), 1, "not found")
    top = run("ls", endpoint=ep)  # the whole keyspace's first level
    assert top.code == 0 and "etcdmap-test/" in top.out.splitlines()


# -- watch -------------------------------------------------------------------------------------


def test_watch_prints_json_lines_until_ctrl_c(ep: str, etcd_prefix: str,
                                              etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    start = etcd_client.put(f"{p}-other", "not under the prefix").revision + 1
    etcd_client.put(f"{p}/a", "1")
    etcd_client.put(f"{p}/a", "2")
    etcd_client.put(f"{p}x", "a sibling, not under the prefix")
    etcd_client.delete(f"{p}/a")
    lines = watch_lines(ep, p, start, 3,
                        then=lambda: etcd_client.put(f"{p}/b/c", "live"))  # seen as it happens
    for line in lines:
        assert isinstance(line.pop("revision"), int)
    assert lines == [
        {"type": "PUT", "key": f"{p}/a", "value": "1", "prev_value": None},
        {"type": "PUT", "key": f"{p}/a", "value": "2", "prev_value": "1"},
        {"type": "DELETE", "key": f"{p}/a", "value": None, "prev_value": "2"},
        {"type": "PUT", "key": f"{p}/b/c", "value": "live", "prev_value": None},
    ]


def test_keys_and_values_that_are_not_utf8_never_break_the_output(
        ep: str, etcd_prefix: str, etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    start = etcd_client.put(f"{p}/ok", "v").revision
    etcd_client.put(f"{p}/\xff".encode("latin-1"), b"\xfe")  # written by another tool
    assert run("ls", p, endpoint=ep) == Result(0, "ok\n\\xff\n", "")
    assert run("ls", "-R", p, endpoint=ep).out.endswith("└── \\xff\n")
    for command in ("get", "dump"):  # a document cannot hold them: say so
        one_line_error(run(command, p, endpoint=ep), 3, f"{p}/\\xff", "not UTF-8 text")
    lines = watch_lines(ep, p, start, 2)
    assert [(line["key"], line["value"]) for line in lines] == [
        (f"{p}/ok", "v"), (f"{p}/\\xff", "\\xfe")]


def test_trees_too_deep_to_show_are_one_line_errors(ep: str, etcd_prefix: str,
                                                    etcd_client: EtcdClient) -> None:
    etcd_client.put(etcd_prefix + "/a" * 1500, "deep")
    for result in run_all([["dump", etcd_prefix], ["get", etcd_prefix],
                           ["ls", "-R", etcd_prefix]], ep):
        one_line_error(result, 3, "nested too deeply")
    assert run("ls", etcd_prefix, endpoint=ep).out == "a/\n"


# -- dump --------------------------------------------------------------------------------------


def test_dump_formats(ep: str, etcd_prefix: str, etcd_client: EtcdClient) -> None:
    p = etcd_prefix
    etcd_client.put(f"{p}/db/host", "db.internal")
    etcd_client.put(f"{p}/db/port", "5432")
    etcd_client.put(f"{p}/db/password", "it's a $ecret")
    etcd_client.put(f"{p}/log-level", "debug")
    doc = {"db": {"host": "db.internal", "password": "it's a $ecret", "port": "5432"},
           "log-level": "debug"}
    got = run("dump", p, endpoint=ep)
    assert got.code == 0 and json.loads(got.out) == doc
    assert run("dump", p, "--format", "yaml", endpoint=ep).out == (
        "db:\n  host: db.internal\n  password: it's a $ecret\n  port: '5432'\n"
        "log-level: debug\n")
    env = run("dump", p, "--format", "env", endpoint=ep)
    assert env.out == ("DB_HOST=db.internal\nDB_PASSWORD='it'\"'\"'s a $ecret'\n"
                       "DB_PORT=5432\nLOG_LEVEL=debug\n")
    # The env lines are for a shell: eval them.
    shell = subprocess.run(["sh", "-c", 'eval "$1"; printf "%s|%s" "$DB_PASSWORD" "$LOG_LEVEL"',
                            "sh", env.out], capture_output=True, text=True, timeout=10)
    assert shell.stdout == "it's a $ecret|debug"
    assert run("dump", f"{p}/empty", endpoint=ep) == Result(0, "{}\n", "")
    # Two keys that make one variable name.
    etcd_client.put(f"{p}/log_level", "info")
    one_line_error(run("dump", p, "--format", "env", endpoint=ep), 3, "LOG_LEVEL")


# -- load -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_dump_then_load_replace_round_trips(ep: str, etcd_prefix: str, etcd_client: EtcdClient,
                                            tmp_path: Path, fmt: str) -> None:
    src, dst = f"{etcd_prefix}/src", f"{etcd_prefix}/dst"
    original = {"db/host": "db.internal", "db/port": "5432", "flags/yes": "true",
                "flags/none": "null", "text": "multi\nline: 'quoted' \"both\"",
                "ünï/cödé": "✓", "empty": ""}
    for key, value in original.items():
        etcd_client.put(f"{src}/{key}", value)
    etcd_client.put(f"{dst}/stale", "removed by --replace")
    etcd_client.put(f"{dst}/db/host", "old")
    etcd_client.put(dst, "a value at the prefix itself: not in the subtree, kept")
    dumped = run("dump", src, "--format", fmt, endpoint=ep)
    assert dumped.code == 0, dumped
    doc = tmp_path / f"tree.{fmt}"
    doc.write_text(dumped.out, encoding="utf-8")
    loaded = run("load", dst, str(doc), "--replace", endpoint=ep)
    assert loaded == Result(0, f"6 added, 1 changed, 1 removed under {dst}\n", "")
    assert tree(etcd_client, dst) == original == tree(etcd_client, src)
    assert etcd_client.get(dst).value.endswith("kept")
    again = run("dump", dst, "--format", fmt, endpoint=ep)
    assert again.out == dumped.out


def test_load_merges_by_default_and_dry_run_shows_the_diff(
        ep: str, etcd_prefix: str, etcd_client: EtcdClient, tmp_path: Path) -> None:
    p = etcd_prefix
    etcd_client.put(f"{p}/db/host", "old-host")
    etcd_client.put(f"{p}/db/port", "5432")
    etcd_client.put(f"{p}/keep", "kept by a merge")
    etcd_client.put(f"{p}/cache", "a leaf that the document makes a directory")
    doc = tmp_path / "doc.yaml"
    doc.write_text("db:\n  host: new-host\n  port: 5432\ncache:\n  size: 10\n"
                   "debug: true\n", encoding="utf-8")
    before = tree(etcd_client, p)
    dry = run("load", p, str(doc), "--dry-run", endpoint=ep)
    assert dry == Result(0, "\n".join([
        f'- {p}/cache = "a leaf that the document makes a directory"',
        f'+ {p}/cache/size = "10"',
        f'~ {p}/db/host = "old-host" -> "new-host"',
        f'+ {p}/debug = "true"',
        "2 added, 1 changed, 1 removed (dry run: nothing written)",
    ]) + "\n", "")
    dry_replace = run("load", p, str(doc), "--dry-run", "--replace", endpoint=ep)
    assert f'- {p}/keep = "kept by a merge"' in dry_replace.out.splitlines()
    assert dry_replace.out.endswith("2 added, 1 changed, 2 removed (dry run: nothing written)\n")
    assert tree(etcd_client, p) == before  # a dry run writes nothing
    assert run("load", p, str(doc), endpoint=ep) == Result(
        0, f"2 added, 1 changed, 1 removed under {p}\n", "")
    assert tree(etcd_client, p) == {"db/host": "new-host", "db/port": "5432",
                                    "keep": "kept by a merge", "cache/size": "10",
                                    "debug": "true"}
    # From stdin, JSON by content; --replace drops what the document lacks.
    assert run("load", p, "-", "--replace", stdin='{"only": "this"}', endpoint=ep).code == 0
    assert tree(etcd_client, p) == {"only": "this"}
    assert run("load", p, "-", "--replace", stdin="{}", endpoint=ep).out == (
        f"0 added, 0 changed, 1 removed under {p}\n")
    assert tree(etcd_client, p) == {}


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO once the other side has closed
            return out
        if not chunk:
            return out
        out += chunk


def _on_terminal(args: Sequence[str], block: Sequence[str] = ()) -> tuple[int, bytes]:
    """Run with stderr on a pseudo-terminal (100 columns); the exit code and what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    code = (f"import sys; sys.modules.update(dict.fromkeys({list(block)!r})); "
            "from etcdmap.cli import main; raise SystemExit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                            stderr=slave, env=_env())
    os.close(slave)
    shown = _read_all(master)
    os.close(master)
    return proc.wait(timeout=60), shown


def test_large_load_goes_in_chunks_with_a_progress_bar(
        ep: str, etcd_prefix: str, etcd_client: EtcdClient, tmp_path: Path) -> None:
    p = etcd_prefix
    doc = {f"g{g}": {f"k{i}": f"v{i}" for i in range(100)} for g in range(12)}  # 1200 keys
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    etcd_client.put(f"{p}/stale/key", "removed by --replace")
    etcd_client.put(f"{p}/g0/k0/under-a-leaf", "removed: k0 is a leaf")
    code, shown = _on_terminal(["load", p, str(path), "--replace", "--endpoints", ep])
    assert code == 0
    # The bar counts the write's operations (EtcdMapping.write reports them):
    # 1200 puts, and the deletes of the 2 keys the document does not hold.
    assert b"load:" in shown and b"/1202" in shown, shown[-300:]
    expected = {f"g{g}/k{i}": f"v{i}" for g in range(12) for i in range(100)}
    assert tree(etcd_client, p) == expected
    code, shown = _on_terminal(["dump", p, "--endpoints", ep])
    assert code == 0 and b"dump:" in shown and b"/1200" in shown, shown[-300:]
    # Without tqdm, or without a terminal, there is no bar.
    code, shown = _on_terminal(["dump", p, "--endpoints", ep], block=["tqdm"])
    assert (code, shown) == (0, b"")
    assert run("dump", p, endpoint=ep).err == ""


BAD_DOCUMENTS = [
    ('{"a": "1",}', [], "invalid JSON"),
    ('["a", "b"]', ["--replace"], "must be a mapping of keys, not list"),
    ('"just a string"', [], "must be a mapping of keys, not str"),
    ('{"a": {"b": [1, 2]}}', ["--replace"], "'a/b': lists cannot be stored"),
    ('{"a": null}', ["--dry-run"], "'a': null is not a value"),
    ('{"ok": "1", "a//b": "2"}', ["--replace"], "invalid key 'a//b'"),
    ('{"ok": "1", "": "2"}', [], "invalid key ''"),
    ('{"a": "1", "a/b": "2"}', ["--replace"], "'a' is both a value and a directory"),
    # Checked before the first write: 300 good keys, then one that cannot be stored.
    (json.dumps({**{f"k{i}": "v" for i in range(300)}, "z": "\ud800"}), [],
     "the value of key 'z' is not valid UTF-8 text"),
    (json.dumps({**{f"k{i}": "v" for i in range(300)}, "a\ud800": "v"}), ["--replace"],
     "key 'a\\ud800' is not valid UTF-8 text"),
    ("[" * 100000, [], "nested too deeply"),
    ('{"a": ' * 10000 + '"x"' + "}" * 10000, [], "nested too deeply"),
]


def test_bad_documents_write_nothing(ep: str, etcd_prefix: str, etcd_client: EtcdClient,
                                     tmp_path: Path) -> None:
    etcd_client.put(f"{etcd_prefix}/before", "untouched")
    jobs = []
    for n, (text, flags, message) in enumerate(BAD_DOCUMENTS):
        path = tmp_path / f"doc{n}.json"
        path.write_text(text, encoding="utf-8")
        jobs.append((("load", etcd_prefix, str(path), *flags), (str(path), message)))
    results = run_all([args for args, _ in jobs], ep)
    for (_, fragments), result in zip(jobs, results, strict=True):
        one_line_error(result, 2, *fragments)
    assert tree(etcd_client, etcd_prefix) == {"before": "untouched"}


def test_bad_yaml_and_missing_files(ep: str, etcd_prefix: str, etcd_client: EtcdClient,
                                    tmp_path: Path) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text("a: [unclosed\n", encoding="utf-8")
    one_line_error(run("load", etcd_prefix, str(path), endpoint=ep), 2, "invalid YAML")
    one_line_error(run("load", etcd_prefix, str(tmp_path / "absent.json"), endpoint=ep), 2,
                   "absent.json", "No such file")
    deep = ["[" * 100000, "{a: " * 10000 + "x" + "}" * 10000, "a: &x\n  b: *x\n"]
    for n, text in enumerate(deep):
        path = tmp_path / f"deep{n}.yaml"
        path.write_text(text, encoding="utf-8")
        one_line_error(run("load", etcd_prefix, str(path), endpoint=ep), 2, "nested too deeply")
    assert tree(etcd_client, etcd_prefix) == {}


def test_without_pyyaml_yaml_says_how_to_install_it(ep: str, etcd_prefix: str,
                                                   etcd_client: EtcdClient,
                                                   tmp_path: Path) -> None:
    etcd_client.put(f"{etcd_prefix}/a", "1")
    hint = "pip install 'etcdmap[yaml]'"
    one_line_error(run("dump", etcd_prefix, "--format", "yaml", endpoint=ep, block=["yaml"]),
                   2, hint)
    path = tmp_path / "doc.yaml"
    path.write_text("b: 2\n", encoding="utf-8")
    one_line_error(run("load", etcd_prefix, str(path), endpoint=ep, block=["yaml"]), 2, hint)
    assert tree(etcd_client, etcd_prefix) == {"a": "1"}
    # JSON needs no extra.
    assert run("dump", etcd_prefix, endpoint=ep, block=["yaml"]).out == '{\n  "a": "1"\n}\n'


# -- usage and connection errors ------------------------------------------------------------------


USAGE_ERRORS = [
    [], ["frobnicate"], ["set", "k"], ["set", "k", "v", "--ttl", "soon"],
    ["get", "a//b"], ["rm", "-r", "/"], ["dump", "x", "--format", "xml"],
    ["watch", "x", "--rev", "0"], ["get", "k", "--dial-timeout", "fast"],
]


def test_usage_errors_exit_2_with_one_line(ep: str) -> None:
    for result in run_all(USAGE_ERRORS, ep):
        one_line_error(result, 2)


UNKNOWN_OPTIONS = [
    ["get", "k", "--bogus"], ["--bogus", "get", "k"], ["get", "--bogus"], ["--bogus"],
    ["set", "k", "--bogus"], ["set", "--bogus=1", "k", "v"], ["ls", "-x"],
]


def test_an_unknown_option_is_named_as_unknown(ep: str) -> None:
    # argparse would report most of these as a missing KEY, VALUE or COMMAND.
    for args, result in zip(UNKNOWN_OPTIONS, run_all(UNKNOWN_OPTIONS, ep), strict=True):
        bogus = next(arg.split("=")[0] for arg in args if arg.startswith("-"))
        one_line_error(result, 2, f"unknown option {bogus}")


def test_arguments_that_are_not_utf8_are_refused(ep: str, etcd_prefix: str,
                                                 etcd_client: EtcdClient) -> None:
    # $'\xff' on the command line: Python hands it over as "\udcff".
    bad = os.fsdecode(b"\xff")
    cases = [["set", f"{etcd_prefix}/k", bad], ["set", f"{etcd_prefix}/{bad}", "v"],
             ["get", f"{etcd_prefix}/{bad}"], ["rm", "-r", f"{etcd_prefix}/{bad}"],
             ["load", f"{etcd_prefix}/{bad}", "-"]]
    results = run_all(cases, ep)
    one_line_error(results[0], 2, "VALUE is not valid UTF-8 text")
    for result in results[1:]:
        one_line_error(result, 2, "is not valid UTF-8 text")
    assert tree(etcd_client, etcd_prefix) == {}


def test_dial_timeout_takes_go_durations_like_the_client(ep: str, etcd_prefix: str,
                                                        etcd_client: EtcdClient) -> None:
    etcd_client.put(f"{etcd_prefix}/k", "v")
    assert run("get", f"{etcd_prefix}/k", "--dial-timeout", "1m30s", endpoint=ep).out == "v\n"
    assert run("get", f"{etcd_prefix}/k", env={"ETCDCTL_ENDPOINTS": ep,
                                               "ETCDCTL_DIAL_TIMEOUT": "1m30s"}).out == "v\n"
    one_line_error(run("get", "k", "--dial-timeout", "0s", endpoint=ep), 2, "invalid duration")
    one_line_error(run("get", "k", env={"ETCDCTL_ENDPOINTS": ep, "ETCDCTL_DIAL_TIMEOUT": "1x"}),
                   2, "invalid duration '1x'")


def test_connection_problems_exit_3_and_say_what_to_do(etcd_prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [["get", f"{etcd_prefix}/k"], ["set", f"{etcd_prefix}/k", "v"],
             ["ls", etcd_prefix], ["dump", etcd_prefix]]
    for result in run_all([[*args, "--dial-timeout", "500ms"] for args in cases], dead):
        one_line_error(result, 3, dead, "--endpoints", "ETCDCTL_ENDPOINTS", "`etcdmap serve`")
        assert "endpoints=" not in result.err  # the Python API's argument, not a flag


def test_malformed_endpoints_exit_2_at_once(ep: str) -> None:
    for endpoints, fragment in [("", "--endpoints names no endpoint"),
                                (" , ", "--endpoints names no endpoint"),
                                ("http://127.0.0.1:notaport", "invalid port"),
                                ("http://127.0.0.1:99999", "invalid port")]:
        # An empty flag is not "use the default": $ETCDCTL_ENDPOINTS is ignored too.
        result = run("get", "k", "--endpoints", endpoints, env={"ETCDCTL_ENDPOINTS": ep})
        one_line_error(result, 2, fragment)


def test_an_error_line_stays_within_300_characters(ep: str, etcd_prefix: str) -> None:
    result = run("get", f"{etcd_prefix}/" + "x" * 1000 + "//y", endpoint=ep)
    one_line_error(result, 2)
    assert len(result.err.rstrip("\n")) <= 300 and result.err.endswith("...\n")


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    """A web server in front of the wrong port: an HTML page, or a 404."""

    def do_POST(self) -> None:
        if self.path.startswith("/v3/kv/"):
            status, kind, body = 501, "text/html", "<html>\n" + "<p>Not here</p>\n" * 500
        else:
            status, kind, body = 404, "text/plain", "404 page not found\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def not_etcd() -> Iterator[str]:
    """The URL of a local HTTP server that is not etcd."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_something_that_is_not_etcd_gets_one_short_line(not_etcd: str) -> None:
    # get reads /v3/kv/range (the HTML page); lease grant is a 404 there.
    for result in run_all([["get", "k"], ["set", "k", "v", "--ttl", "5"]], not_etcd):
        one_line_error(result, 3, not_etcd)  # which endpoint, never the page it sent
        assert "Not here" not in result.err and len(result.err) <= 320, result.err


def test_flags_and_environment_follow_etcdctl(ep: str, etcd_prefix: str,
                                              etcd_client: EtcdClient) -> None:
    key = f"{etcd_prefix}/k"
    # $ETCDCTL_ENDPOINTS when no flag; the flag wins; flags may come first.
    assert run("set", key, "env", env={"ETCDCTL_ENDPOINTS": ep}).code == 0
    assert etcd_client.get(key).value == "env"
    dead = f"http://127.0.0.1:{free_port()}"
    assert run("--endpoints", ep, "get", key,
               env={"ETCDCTL_ENDPOINTS": dead}).out == "env\n"
    one_line_error(run("get", key, env={"ETCDCTL_ENDPOINTS": dead,
                                        "ETCDCTL_DIAL_TIMEOUT": "500ms"}), 3)


# -- TLS and users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secure:
    endpoint: str
    ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """An etcd with TLS, client certificates and auth: alice may use ``app/``."""
    d = tmp_path_factory.mktemp("cli-tls")
    ca = trustme.CA()
    files = {"ca.pem": ca.cert_pem}
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("client@etcdmap.test")
    files.update({"server.pem": server.cert_chain_pems[0], "server.key": server.private_key_pem,
                  "client.pem": client.cert_chain_pems[0], "client.key": client.private_key_pem})
    for name, blob in files.items():
        blob.write_to_path(str(d / name))
    tls = TLSFiles(ca=str(d / "ca.pem"), cert=str(d / "server.pem"),
                   key=str(d / "server.key"), client_cert_auth=True,
                   client_cert=str(d / "client.pem"), client_key=str(d / "client.key"))

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    with EtcdServer(tls=tls) as srv:
        for path, body in [
            ("user/add", {"name": "root", "password": "root-pw"}),
            ("user/grant", {"user": "root", "role": "root"}),
            ("role/add", {"name": "app"}),
            ("role/grant", {"name": "app", "perm": {
                "permType": "READWRITE", "key": b64("app/"), "range_end": b64("app0")}}),
            ("user/add", {"name": "alice", "password": "alice-pw"}),
            ("user/grant", {"user": "alice", "role": "app"}),
            ("enable", {}),
        ]:
            resp = requests.post(f"{srv.endpoint}/v3/auth/{path}", json=body, timeout=10,
                                 **srv.requests_kwargs())
            assert resp.status_code == 200, (path, resp.text)
        yield Secure(srv.endpoint, tls.ca, str(d / "client.pem"), str(d / "client.key"))


def test_tls_and_user_flags(secure: Secure) -> None:
    flags = ["--endpoints", secure.endpoint, "--cacert", secure.ca, "--cert", secure.cert,
             "--key", secure.key]
    assert run("set", "app/k", "v", *flags, "--user", "alice:alice-pw").code == 0
    assert run("get", "app/k", *flags, "--user", "alice", "--password", "alice-pw").out == "v\n"
    one_line_error(run("get", "app/k", *flags, "--user", "alice:wrong"), 3, "auth")
    one_line_error(run("get", "secret/k", *flags, "--user", "alice:alice-pw"), 3, "permission")
    one_line_error(run("get", "app/k", "--endpoints", secure.endpoint, "--dial-timeout", "2s",
                       "--user", "alice:alice-pw"), 3)  # no CA: the certificate is not trusted
    # The same from etcdctl's environment alone.
    env = {"ETCDCTL_ENDPOINTS": secure.endpoint, "ETCDCTL_CACERT": secure.ca,
           "ETCDCTL_CERT": secure.cert, "ETCDCTL_KEY": secure.key,
           "ETCDCTL_USER": "alice", "ETCDCTL_PASSWORD": "alice-pw"}
    assert run("dump", "app", env=env).out == '{\n  "k": "v"\n}\n'
    # set writes through EtcdMapping("app"): alice's rights on app/ are enough to
    # replace a value above the key, as cfg["name/sub"] = "x" does.
    assert run("set", "app/name", "leaf", *flags, "--user", "alice:alice-pw").code == 0
    assert run("set", "app/name/sub", "x", *flags, "--user", "alice:alice-pw").code == 0
    assert run("dump", "app", *flags, "--user", "alice:alice-pw").out == (
        '{\n  "k": "v",\n  "name": {\n    "sub": "x"\n  }\n}\n')


# -- serve ---------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port_pair() -> int:
    """A port that is free, and whose successor (serve's peer port) is free too."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports in a row")


def test_serve_runs_etcd_until_ctrl_c(tmp_path: Path) -> None:
    port = _free_port_pair()
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "etcdmap", "serve", "--port", str(port),
                             "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "serve printed no endpoint"
        endpoint = proc.stdout.readline().strip()
        assert endpoint == f"http://127.0.0.1:{port}"
        health = requests.get(f"{endpoint}/health", timeout=5)
        assert health.status_code == 200 and health.json()["health"] == "true"
        assert run("set", "served", "yes", endpoint=endpoint).code == 0
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and endpoint in err
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _port_open(port) and not _port_open(port + 1)
    assert (data / "member").is_dir()  # --data-dir is kept


def test_serve_refuses_an_unusable_data_dir(tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a directory\n", encoding="utf-8")
    for path, message in [(regular, "not a directory"), (regular / "data", "Not a directory")]:
        one_line_error(run("serve", "--port", "0", "--data-dir", str(path)), 2,
                       f"--data-dir {path}", message)


def test_serve_reports_a_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        one_line_error(run("serve", "--port", str(port)), 3, "already in use")
