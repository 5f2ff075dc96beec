"""What a release ships: the sdist and the wheel carry the Apache-2.0 LICENSE.

The sdist is built from a copy of the source tree (so the checkout is left as
it was), and the wheel from that sdist, as an installer builds it.  pip builds
it with build isolation: setuptools and wheel come from the configured index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_transport  # runs once, not again over gRPC

ROOT = Path(__file__).resolve().parent.parent
BUILD_LEFTOVERS = shutil.ignore_patterns(".*", "*.egg-info", "__pycache__", "build", "dist")


def test_the_sdist_and_the_wheel_ship_the_license(tmp_path: Path) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    assert b"END OF TERMS AND CONDITIONS" in license_text  # the full text, not a notice
    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(ROOT, src, ignore=BUILD_LEFTOVERS)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=src,
                   check=True, capture_output=True, timeout=120)
    (sdist,) = dist.glob("etcdmap-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        member = tar.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read() == license_text
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(sdist), "--no-deps",
                    "--quiet", "-w", str(dist)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("etcdmap-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        licenses = [name for name in whl.namelist()
                    if ".dist-info/" in name and name.endswith("/LICENSE")]
        assert [whl.read(name) for name in licenses] == [license_text]
        metadata = next(name for name in whl.namelist() if name.endswith(".dist-info/METADATA"))
        assert b"License-File: LICENSE" in whl.read(metadata)
