"""Bad input to `droot run`: one `droot: …` line naming the problem, 125 (or 126/127),
no traceback, nothing left mounted."""

import os

import pytest

from tests.conftest import DROOT, droot
from tests.run.conftest import host_mounts_below


def bad_input_cases(root):
    missing = root.parent / "missing"
    (root / "notexec").write_text("#!/bin/sh\necho hi\n")
    (root / "noshell").write_text("#!/bin/bash\necho hi\n")
    (root / "noshell").chmod(0o755)
    (root / "afile").write_text("")
    loop = root.parent / "loop"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    return [
        # (arguments, status, words the message must contain)
        (["--root", missing, "--", "/bin/true"], 125, ["root", "does not exist"]),
        (["--root", root / "afile", "--", "/bin/true"], 125, ["not a directory"]),
        (["--root", root, "-b", f"{missing}:/x", "--", "/bin/true"], 125, ["source", "does not exist"]),
        (["--root", loop, "--", "/bin/true"], 125, ["root", "Too many levels"]),
        (["--root", root, "-b", f"{loop}/x:/x", "--", "/bin/true"], 125, ["source", "Too many levels"]),
        (["--root", root, "-b", "/tmp:relative", "--", "/bin/true"], 125, ["malformed --bind"]),
        (["--root", root, "--robind", ":/x", "--", "/bin/true"], 125, ["malformed --robind"]),
        # droot's own descriptor of a bind's source must not pass for a supervisor's
        (["--root", root, "--preserve-fds", "1", "-b", f"{root}/afile:/x", "--", "/bin/true"],
         125, ["--preserve-fds 1", "descriptor 3 is not open"]),
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


# --- droot umount on a root it must not follow --------------------------------------------------

def _mount_table() -> list[str]:
    with open("/proc/self/mountinfo") as file:
        return sorted(line.split()[4] for line in file)


def test_umount_refuses_the_filesystem_root_and_a_symlink_to_it(tmp_path):
    """Never actually unmounts: the refusal comes before the mount table is even read,
    and the host's table is the same afterwards."""
    (tmp_path / "to-root").symlink_to("/")
    before = _mount_table()
    for root, words in ((tmp_path / "to-root", "is a symlink to /, not a droot release"),
                        ("/", "unmount every host mount"),
                        (f"{tmp_path}/to-root/", "is a symlink to /")):
        result = droot("umount", "--root", root)
        assert result.returncode == 1 and result.stdout == "", (root, result)
        assert result.stderr.startswith("droot: ") and result.stderr.count("\n") == 1
        assert words in result.stderr and "Traceback" not in result.stderr
    assert _mount_table() == before


UMOUNT_SCENARIO = r"""
set -e
mount -t tmpfs droot-test "$DECOY/mnt"
# The attack: a symlink at the root, planted by whoever could write its parent.
set +e
"$DROOT" umount --root "$T/planted" 2>"$T/planted.err"; echo "planted status $?"
set -e
grep -q " $DECOY/mnt " /proc/self/mountinfo && echo "decoy mount kept"
# The control: the same mount is unmounted when the directory itself is given (what
# following the symlink would have done).
"$DROOT" umount --root "$DECOY"
grep -q " $DECOY/mnt " /proc/self/mountinfo || echo "decoy mount gone when named"
# The legit layout: a release symlink made by deploy is followed to its release.
mount -t tmpfs droot-test "$RELEASE/proc"
"$DROOT" umount --root "$T/app"
grep -q " $RELEASE/proc " /proc/self/mountinfo || echo "release mount gone"
"""


def test_umount_follows_only_a_release_symlink(tmp_path):
    """In a private mount namespace of its own (nothing is mounted on the host): a root
    symlinked to a directory with a mount below it is refused and the mount stays; given
    by its own name, the directory's mount goes (the control); through the release
    symlink a deploy makes, the release's mount goes."""
    import subprocess
    decoy = tmp_path / "decoy"
    (decoy / "mnt").mkdir(parents=True)
    (tmp_path / "planted").symlink_to(decoy)
    release = tmp_path / "app.releases" / "000001-20260101T000000.000000Z-0123456789ab"
    (release / "proc").mkdir(parents=True)
    (tmp_path / "app").symlink_to(f"app.releases/{release.name}")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", UMOUNT_SCENARIO],
        env={**os.environ, "T": str(tmp_path), "DECOY": str(decoy), "RELEASE": str(release),
             "DROOT": DROOT}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "planted status 1", "decoy mount kept", f"unmounted {decoy}/mnt",
        "decoy mount gone when named", f"unmounted {release}/proc", "release mount gone"]
    planted = (tmp_path / "planted.err").read_text()
    assert planted == (f"droot: root {tmp_path}/planted is a symlink to {decoy}, not a droot "
                       "release symlink; refusing to follow it (give the directory itself)\n")
    assert host_mounts_below(tmp_path) == []
