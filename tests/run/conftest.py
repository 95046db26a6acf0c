"""Fixtures and helpers of the `droot run` tests: the attack program run inside a root
and the verdicts on it, the supervised app, and a look at the host's mount table
(droot's mounts must never appear there). The attack program and the roots it runs in
are shared fixtures (tests/conftest.py): the `droot exec` tests use them too."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import compile_static, droot, make_busybox_root


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


def attack(root, *args, options=(), **kwargs):
    """/attack ARGS run by `droot run` in `root` with `options`."""
    return droot("run", "--root", root, *options, "--", "/attack", *map(str, args), **kwargs)


def assert_refused(result, expected_error=""):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert expected_error in result.stdout, result.stdout


def assert_worked(result, word):
    assert result.returncode == 0 and result.stdout.strip() == word, (result.stdout, result.stderr)


def host_mounts_below(path: Path) -> list[str]:
    """Mount points of the host (this process's namespace) at or below `path`."""
    prefix = str(Path(path).resolve())
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4] for line in file]
    return [point for point in points if point == prefix or point.startswith(prefix + "/")]
