"""The sandbox holds: attacks run as uid 0 inside `droot run` with default flags, and each
fails. Every test also runs the same attack where it must work (under --no-dropcaps, or
on the host) so that no test passes because the attack itself was broken.

The attacks are tests/run/attack.c, compiled static; none writes to a host file (the
"open for writing" probes append nothing)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import DROOT, droot, run_with_controlling_terminal
from tests.run.conftest import assert_refused, assert_worked, attack


@pytest.fixture
def host_marker(tmp_path):
    """A file only the host sees."""
    marker = tmp_path / "host-only-marker"
    marker.write_text("host secret\n")
    return marker


@pytest.fixture
def host_process():
    """A process of the host running as root with every capability."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def test_double_chroot_escape(run_root, host_marker):
    assert_refused(attack(run_root, "chroot-escape", host_marker), "Operation not permitted")
    assert_worked(attack(run_root, "chroot-escape", host_marker, options=["--no-dropcaps"]),
                  "ESCAPED")


def test_fchdir_through_an_inherited_directory_descriptor(run_root, host_marker):
    directory = os.open(host_marker.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = attack(run_root, "fchdir-escape", directory, host_marker.name,
                        pass_fds=[directory])
        assert_refused(result, "Bad file descriptor")
        # plain chroot(8) passes the descriptor on, and the same attack walks out
        host = subprocess.run(["chroot", run_root, "/attack", "fchdir-escape", str(directory),
                               host_marker.name], pass_fds=[directory], capture_output=True,
                              text=True)
        assert_worked(host, "ESCAPED")
    finally:
        os.close(directory)


@pytest.mark.parametrize("target", ["init", "host process"])
def test_host_root_through_proc_pid_root(run_root, host_marker, host_process, target):
    pid = 1 if target == "init" else host_process.pid
    if not os.access(f"/proc/{pid}/root{host_marker}", os.R_OK):
        pytest.skip(f"even the host cannot reach /proc/{pid}/root here")
    script = f"cat /proc/{pid}/root{host_marker}"
    # hidden from the app's /proc; listed with --share proc, but not entered
    for options, refusal in (((), "No such file or directory"),
                             (("--share", "proc"), "Permission denied")):
        result = droot("run", "--root", run_root, *options, "--", "/bin/sh", "-c", script)
        assert result.returncode != 0 and "host secret" not in result.stdout
        assert refusal in result.stderr
    result = droot("run", "--root", run_root, "--no-dropcaps", "--", "/bin/sh", "-c", script)
    assert result.stdout == "host secret\n"


def test_mknod_of_the_host_disk(run_root):
    device = os.stat("/").st_dev
    args = ("mknod-block", "/tmp/disk", os.major(device), os.minor(device))
    assert_refused(attack(run_root, *args), "Operation not permitted")
    assert not (run_root / "tmp" / "disk").exists()
    try:
        assert_worked(attack(run_root, *args, options=["--no-dropcaps"]), "CREATED")
        assert (run_root / "tmp" / "disk").is_block_device()
    finally:
        (run_root / "tmp" / "disk").unlink(missing_ok=True)  # no disk node left behind


def test_mount_and_remount(run_root):
    (run_root / "mnt").mkdir()
    assert_refused(attack(run_root, "mount-tmpfs", "/mnt"), "Operation not permitted")
    for path in ("/sys", "/proc/sys"):
        assert_refused(attack(run_root, "remount-rw", path), "Operation not permitted")
    # with every capability the same calls work (inside droot's own namespace only)
    assert_worked(attack(run_root, "mount-tmpfs", "/mnt", options=["--no-dropcaps"]), "MOUNTED")
    for path in ("/sys", "/proc/sys"):
        assert_worked(attack(run_root, "remount-rw", path, options=["--no-dropcaps"]),
                      "REMOUNTED")


def writable_sys_file() -> str:
    for path in ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/profiling",
                 "/sys/kernel/rcu_expedited", "/sys/kernel/uevent_helper"):
        if os.path.exists(path):
            return path
    pytest.fail("no writable file under /sys to try")


def test_writes_under_sys(run_root, attack_binary):
    path = writable_sys_file()
    assert_refused(attack(run_root, "open-write", path), "Read-only file system")
    host = subprocess.run([attack_binary, "open-write", path], capture_output=True, text=True)
    assert_worked(host, "WRITABLE")


@pytest.mark.parametrize("path", ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger"])
def test_writes_to_kernel_knobs_in_proc(run_root, attack_binary, path):
    """Root needs no capability for these: on the host, a uid-0 process with an empty
    bounding set opens them for writing; inside droot they are read-only."""
    if not os.path.exists(path):
        pytest.skip(f"this kernel has no {path}")
    assert_refused(attack(run_root, "open-write", path), "Read-only file system")
    assert_refused(attack(run_root, "open-write", path, options=["--no-dropcaps"]),
                   "Read-only file system")
    host = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", attack_binary,
                           "open-write", path], capture_output=True, text=True)
    assert_worked(host, "WRITABLE")


def test_raw_sockets(run_root):
    assert_refused(attack(run_root, "raw-socket"), "Operation not permitted")
    assert_worked(attack(run_root, "raw-socket", options=["--no-dropcaps"]), "RAW")


def test_loading_a_kernel_module(run_root, attack_binary):
    host = subprocess.run([attack_binary, "load-module"], capture_output=True, text=True)
    if "Function not implemented" in host.stdout:
        pytest.skip("this kernel has no module support")
    assert_refused(attack(run_root, "load-module"), "Operation not permitted")
    assert_worked(attack(run_root, "load-module", options=["--no-dropcaps"]), "PERMITTED")


def test_ptrace_of_a_host_process(run_root, host_process):
    assert_refused(attack(run_root, "ptrace", host_process.pid), "Operation not permitted")
    assert_worked(attack(run_root, "ptrace", host_process.pid, options=["--no-dropcaps"]),
                  "ATTACHED")


def test_setuid_binary_gains_nothing(run_root, attack_binary):
    setuid = run_root / "suid-attack"
    shutil.copy2(attack_binary, setuid)
    os.chown(setuid, 0, 0)
    setuid.chmod(0o4755)
    command = ["/suid-attack", "euid"]
    try:
        result = droot("run", "--root", run_root, "-u", "app", "--", *command)
        assert result.stdout == "euid=1000\n", result.stderr
        result = droot("run", "--root", run_root, "-u", "app", "--allow-new-privs", "--",
                       *command)
        assert result.stdout == "euid=0\n", result.stderr
    finally:
        setuid.unlink()  # a setuid-root program must not outlive the test


def test_tiocsti_injection_into_the_terminal(run_root):
    result = run_with_controlling_terminal(
        [DROOT, "run", "--root", str(run_root), "--", "/attack", "tiocsti"])
    assert_refused(result, "TIOCSTI: Operation not permitted")
    result = run_with_controlling_terminal(
        [DROOT, "run", "--root", str(run_root), "--no-dropcaps", "--", "/attack", "tiocsti"])
    assert_refused(result, "TIOCSTI: Operation not permitted")
    # the kernel here lets anyone inject into their own terminal: plain chroot(8)
    assert_worked(run_with_controlling_terminal(["chroot", str(run_root), "/attack", "tiocsti"]),
                  "INJECTED")


# --- CVE-2019-5736: a command whose interpreter is /proc/self/exe -------------------------

EXE_ATTACK = """#!/proc/self/exe
# Run by droot's own Python (the kernel resolved /proc/self/exe in droot's process):
# keep a handle on that executable, become another program, reopen it for writing.
import os
handle = os.open("/proc/self/exe", os.O_PATH)
os.set_inheritable(handle, True)
print(os.readlink("/proc/self/exe"), flush=True)
os.execv(ATTACK, [ATTACK, "open-write", f"/proc/self/fd/{handle}"])
"""

SLEEPER = """#!/proc/self/exe
import os, time
print(os.getpid(), flush=True)
time.sleep(120)
"""


@pytest.fixture
def python_copy(tmp_path):
    """A copy of this Python to run droot with: whatever happens, the real one is safe."""
    directory = tmp_path / "python-copy"
    directory.mkdir()
    copy = directory / "python3"
    shutil.copy2(os.path.realpath(sys.executable), copy)
    return copy


@pytest.fixture
def python_root(run_root):
    """The busybox root, with what this Python needs to start bound in read-only."""
    (run_root / "lib").symlink_to("usr/lib")
    (run_root / "lib64").symlink_to("usr/lib64")
    options = ["--robind", "/usr/lib", "--robind", "/usr/lib64", "--robind", sys.base_prefix]
    return run_root, options


def droot_with(python, root, options, command, **kwargs):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(DROOT_SOURCE)}
    return subprocess.Popen([str(python), "-m", "droot", "run", "--root", str(root), *options,
                             "--", *command], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


DROOT_SOURCE = os.path.dirname(os.path.dirname(__import__("droot").__file__))


def test_proc_self_exe_interpreter_cannot_write_droots_python(python_root, python_copy,
                                                              attack_binary, tmp_path):
    root, options = python_root
    (root / "exe-attack").write_text(EXE_ATTACK.replace("ATTACK", '"/attack"'))
    (root / "exe-attack").chmod(0o755)
    before = python_copy.read_bytes()
    # Landlock lets the app execute only files beneath its root: droot's Python, outside,
    # cannot even start as the script's interpreter.
    process = droot_with(python_copy, root, options, ["/exe-attack"])
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 126 and stdout == "", stderr
    assert stderr == "droot: cannot run /exe-attack: Permission denied\n"
    assert python_copy.read_bytes() == before
    # without the Landlock confinement (--no-dropcaps) the same attack gets the file
    process = droot_with(python_copy, root, ["--no-dropcaps", *options], ["/exe-attack"])
    stdout, stderr = process.communicate(timeout=120)
    assert stdout.splitlines() == [str(python_copy), "WRITABLE"], stderr
    # and so does the same program on the host
    host_script = tmp_path / "exe-attack-host"
    host_script.write_text(EXE_ATTACK.replace("ATTACK", repr(str(attack_binary))))
    host = subprocess.run([str(python_copy), str(host_script)], capture_output=True, text=True)
    assert host.stdout.splitlines() == [str(python_copy), "WRITABLE"], host.stderr


@pytest.mark.parametrize("share, refusal", [
    ([], "No such file or directory"),  # hidden in /proc: not ptraceable
    (["--share", "proc"], "Permission denied"),  # listed, but Landlock denies the link
])
def test_proc_pid_exe_of_another_app_cannot_be_written(python_root, python_copy,
                                                       attack_binary, share, refusal):
    """One app holds the executable of another (a privileged app run by droot's Python as
    its interpreter), kills it and reopens the file for writing: runc's CVE-2019-5736
    exploit."""
    root, options = python_root
    (root / "sleeper").write_text(SLEEPER)
    (root / "sleeper").chmod(0o755)
    victim = droot_with(python_copy, root, ["--no-dropcaps", *options], ["/sleeper"])
    try:
        pid = int(victim.stdout.readline())
        result = attack(root, "exe-attack", pid, options=share)
        assert_refused(result, refusal)
        assert victim.poll() is None  # not even killed: outside the app's reach
    finally:
        victim.kill()
        victim.wait()
    # on the host the same exploit against a process of the copy works
    host_victim = subprocess.Popen([str(python_copy), "-c", "import time; time.sleep(120)"])
    try:
        host = subprocess.run([attack_binary, "exe-attack", str(host_victim.pid)],
                              capture_output=True, text=True)
        assert_worked(host, "WRITABLE")
    finally:
        host_victim.kill()
        host_victim.wait()
