"""How etcdmap is built, checked from its source: imports go one way down.

The layers, bottom up (a module may import from its own layer's earlier
modules and from layers below, never from above; imports under
``if TYPE_CHECKING:`` are annotations only and do not count):
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_transport  # runs once, not again over gRPC

ROOT = Path(__file__).resolve().parent.parent / "etcdmap"

# Bottom up.  Within a layer, the order says which module may import which.
LAYERS: list[tuple[str, list[str]]] = [
    ("pure: errors, records, requests and replies on the wire, keys and trees", [
        "etcdmap._version", "etcdmap.errors", "etcdmap.records", "etcdmap.ops",
        "etcdmap._settings", "etcdmap._wire",
        "etcdmap._wire.keys", "etcdmap._wire.replies", "etcdmap._wire.stream",
        "etcdmap._tree", "etcdmap.codecs",
    ]),
    ("transport: the network (the only code that imports requests)", [
        "etcdmap._transport.guard", "etcdmap._transport.failures",
        "etcdmap._transport.stream", "etcdmap._transport.connections",
        "etcdmap._transport.endpoints", "etcdmap._transport.policy",
        "etcdmap._transport.http", "etcdmap._transport.base",
        "etcdmap._transport.gateway",
        # the optional gRPC transport: only _transport.select imports it, on demand
        "etcdmap._transport.grpc._descriptor", "etcdmap._transport.grpc._regen",
        "etcdmap._transport.grpc.messages", "etcdmap._transport.grpc.convert",
        "etcdmap._transport.grpc.failures", "etcdmap._transport.grpc.channels",
        "etcdmap._transport.grpc.streams", "etcdmap._transport.grpc.watch",
        "etcdmap._transport.grpc.keepalive", "etcdmap._transport.grpc.transport",
        "etcdmap._transport.grpc",
        "etcdmap._transport.forked", "etcdmap._transport.select", "etcdmap._transport",
    ]),
    ("client: etcd's calls, watches and leases over the transport", [
        "etcdmap._watch_reader", "etcdmap.watch", "etcdmap.lease", "etcdmap.compat",
        "etcdmap.members", "etcdmap.client",
    ]),
    ("mapping: a dict over a prefix, on the client", [
        "etcdmap._read", "etcdmap._commit", "etcdmap._fence", "etcdmap._over_time",
        "etcdmap.views", "etcdmap._coordination", "etcdmap.mapping",
    ]),
    ("cache: a dict kept fresh by a watch, on the mapping", [
        "etcdmap._mirror", "etcdmap.cache",
    ]),
    ("coordination: transactions, locks and elections, on the mapping", [
        "etcdmap.transaction", "etcdmap._queue", "etcdmap._seat", "etcdmap.lock",
        "etcdmap.election",
    ]),
    ("real etcd servers for tests and development (may use requests)", [
        "etcdmap.launcher.server", "etcdmap.launcher.cluster", "etcdmap.launcher",
        "etcdmap.testing", "etcdmap.pytest_plugin",
    ]),
    ("the command line, on the public API", [
        "etcdmap.cli.documents", "etcdmap.cli.tree", "etcdmap.cli.connect",
        "etcdmap.cli.commands", "etcdmap.cli.serve", "etcdmap.cli.demo",
        "etcdmap.cli.parser", "etcdmap.cli", "etcdmap.__main__",
    ]),
    ("the package", ["etcdmap"]),
]
ORDER = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
POSITION = [name for _, names in LAYERS for name in names]
REQUESTS_ALLOWED = {"etcdmap._transport.http", "etcdmap._transport.failures",
                    "etcdmap._transport.stream", "etcdmap._transport.connections",
                    "etcdmap.launcher.server", "etcdmap.launcher.cluster"}


def module_name(path: Path) -> str:
    parts = ["etcdmap", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs (TYPE_CHECKING blocks left out)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if node.module:  # "from . import x" imports x, not its package's other modules
                found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def etcdmap_imports(name: str) -> set[str]:
    return {m for m in runtime_imports(MODULES[name]) if m in MODULES and m != name}


def test_every_module_has_a_place_in_the_layers() -> None:
    assert sorted(set(MODULES) - set(ORDER)) == []
    assert sorted(set(ORDER) - set(MODULES)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_one_way_down(name: str) -> None:
    # The package re-exports everything; a subpackage's __init__ re-exports its modules.
    upward = []
    for target in etcdmap_imports(name):
        if name == "etcdmap" or target.startswith(name + "."):
            continue
        if POSITION.index(target) >= POSITION.index(name):
            upward.append(target)
    assert upward == [], f"{name} imports {upward}, which sit above it"


def test_there_is_no_import_cycle() -> None:
    graph = {name: etcdmap_imports(name) - {"etcdmap"} for name in MODULES}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            if dep.startswith(node + "."):
                continue  # a package re-exporting its own modules
            assert seen.get(dep) != 1, " -> ".join([*path, node, dep])
            if dep not in seen:
                walk(dep, [*path, node])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            walk(name, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_transport_and_the_launcher_import_requests(name: str) -> None:
    imported = {m.split(".")[0] for m in runtime_imports(MODULES[name])}
    if name not in REQUESTS_ALLOWED:
        assert not imported & {"requests", "urllib3"}, f"{name} imports requests"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_grpc_transport_imports_grpc(name: str) -> None:
    imported = runtime_imports(MODULES[name])
    if not name.startswith("etcdmap._transport.grpc"):
        assert not {m for m in imported if m.split(".")[0] in {"grpc", "google"}
                    or m.startswith("etcdmap._transport.grpc")}, f"{name} imports grpc"


def test_the_mapping_knows_nothing_of_http_or_json() -> None:
    for name in ("etcdmap.mapping", "etcdmap._commit", "etcdmap._read", "etcdmap.views",
                 "etcdmap._mirror", "etcdmap.cache"):
        imported = runtime_imports(MODULES[name])
        assert not {m for m in imported if m.split(".")[0] in {"json", "requests", "urllib3"}
                    or m.startswith("etcdmap._transport")}, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= 430, f"{name} has {lines} lines: give one of its jobs a module of its own"
