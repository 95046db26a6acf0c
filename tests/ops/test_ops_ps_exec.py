"""`droot ps` and `droot exec` against apps started with the installed `droot run`."""

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import DROOT, droot
from tests.ops.conftest import fresh_root, remove_cgroups, start_app, stop_app, wait_until


@pytest.fixture
def root(tmp_path):
    root = fresh_root(tmp_path)
    (root / "srv").mkdir()
    yield root
    remove_cgroups(root)


def listed(pid: int) -> dict | None:
    result = droot("ps", "--json")
    assert result.returncode == 0, result.stderr
    return next((app for app in json.loads(result.stdout) if app["pid"] == pid), None)


def started(root, options=(), command=("/bin/sleep", "60")):
    app = start_app(root, options, command)
    wait_until(lambda: app.poll() is not None or listed(app.pid), "the app in droot ps")
    assert app.poll() is None, app.communicate()
    return app


def test_ps_lists_a_running_app_and_forgets_it_when_it_exits(root):
    app = started(root, ["-u", "app", "-w", "/srv"])
    try:
        entry = listed(app.pid)
        assert entry["root"] == str(root) and entry["release"] == str(root)
        assert entry["user"] == "app" and entry["uid"] == 1000
        assert entry["app_pid"] == app.pid and entry["rss_bytes"] > 0
        assert entry["pid_namespace"] is False
        table = droot("ps").stdout.splitlines()
        assert table[0].split() == ["PID", "ROOT", "RELEASE", "USER", "UPTIME", "MEM", "CPU"]
        assert any(line.split()[:2] == [str(app.pid), str(root)] for line in table[1:])
    finally:
        stop_app(app)
    assert listed(app.pid) is None  # nothing to go stale: the kernel is the state


def test_ps_names_the_root_and_release_of_a_deployed_app(tmp_path):
    release = fresh_root(tmp_path / "releases", "20261128-1")
    current = tmp_path / "current"
    current.symlink_to(release)
    app = started(current)
    try:
        entry = listed(app.pid)
        assert (entry["root"], entry["release"]) == (str(current), str(release))
        line = next(line for line in droot("ps").stdout.splitlines()
                    if line.startswith(f"{app.pid} "))
        assert line.split()[2] == "20261128-1"
    finally:
        stop_app(app)


def test_ps_shows_the_supervised_pid_under_pid_namespace_and_limits(root):
    app = started(root, ["--pid", "--memory", "64M"])
    try:
        entry = listed(app.pid)
        assert entry["pid_namespace"] is True and entry["app_pid"] != app.pid
        assert entry["root"] == str(root)
    finally:
        stop_app(app)


def test_exec_enters_the_apps_environment(root):
    app = started(root, ["-u", "app", "-w", "/srv", "-e", "GREETING=hi there",
                         "--hostname", "appbox", "--net", "none"])
    try:
        script = ("echo $GREETING; pwd; id -un; hostname; cat /proc/net/dev | wc -l; "
                  "grep CapEff /proc/self/status; readlink /proc/self/ns/mnt")
        result = droot("exec", "--pid", app.pid, "--", "/bin/sh", "-c", script)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:4] == ["hi there", "/srv", "app", "appbox"]
        assert lines[4] == "3"  # /proc/net/dev of a namespace with only lo
        assert lines[5].split()[1] == "0000000000000000"  # as the app: no capability
        assert lines[6] == os.readlink(f"/proc/{app.pid}/ns/mnt")
        # As root, by --root: root's capabilities of a run, no more.
        result = droot("exec", "--root", root, "-u", "root", "--", "/bin/sh", "-c",
                       "id -u; grep CapBnd /proc/self/status")
        assert result.stdout.split()[0] == "0"
        bounding = int(result.stdout.split()[-1], 16)
        assert bounding & (1 << 21) == 0  # no CAP_SYS_ADMIN, as in the app
    finally:
        stop_app(app)


def test_exec_joins_the_pid_namespace_and_cgroup(root):
    app = started(root, ["--pid", "--pids-limit", "50"])
    try:
        result = droot("exec", "--pid", app.pid, "--", "/bin/sh", "-c",
                       "echo $$; ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert int(lines[0]) < 10 and int(lines[1]) < 10  # the namespace's own numbering
        assert any(":pids:/droot/" in line for line in lines[2:])
    finally:
        stop_app(app)


def test_exec_exit_status_is_the_commands(root):
    app = started(root)
    try:
        assert droot("exec", "--pid", app.pid, "--", "/bin/sh", "-c", "exit 9").returncode == 9
        missing = droot("exec", "--pid", app.pid, "--", "/no/such")
        assert missing.returncode == 127 and missing.stderr.count("\n") == 1
    finally:
        stop_app(app)


def test_exec_into_a_process_that_is_not_a_droot_app(root):
    host_process = subprocess.Popen(["sleep", "60"])
    try:
        result = droot("exec", "--pid", host_process.pid, "--", "/bin/true")
        assert result.returncode == 125
        assert result.stderr == (f"droot: exec: PID {host_process.pid} is not a droot app (not "
                                 "chrooted in a mount namespace of its own); 'droot ps' lists "
                                 "the apps\n")
    finally:
        host_process.send_signal(signal.SIGKILL)
        host_process.wait()
    gone = droot("exec", "--pid", 2**22 + 1, "--", "/bin/true")
    assert gone.returncode == 125 and "is not running" in gone.stderr
    nothing = droot("exec", "--root", root, "--", "/bin/true")
    assert nothing.returncode == 125 and "no droot app is running from" in nothing.stderr


def test_exec_into_a_user_namespace_app(root):
    app = started(root, ["--userns", "231072:65536", "--pid", "-u", "app"])
    try:
        entry = listed(app.pid)
        assert (entry["user"], entry["uid"], entry["host_uid"]) == ("app", 1000, 232072)
        result = droot("exec", "--pid", app.pid, "--", "/bin/sh", "-c",
                       "id -u; touch /tmp/from-exec")
        assert result.stdout.strip() == "1000", result.stderr
        assert (root / "tmp" / "from-exec").stat().st_uid == 232072  # mapped, as the app
        as_root = droot("exec", "--pid", app.pid, "-u", "root", "--", "/bin/sh", "-c",
                        "id -u; grep CapEff /proc/self/status")
        lines = as_root.stdout.split()
        # Root inside, but bounded by the app: a non-root app's bounding set is empty.
        assert lines[0] == "0" and int(lines[-1], 16) == 0
    finally:
        stop_app(app)


def test_an_exec_session_counts_in_its_app_not_as_another(root):
    app = started(root)
    session = subprocess.Popen([DROOT, "exec", "--pid", str(app.pid), "--", "/bin/sleep", "60"])
    try:
        wait_until(lambda: listed(app.pid)["processes"] == 2, "the session in the app")
        apps = json.loads(droot("ps", "--json").stdout)
        assert [a["pid"] for a in apps if a["root"] == str(root)] == [app.pid]
    finally:
        session.kill()
        session.wait()
        stop_app(app)


def test_exec_into_a_read_only_release_writes_only_where_the_app_may(root):
    """The app of a read-only release writes only to the mounts droot made writable; an
    exec session gets the same read-only Landlock rules, built from the app's mount
    table: the tmpfs and /dev stay writable to it, the release does not."""
    os.setxattr(root, "trusted.droot.read-only", b"1")  # as `deploy --read-only` marks it
    app = started(root, ["--tmpfs", "/tmp"])
    try:
        script = ("echo a > /tmp/f && cat /tmp/f; echo b > /dev/null && echo null; "
                  "(echo c > /srv/f) 2>&1; (mkdir /new) 2>&1; true")
        result = droot("exec", "--pid", app.pid, "-u", "root", "--", "/bin/sh", "-c", script)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:2] == ["a", "null"], lines
        assert len(lines) == 4 and all("Read-only file system" in line for line in lines[2:])
        assert not (root / "srv" / "f").exists() and not (root / "new").exists()
    finally:
        stop_app(app)


def test_a_link_that_changes_while_ps_looks_is_passed_over(tmp_path, monkeypatch):
    """`droot ps` names an app by a symlink to its release. One that a host user swaps for
    a directory between the look and the resolve (os.path.realpath then fails with
    EINVAL, as a suite run beside such a swap loop saw) is passed over, not an internal
    error."""
    import errno
    from droot.ops import apps
    release = tmp_path / "app.releases" / "000001"
    release.mkdir(parents=True)
    (tmp_path / "app.releases" / "flipping").symlink_to(release)
    (tmp_path / "app").symlink_to(release)
    resolve = os.path.realpath

    def changed_meanwhile(path, *args, **kwargs):
        if str(path).endswith("flipping"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        return resolve(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", changed_meanwhile)
    assert apps.given_root(str(release)) == str(tmp_path / "app")
