"""Helpers of the ship tests: a small app archive, and a root with a first release."""

import gzip
import hashlib
import os
import subprocess
from pathlib import Path

from tests.conftest import droot, make_busybox_root


def app_tar(tmp_path: Path, marker: str) -> bytes:
    """A gzip'd busybox root with /MARKER holding `marker`."""
    root = make_busybox_root(tmp_path / f"ship-src-{marker}")
    (root / "MARKER").write_text(marker)
    plain = subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", "-", "."],
                           check=True, capture_output=True).stdout
    return gzip.compress(plain, 1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deploy_first(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "app"
    archive = tmp_path / "first.tar.gz"
    archive.write_bytes(app_tar(tmp_path, "first"))
    result = droot("pull", archive, "--root", root, "--no-verify")
    assert result.returncode == 0, result.stderr
    return root, os.readlink(root)
