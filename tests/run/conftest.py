"""Helpers of the `droot run` tests: the attack program run inside a root, the verdicts
on it, and a look at the host's mount table (droot's mounts must never appear there).
The attack program and the roots it runs in are shared fixtures (tests/conftest.py):
the `droot exec` tests use them too."""

from pathlib import Path

from tests.conftest import droot


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
