"""Bad input to `droot run`: one `droot: …` line naming the problem, 125 (or 126/127),
no traceback, nothing left mounted."""

import os

import pytest

from conftest import DROOT, droot
from runhelp import attack_binary, host_mounts_below, run_root  # noqa: F401


def bad_input_cases(root):
    missing = root.parent / "missing"
    (root / "notexec").write_text("#!/bin/sh\necho hi\n")
    (root / "noshell").write_text("#!/bin/bash\necho hi\n")
    (root / "noshell").chmod(0o755)
    (root / "afile").write_text("")
    return [
        # (arguments, status, words the message must contain)
        (["--root", missing, "--", "/bin/true"], 125, ["root", "does not exist"]),
        (["--root", root / "afile", "--", "/bin/true"], 125, ["not a directory"]),
        (["--root", root, "-b", f"{missing}:/x", "--", "/bin/true"], 125, ["source", "does not exist"]),
        (["--root", root, "-b", "/tmp:relative", "--", "/bin/true"], 125, ["malformed --bind"]),
        (["--root", root, "--robind", ":/x", "--", "/bin/true"], 125, ["malformed --robind"]),
        (["--root", root, "-e", "NOEQUALS", "--", "/bin/true"], 125, ["malformed --env"]),
        (["--root", root, "-e", "=value", "--", "/bin/true"], 125, ["malformed --env"]),
        (["--root", root, "--env-file", missing, "--", "/bin/true"], 125, ["--env-file"]),
        (["--root", root, "-u", "nosuchuser", "--", "/bin/true"], 125, ["unknown user", "nosuchuser"]),
        (["--root", root, "-g", "nosuchgroup", "--", "/bin/true"], 125, ["unknown group"]),
        (["--root", root, "--cap-add", "FLY", "--", "/bin/true"], 125, ["unknown capability"]),
        (["--root", root, "-w", "/nowhere", "--", "/bin/true"], 125, ["working directory"]),
        (["--root", root], 125, ["no command", "entrypoint"]),
        (["--root", root, "--", "nosuchcommand"], 127, ["not found", "PATH"]),
        (["--root", root, "--", "/bin/nosuch"], 127, ["not found"]),
        (["--root", root, "--", "/notexec"], 126, ["not executable"]),
        (["--root", root, "--", "/tmp"], 126, ["not executable"]),
        (["--root", root, "--", "/noshell"], 127, ["interpreter"]),
        (["--root", root, "--no-such-flag", "--", "/bin/true"], 125, ["unrecognized"]),
        (["--", "/bin/true"], 125, ["--root"]),
    ]


def test_bad_input_is_one_line_and_leaves_nothing_mounted(run_root):
    for args, status, words in bad_input_cases(run_root):
        result = droot("run", *args)
        assert result.returncode == status, (args, result.stderr)
        assert result.stderr.startswith("droot: ") and result.stderr.count("\n") == 1, \
            (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
        for word in words:
            assert word in result.stderr, (args, result.stderr)
        assert host_mounts_below(run_root) == []


def test_not_root_is_refused(run_root):
    """As a non-root user (given only the right to read this checkout's interpreter)."""
    import subprocess
    result = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search",
         DROOT, "run", "--root", run_root, "--", "/bin/true"],
        capture_output=True, text=True)
    assert result.returncode == 125
    assert result.stderr.startswith("droot: ") and "needs root" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("user", ["0", "root"])
def test_a_failure_after_the_mounts_still_leaves_nothing(run_root, user):
    """A command that fails only once everything is mounted (exec of a directory)."""
    result = droot("run", "--root", run_root, "-u", user, "-b", f"{os.getcwd()}:/mnt", "--",
                   "/tmp")
    assert result.returncode == 126
    assert host_mounts_below(run_root) == []
    assert not any(DROOT in line for line in result.stderr.splitlines()[1:])
