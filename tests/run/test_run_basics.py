"""`droot run` does what the original did, and more: exec in place, /proc, /sys, /dev,
binds, users, environment, the image's own command, capabilities, descriptors."""

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import DROOT, droot
from tests.run.conftest import host_mounts_below

DEFAULT_CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3,
                "SETGID": 6, "SETUID": 7, "NET_BIND_SERVICE": 10}


def sh(root, script, *options, **kwargs):
    return droot("run", "--root", root, *options, "--", "/bin/sh", "-c", script, **kwargs)


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_exec_in_place_keeps_pid_signals_and_status(run_root):
    """The supervisor's child is the app: same PID, its signals, its exit status."""
    script = 'trap "echo got TERM; exit 7" TERM; echo $$; while :; do sleep 0.05; done'
    process = subprocess.Popen([DROOT, "run", "--root", run_root, "--", "/bin/sh", "-c", script],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert int(process.stdout.readline()) == process.pid
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 7
        assert process.stdout.read() == "got TERM\n"
    finally:
        process.kill()
        process.wait()
    assert sh(run_root, "exit 42").returncode == 42


def test_proc_sys_dev_and_no_mount_reaches_the_host(run_root):
    script = ('stat -c "%n %t:%T %a" /dev/null /dev/zero /dev/full /dev/random /dev/urandom '
              '/dev/tty; cat /proc/self/mountinfo; '
              'touch /sys/x 2>/dev/null && echo SYS-WRITABLE; test -e /proc/self/status && echo PROC')
    result = sh(run_root, script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # the original droot gave /dev/zero the numbers of /dev/null (hex major:minor here)
    assert lines[:6] == ["/dev/null 1:3 666", "/dev/zero 1:5 666", "/dev/full 1:7 666",
                         "/dev/random 1:8 666", "/dev/urandom 1:9 666", "/dev/tty 5:0 666"]
    mounts = {line.split()[4]: line for line in lines[6:-1]}
    assert {"/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"} <= set(mounts)
    assert " ro," in mounts["/sys"] and "sysfs" in mounts["/sys"]
    assert "devpts" in mounts["/dev/pts"] and "ptmxmode=666" in mounts["/dev/pts"]
    assert lines[-1] == "PROC" and "SYS-WRITABLE" not in result.stdout
    assert host_mounts_below(run_root) == []


def test_mounts_stay_invisible_while_running_and_vanish_on_sigkill(run_root, tmp_path):
    source = tmp_path / "data"
    source.mkdir()
    process = subprocess.Popen([DROOT, "run", "--root", run_root, "-b", f"{source}:/data",
                                "--", "/bin/sh", "-c", "echo ready; exec sleep 60"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        assert host_mounts_below(run_root) == []
        with open(f"/proc/{process.pid}/mountinfo") as file:
            assert " /data " in file.read()  # the app's own namespace has them
    finally:
        process.kill()
        process.wait()
    assert host_mounts_below(run_root) == []


def test_bind_and_read_only_bind(run_root, tmp_path):
    writable, readonly = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    readonly.mkdir()
    (readonly / "kept").write_text("original\n")
    single = tmp_path / "single.conf"
    single.write_text("one file\n")
    script = ("echo written > /srv/rw/new && cat /srv/ro/kept && cat /etc/app.conf && "
              "(echo x > /srv/ro/kept) 2>/dev/null || echo RO-REFUSED")
    result = sh(run_root, script, "-b", f"{writable}:/srv/rw", "--robind", f"{readonly}:/srv/ro",
                "--bind", f"{single}:/etc/app.conf")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "original\none file\nRO-REFUSED\n"
    assert (writable / "new").read_text() == "written\n"
    assert (readonly / "kept").read_text() == "original\n"
    assert (run_root / "srv" / "rw").is_dir()  # DST created when missing


def test_bind_without_destination_uses_the_same_path(run_root, tmp_path):
    source = tmp_path / "same"
    source.mkdir()
    (source / "f").write_text("here\n")
    result = sh(run_root, f"cat {source}/f", "-b", str(source))
    assert result.stdout == "here\n", result.stderr


def test_environment_layers_and_clean_env(run_root, tmp_path):
    (run_root / ".drootenv").write_text(
        "FROM_IMAGE=a=b c d\nOVERRIDDEN=image\nBOTH=image\nPATH=/bin\n")
    env_file = tmp_path / "app.env"
    env_file.write_text("# comment\n\nOVERRIDDEN=file\nBOTH=file\n")
    result = sh(run_root, 'echo "$FROM_IMAGE|$OVERRIDDEN|$BOTH|$HOME|$PATH|${HOST_ONLY-unset}"',
                "--env-file", env_file, "-e", "BOTH=flag=1", env={**os.environ, "HOST_ONLY": "x"})
    assert result.stdout == "a=b c d|file|flag=1|/root|/bin|unset\n", result.stderr


def test_users_and_groups_from_the_image(run_root):
    result = sh(run_root, 'id; echo "$HOME"', "-u", "app")
    assert result.stdout == ("uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\n"
                             "/home/app\n"), result.stderr
    result = sh(run_root, "id -u; id -g; id -G", "-u", "1000", "-g", "staff")
    assert result.stdout.split() == ["1000", "50", "50"]
    result = sh(run_root, "id -u; id -g", "-u", "4242")  # unknown number: runs as it
    assert result.stdout.split() == ["4242", "4242"]


@pytest.mark.parametrize("number", ["99999999999", "4294967295", "\u00b2", "1" * 5000])
def test_an_image_user_whose_number_no_kernel_takes_is_no_user(run_root, number):
    """The image writes its own /etc/passwd: a record whose uid is too large, (uid_t) -1,
    a digit int() refuses, or longer than int() parses is skipped like any malformed
    record (by users.find_entry, which `droot exec -u` reads it with too): one line, not
    an internal error."""
    with open(run_root / "etc" / "passwd", "a", encoding="utf-8") as passwd:
        passwd.write(f"odd:x:{number}:0::/:/bin/sh\n")
    result = sh(run_root, "id -u", "-u", "odd")
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "unknown user 'odd'" in result.stderr and "internal error" not in result.stderr


def test_host_user_missing_in_the_image_is_added(run_root):
    host = next(line for line in open("/etc/passwd") if line.startswith("daemon:")).split(":")
    passwd = run_root / "etc" / "passwd"
    passwd.chmod(0o664)
    before = passwd.read_text()
    result = sh(run_root, "id -un; id -u", "-u", "daemon")
    assert result.stdout.split() == ["daemon", host[2]], result.stderr
    after = passwd.read_text()
    assert after.startswith(before) and after.count("\n") == before.count("\n") + 1
    assert after.splitlines()[-1].split(":")[:4] == ["daemon", "x", host[2], host[3]]
    assert oct(passwd.stat().st_mode & 0o777) == oct(0o664)
    assert any(line.split(":")[2] == host[3] for line in (run_root / "etc/group").read_text()
               .splitlines())
    assert not [p for p in (run_root / "etc").iterdir() if ".droot-" in p.name]
    # a second run finds it and adds nothing
    assert sh(run_root, "id -u", "-u", "daemon").stdout.strip() == host[2]
    assert passwd.read_text() == after


def test_copy_files_from_the_host(run_root):
    result = sh(run_root, "cat /etc/hosts", "--cp")
    assert result.returncode == 0, result.stderr
    assert result.stdout == open("/etc/hosts").read()
    assert (run_root / "etc" / "passwd").read_text() == open("/etc/passwd").read()


def test_image_command_workdir_and_user_from_droot_json(run_root):
    (run_root / "srv").mkdir()
    (run_root / ".droot.json").write_text(json.dumps({
        "version": 1, "entrypoint": ["/bin/sh", "-c"], "cmd": ['echo "$(id -un) in $(pwd)"'],
        "working_dir": "/srv", "user": "app", "env": []}))
    result = droot("run", "--root", run_root)
    assert result.stdout == "app in /srv\n", result.stderr
    result = droot("run", "--root", run_root, "-u", "root", "-w", "/tmp")
    assert result.stdout == "root in /tmp\n"


def test_workdir_flag(run_root):
    assert sh(run_root, "pwd", "-w", "/etc").stdout == "/etc\n"


@pytest.mark.parametrize("options, expected", [
    ((), set(DEFAULT_CAPS)),
    (("--cap-add", "NET_RAW", "--cap-drop", "CHOWN"), set(DEFAULT_CAPS) - {"CHOWN"} | {"NET_RAW"}),
    (("--cap-drop", "ALL"), set()),
    (("-u", "app"), set()),
    (("-u", "app", "--cap-add", "NET_BIND_SERVICE"), {"NET_BIND_SERVICE"}),
])
def test_capabilities_in_every_set(run_root, options, expected):
    numbers = {"NET_RAW": 13, **DEFAULT_CAPS}
    mask = sum(1 << numbers[name] for name in expected)
    result = sh(run_root, "cat /proc/self/status", *options)
    fields = status_fields(result.stdout)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[name], 16) == mask, (name, fields[name])
    assert fields["NoNewPrivs"] == "1"


def test_no_dropcaps_and_allow_new_privs(run_root):
    fields = status_fields(sh(run_root, "cat /proc/self/status", "--no-dropcaps",
                              "--allow-new-privs").stdout)
    with open("/proc/self/status") as file:
        host = status_fields(file.read())
    assert fields["CapBnd"] == host["CapBnd"] and fields["CapEff"] == host["CapBnd"]
    assert fields["NoNewPrivs"] == "0"


def test_descriptors_are_closed_except_systemd_sockets(run_root, tmp_path):
    """fd 3 is a socket passed the systemd way (LISTEN_PID is droot's PID, which the app
    keeps); fd 4 is an ordinary open file that must not reach the app."""
    (tmp_path / "f").write_text("x")
    script = (f'exec 3<{tmp_path}/f 4<{tmp_path}/f; LISTEN_PID=$$ LISTEN_FDS=1 exec {DROOT} run '
              f'--root {run_root} -- /bin/sh -c \'/attack fds; echo "$LISTEN_FDS $LISTEN_PID $$"\'')
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
    descriptors, listen = result.stdout.splitlines()
    assert descriptors.split() == ["0", "1", "2", "3"], result.stderr
    count, listen_pid, pid = listen.split()
    assert count == "1" and listen_pid == pid
    # without LISTEN_PID naming this process, nothing beyond stderr is kept
    result = subprocess.run(["/bin/sh", "-c", script.replace("LISTEN_PID=$$ ", "LISTEN_PID=1 ")],
                            capture_output=True, text=True)
    assert result.stdout.splitlines()[0].split() == ["0", "1", "2"]


def test_umount_cleans_what_an_old_run_left(tmp_path):
    """Leftovers in the host's namespace (as the original droot left them) are unmounted,
    deepest first; nothing outside the root is touched."""
    root = tmp_path / "old-root"
    (root / "proc").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "deep").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    made = [["mount", "-t", "tmpfs", "droot-test", str(root / "data")],
            ["mount", "-t", "proc", "proc", str(root / "proc")],
            ["mount", "-t", "tmpfs", "droot-test", str(outside)]]
    try:
        for command in made:
            subprocess.run(command, check=True)
        (root / "data" / "deep").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "droot-test", str(root / "data" / "deep")],
                       check=True)
        result = droot("umount", "--root", root)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == f"unmounted {root}/data/deep"
        assert host_mounts_below(root) == []
        assert host_mounts_below(outside) == [str(outside)]
    finally:
        for point in (root / "data" / "deep", root / "data", root / "proc", outside):
            if host_mounts_below(point)[:1] == [str(point)]:
                subprocess.run(["umount", "-l", str(point)])


def test_read_only_bind_is_read_only_below_too(run_root, tmp_path):
    """A mount below the --robind source is bound along and read-only as well."""
    source = tmp_path / "ro-tree"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "droot-test", str(source / "sub")], check=True)
    try:
        script = ("(echo x > /data/sub/file) 2>/dev/null || echo SUB-RO; "
                  "(echo x > /data/file) 2>/dev/null || echo TOP-RO")
        result = sh(run_root, script, "--robind", f"{source}:/data")
        assert result.stdout == "SUB-RO\nTOP-RO\n", result.stderr
        result = sh(run_root, "echo x > /data/sub/file && echo WRITTEN", "-b", f"{source}:/data")
        assert result.stdout == "WRITTEN\n", result.stderr
    finally:
        subprocess.run(["umount", "-l", str(source / "sub")])
