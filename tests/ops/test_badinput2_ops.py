"""`droot unit` refuses a root that cannot be run: one that does not exist (unless the
operator writes the unit before the first deploy and says so), one that is not a
directory, and a relative one (systemd runs the unit from /)."""

import os

import pytest

from tests.conftest import droot


@pytest.fixture
def roots(tmp_path):
    (tmp_path / "file").write_text("not a root\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "app").mkdir()
    return tmp_path


@pytest.mark.parametrize("name, status, message", [
    ("nonexistent", 1, "does not exist: deploy the app first, or pass --allow-missing-root"),
    ("dangling", 1, "is a symlink to a missing directory"),
    ("file", 1, "is not a directory"),
])
def test_unit_refuses_a_root_it_cannot_run(roots, name, status, message):
    root = roots / name
    result = droot("unit", "--root", root, "--", "/bin/true")
    assert result.returncode == status and result.stdout == ""
    assert result.stderr == result.stderr.splitlines()[0] + "\n"
    assert result.stderr.startswith(f"droot: --root {root} ") and message in result.stderr
    assert sorted(os.listdir(roots)) == ["app", "dangling", "file"]


def test_unit_refuses_a_relative_root(roots):
    result = droot("unit", "--root", "app", "--", "/bin/true", cwd=roots)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("droot: --root app: give an absolute path (systemd runs the unit "
                             "from /)\n")


def test_unit_for_an_existing_root_and_with_the_flag(roots):
    """The counterparts: the root exists, or the operator writes the unit before the first
    deploy; the flag itself stays out of the unit's run line."""
    result = droot("unit", "--root", roots / "app", "--", "/bin/true")
    assert result.returncode == 0 and f"run --root {roots / 'app'} -- /bin/true" in result.stdout
    missing = roots / "nonexistent"
    result = droot("unit", "--allow-missing-root", "--root", missing, "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert f"run --root {missing} -- /bin/true\n" in result.stdout
    assert "allow-missing-root" not in result.stdout
    # The flag does not make a regular file a root.
    result = droot("unit", "--allow-missing-root", "--root", roots / "file", "--", "/bin/true")
    assert result.returncode == 1 and "is not a directory" in result.stderr
