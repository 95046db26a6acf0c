"""Helpers and fixtures of the `droot run` tests, imported by them (no conftest.py here,
so tests/conftest.py stays the one `conftest`): busybox roots with the attack helper or
the supervised app, and a look at the host's mount table (droot's mounts must never appear there)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import make_busybox_root

HERE = Path(__file__).parent


def compile_static(name: str, tmp_path_factory) -> Path:
    """tests/run/NAME.c compiled static (it runs in roots without a C library)."""
    output = tmp_path_factory.mktemp(f"run-{name}") / name
    if not shutil.which("gcc"):
        pytest.fail("the run tests need gcc and libc6-dev (a static C library): apt-get install "
                    "gcc libc6-dev")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(output), str(HERE / f"{name}.c")],
                   check=True)
    return output


@pytest.fixture(scope="session")
def attack_binary(tmp_path_factory) -> Path:
    """tests/run/attack.c: attacks on the sandbox, one per subcommand."""
    return compile_static("attack", tmp_path_factory)


@pytest.fixture
def run_root(tmp_path, attack_binary) -> Path:
    """A busybox root with /attack in it."""
    root = make_busybox_root(tmp_path / "run-root")
    shutil.copy2(attack_binary, root / "attack")
    return root


@pytest.fixture(scope="session")
def supervised_binary(tmp_path_factory) -> Path:
    """tests/run/supervised.c: an app that serves on a passed socket and notifies its
    supervisor."""
    return compile_static("supervised", tmp_path_factory)


@pytest.fixture
def app_root(tmp_path, supervised_binary) -> Path:
    """A busybox root with /supervised and a /release file only the root has."""
    root = make_busybox_root(tmp_path / "app-root")
    shutil.copy2(supervised_binary, root / "supervised")
    (root / "release").write_text("inside-the-root\n")
    return root


def host_mounts_below(path: Path) -> list[str]:
    """Mount points of the host (this process's namespace) at or below `path`."""
    prefix = str(Path(path).resolve())
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4] for line in file]
    return [point for point in points if point == prefix or point.startswith(prefix + "/")]
