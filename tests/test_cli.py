"""The command line itself: version, help, and usage errors as one line."""

from droot import __version__
from droot.cli import COMMANDS
from tests.conftest import droot


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
        assert " ".join(summary.split()).startswith(COMMANDS[name][1][:30]), (name, summary)


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


def test_exit_statuses_follow_one_table(tmp_path):
    """droot.cli.exit_status: 2 for bad usage and 1 for other failures, except `run` and
    `exec` (125, docker run's convention), whatever stage raised the error."""
    bad_limit = ("--memory", "12XB")
    unit = droot("unit", "--root", tmp_path / "app", "--allow-missing-root", *bad_limit,
                 "--", "/bin/true")
    run = droot("run", "--root", tmp_path, *bad_limit, "--", "/bin/true")
    assert (unit.returncode, run.returncode) == (2, 125), (unit.stderr, run.stderr)
    assert unit.stderr == run.stderr  # the same check, one line
    assert droot("deploy", "--root", tmp_path / "app", "--keep", "-1").returncode == 2
    assert droot("rollback", "--root", tmp_path / "never-deployed").returncode == 1
    assert droot("run", "--root", tmp_path / "missing", "--", "/bin/true").returncode == 125


def test_sigterm_is_143_and_one_line(tmp_path):
    import signal
    import subprocess
    import time
    from tests.conftest import DROOT
    process = subprocess.Popen([DROOT, "deploy", "--root", str(tmp_path / "app")],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not catches_sigterm(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # until droot handles it (then it waits for the archive)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (143, "droot: terminated\n")
    assert not (tmp_path / "app").exists()


def catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> 14 & 1)  # bit 15 - 1: SIGTERM
