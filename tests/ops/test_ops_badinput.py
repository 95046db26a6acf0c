"""Bad isolation and limit options: one clear line, droot's failure status, and nothing
half-created (no cgroup is left, the app never starts)."""

import os
import subprocess

import pytest

from tests.conftest import DROOT
from tests.ops.conftest import app_cgroup_dirs, fresh_root, remove_cgroups, run_app


@pytest.fixture
def root(tmp_path):
    root = fresh_root(tmp_path)
    try:
        yield root
    finally:
        remove_cgroups(root)


def assert_refused(result, message, root):
    assert result.returncode == 125, result
    assert result.stdout == ""  # the app never ran
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("droot: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert app_cgroup_dirs(root) == []


@pytest.mark.parametrize("options, message", [
    (["--memory", "12XB"], "--memory '12XB': not a size"),
    (["--memory", "64M", "--cpus", "lots"], "--cpus 'lots': not a number of CPUs"),
    (["--pids-limit", "0", "--memory", "64M"], "--pids-limit '0': not a positive number"),
    (["--net", "bridge"], "--net 'bridge': use 'none'"),
    (["--hostname", "bad name!"], "--hostname 'bad name!': not a valid hostname"),
    (["--userns", "ops-no-such-user", "--memory", "64M"],
     "no subordinate range for 'ops-no-such-user' in /etc/subuid"),
    (["--userns", "0:65536"], "would make root inside root on the host"),
    (["--userns", "231072:65536", "-u", "70000", "--memory", "64M"],
     "uid 70000 is outside the mapped range"),
])
def test_bad_option_is_one_line_and_leaves_nothing(root, options, message):
    assert_refused(run_app(root, options, ["/bin/echo", "ran"]), message, root)


@pytest.mark.skipif(not os.path.ismount("/sys/fs/cgroup/pids"),
                    reason="needs a v1 pids hierarchy to hide (hybrid or v1 host)")
def test_missing_controller_is_one_line_and_nothing_is_made(root):
    # In a private mount namespace of the test only, the pids hierarchy is unmounted, so
    # droot finds no pids controller; the memory cgroup must not be made either.
    script = 'umount /sys/fs/cgroup/pids && exec "$@"'
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", DROOT, "run",
         "--root", str(root), "--memory", "64M", "--pids-limit", "5", "--", "/bin/echo", "ran"],
        capture_output=True, text=True, timeout=60)
    assert_refused(result, "--pids-limit: the pids cgroup controller is not available", root)
