"""The command line itself: version, help, and usage errors as one line."""

from conftest import droot
from droot import __version__
from droot.cli import COMMANDS


def test_version():
    result = droot("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"droot {__version__}"


def test_help_lists_every_command():
    """Each command on a line of its own, with its summary (a bare substring test would
    pass for `rm` or `ps` on any help text)."""
    result = droot("--help")
    assert result.returncode == 0
    listed = [line.split(None, 1) for line in result.stdout.splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert [entry[0] for entry in listed] == list(COMMANDS)
    for name, summary in listed:
        assert " ".join(summary.split()).startswith(COMMANDS[name][2][:30]), (name, summary)


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
