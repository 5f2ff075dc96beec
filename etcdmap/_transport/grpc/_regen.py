"""Regenerate ``_descriptor.py`` from ``etcd.proto`` (needs ``grpcio-tools``).

Run ``python -m etcdmap._transport.grpc._regen`` after editing ``etcd.proto``;
``--check`` only tells (exit status 1) whether the committed module is stale.
protoc compiles the schema to a ``FileDescriptorSet`` without source info; its
one ``FileDescriptorProto`` is re-serialized deterministically and written as a
bytes literal, which :mod:`.messages` loads at import time. No ``_pb2`` modules
are generated, so nothing pins the protobuf runtime to the protoc that ran here.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "etcd.proto"
TARGET = HERE / "_descriptor.py"

_WIDTH = 100  # the repository's line length
_INDENT = "    "
_HEADER = f"""\
# Generated from {PROTO.name} by etcdmap._transport.grpc._regen: do not edit.
# To change it, edit {PROTO.name} and run: python -m etcdmap._transport.grpc._regen
\"\"\"The serialized ``FileDescriptorProto`` of ``{PROTO.name}``, loaded by ``messages``.\"\"\"

"""


def compile_proto() -> bytes:
    """Compile ``etcd.proto`` and return its serialized ``FileDescriptorProto``."""
    # Imported by name: grpcio-tools and protobuf are optional and untyped.
    protoc = importlib.import_module("grpc_tools.protoc")
    descriptor_pb2 = importlib.import_module("google.protobuf.descriptor_pb2")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptor_set.pb"
        status = protoc.main([
            "protoc",
            f"--proto_path={HERE}",
            f"--descriptor_set_out={out}",
            str(PROTO),
        ])
        if status != 0:
            raise RuntimeError(f"protoc failed (exit status {status}) on {PROTO}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    if len(files) != 1:
        raise RuntimeError(f"expected one file in the descriptor set, got {len(files)}")
    data: bytes = files[0].SerializeToString(deterministic=True)
    return data


def _escape(byte: int) -> str:
    if byte in b'"\\':
        return "\\" + chr(byte)
    if 0x20 <= byte < 0x7F:
        return chr(byte)
    return f"\\x{byte:02x}"


def _literal_lines(data: bytes) -> list[str]:
    room = _WIDTH - len(_INDENT) - len('b""')
    lines: list[str] = []
    chunk = ""
    for byte in data:
        piece = _escape(byte)
        if len(chunk) + len(piece) > room:
            lines.append(f'{_INDENT}b"{chunk}"')
            chunk = ""
        chunk += piece
    if chunk or not lines:
        lines.append(f'{_INDENT}b"{chunk}"')
    return lines


def render(data: bytes) -> str:
    """The text of ``_descriptor.py`` holding *data* as ``DESCRIPTOR``."""
    body = "\n".join(_literal_lines(data))
    return f"{_HEADER}DESCRIPTOR = (\n{body}\n)\n"


def generate() -> str:
    """Compile ``etcd.proto`` and return the text ``_descriptor.py`` should have."""
    return render(compile_proto())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python -m etcdmap._transport.grpc._regen [--check]", file=sys.stderr)
        return 2
    text = generate()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args == ["--check"]:
        if current != text:
            print(f"{TARGET} is out of date with {PROTO.name}: run this without --check",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET}")
    else:
        print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
