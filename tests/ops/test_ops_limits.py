"""--memory, --cpus, --pids-limit: the cgroup holds the limit, the kernel enforces it, droot
reports it, and no cgroup is left behind."""

import signal
from pathlib import Path

import pytest

from droot.run import cgroups
from tests.ops.conftest import (app_cgroup_dirs, fresh_root, remove_cgroups, run_app, start_app,
                                stop_app, wait_until)

# awk doubling a string to 128 MiB: ~256 MiB at its peak, in a fraction of a second.
ALLOCATE = ["/bin/awk", 'BEGIN { s = "x"; while (length(s) < 100000000) s = s s; '
            'print length(s) }']


@pytest.fixture
def root(tmp_path):
    root = fresh_root(tmp_path)
    try:
        yield root
        assert app_cgroup_dirs(root) == [], "a cgroup was left behind"
    finally:
        remove_cgroups(root)


def test_limits_are_in_the_cgroup_files_and_the_app_in_the_cgroup(root):
    app = start_app(root, ["--memory", "64M", "--cpus", "0.5", "--pids-limit", "30"])
    try:
        def joined():
            found = app_cgroup_dirs(root)
            return len(found) == 3 and all(str(app.pid) in (d / "cgroup.procs").read_text()
                                           .split() for d in found) and found
        directories = wait_until(joined, "the app in its three cgroups")
        files = {p.name: p for d in directories for p in d.iterdir()}
        for directory in directories:
            assert directory.name == f"{cgroups.escape_path(str(root))}.{app.pid}"
        if "memory.max" in files:  # cgroup v2
            assert files["memory.max"].read_text().strip() == str(64 << 20)
            assert files["cpu.max"].read_text().split() == ["50000", "100000"]
        else:  # v1, as on this hybrid host
            assert files["memory.limit_in_bytes"].read_text().strip() == str(64 << 20)
            assert files["cpu.cfs_quota_us"].read_text().strip() == "50000"
            assert files["cpu.cfs_period_us"].read_text().strip() == "100000"
        assert files["pids.max"].read_text().strip() == "30"
    finally:
        stop_app(app)


def test_memory_past_the_limit_is_oom_killed_and_reported(root):
    unlimited = run_app(root, [], ALLOCATE)
    assert unlimited.returncode == 0 and unlimited.stdout.strip() == "134217728"
    limited = run_app(root, ["--memory", "32M"], ALLOCATE)
    assert limited.returncode == -signal.SIGKILL
    assert f"droot: {root}: 1 process OOM-killed at the memory limit (32M)" in limited.stderr


def test_memory_limit_under_pid_namespace_reports_too(root):
    limited = run_app(root, ["--pid", "--memory", "32M"], ALLOCATE)
    assert limited.returncode == -signal.SIGKILL
    assert "OOM-killed at the memory limit (32M)" in limited.stderr


# Forks 60 sleepers, counting each one started (a failed fork ends the shell).
FORK_BOMB = ["/bin/sh", "-c", "n=0; while [ $n -lt 60 ]; do sleep 1 & n=$((n+1)); echo $n; "
             "done; wait"]


def test_fork_bomb_stops_at_the_pids_limit(root):
    unlimited = run_app(root, [], FORK_BOMB)
    assert unlimited.stdout.split()[-1] == "60"
    limited = run_app(root, ["--pids-limit", "20"], FORK_BOMB)
    assert int(limited.stdout.split()[-1]) < 20
    assert "can't fork" in limited.stderr
    assert "refused at the pids limit (20)" in limited.stderr


def test_cpu_limit_throttles_and_is_reported(root):
    spin = ["/bin/timeout", "1", "/bin/sh", "-c", "while :; do :; done"]
    result = run_app(root, ["--cpus", "0.1"], spin)
    assert "periods at the CPU limit (0.1)" in result.stderr


def test_cgroup_is_removed_when_the_app_is_killed(root):
    app = start_app(root, ["--memory", "64M"])
    wait_until(lambda: app_cgroup_dirs(root), "the app's cgroup")
    app.send_signal(signal.SIGKILL)
    app.communicate(timeout=60)  # ends when the keeper, holding stderr, is done
    assert app_cgroup_dirs(root) == []


def test_stale_cgroups_are_swept_by_the_next_run(root):
    mount_point, _ = cgroups.plan(["pids"])["pids"]
    dead_pid = 2**22 + 12345  # above pid_max: no process has it
    stale = Path(mount_point) / cgroups.PREFIX / cgroups.cgroup_name(str(root), dead_pid)
    stale.mkdir(parents=True)
    assert run_app(root, ["--pids-limit", "10"]).returncode == 0
    assert not stale.exists()


def test_no_limit_no_cgroup(root):
    # A plain run (no limits) leaves the process in the cgroups it was started in.
    result = run_app(root, [], ["/bin/cat", "/proc/self/cgroup"])
    assert f"/{cgroups.PREFIX}/" not in result.stdout
