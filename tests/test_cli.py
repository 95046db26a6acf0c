"""The command line itself: version, help, and usage errors as one line."""

from conftest import droot
from droot import __version__


def test_version():
    result = droot("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"droot {__version__}"


def test_help_lists_every_command():
    result = droot("--help")
    assert result.returncode == 0
    for command in ("export", "push", "pull", "deploy", "run", "umount", "rollback", "releases"):
        assert command in result.stdout


def test_module_entry_point():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "droot", "--version"],
                            capture_output=True, text=True)
    assert result.stdout.strip() == f"droot {__version__}"


def test_unknown_command_is_one_line():
    result = droot("frobnicate")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("droot: ")
    assert "Traceback" not in result.stderr
