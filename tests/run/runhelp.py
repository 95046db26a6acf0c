"""Helpers and fixtures of the `droot run` tests, imported by them (no conftest.py here,
so tests/conftest.py stays the one `conftest`): busybox roots with the attack helper,
and a look at the host's mount table (droot's mounts must never appear there)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import make_busybox_root

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def attack_binary(tmp_path_factory) -> Path:
    """tests/run/attack.c compiled static (it runs in roots without a C library)."""
    output = tmp_path_factory.mktemp("run-attack") / "attack"
    if not shutil.which("gcc"):
        pytest.fail("the run tests need gcc and libc6-dev (a static C library): apt-get install "
                    "gcc libc6-dev")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(output), str(HERE / "attack.c")],
                   check=True)
    return output


@pytest.fixture
def run_root(tmp_path, attack_binary) -> Path:
    """A busybox root with /attack in it."""
    root = make_busybox_root(tmp_path / "run-root")
    shutil.copy2(attack_binary, root / "attack")
    return root


def host_mounts_below(path: Path) -> list[str]:
    """Mount points of the host (this process's namespace) at or below `path`."""
    prefix = str(Path(path).resolve())
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4] for line in file]
    return [point for point in points if point == prefix or point.startswith(prefix + "/")]
