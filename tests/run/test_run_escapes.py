"""The escapes a security review found from inside a default `droot run` (a root app, no
options), each closed, and each with a control where the same attack works: on the host,
with --no-dropcaps, or with the opt-out that lifts the one layer under test.

File handles (Shocker), magic links in the image's paths during set-up, code imported
from the image after chroot, kernel keyrings, processes and IPC outside the app, the
kernel's risky system calls. The attacks are tests/run/attack.c."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import droot
from tests.run.conftest import assert_refused, assert_worked, attack, host_mounts_below


@pytest.fixture
def host_secret(tmp_path):
    """A root-only host file, outside every root, on the same filesystem as the roots."""
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    secret.chmod(0o600)
    return secret


@pytest.fixture
def host_process_of(request):
    """A host process running as another uid."""
    process = subprocess.Popen(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups",
                                "sleep", "120"])
    yield process
    process.kill()
    process.wait()


# --- 1. file handles -------------------------------------------------------------------

def test_open_by_handle_of_a_host_file(run_root, host_secret, attack_binary):
    made = subprocess.run([attack_binary, "name-handle", host_secret], capture_output=True,
                          text=True, check=True)
    handle_type, handle = made.stdout.split()
    shocker = ("open-handle", handle_type, handle)
    # Default: no CAP_DAC_READ_SEARCH, and the seccomp filter denies the call.
    assert_refused(attack(run_root, *shocker), "open_by_handle_at: Operation not permitted")
    # Each layer alone: the call allowed but no capability...
    assert_refused(attack(run_root, *shocker, options=["--allow-syscall", "open_by_handle_at"]),
                   "open_by_handle_at: Operation not permitted")
    # ...the capability given (which lets the call through seccomp), and Landlock refuses
    # to open a file outside the root.
    assert_refused(attack(run_root, *shocker, options=["--cap-add", "DAC_READ_SEARCH"]),
                   "open_by_handle_at: Permission denied")
    # Privileged, the handle opens the host's file.
    assert_worked(attack(run_root, *shocker, options=["--no-dropcaps"]), "host secret")


# --- 2. magic links in the image's paths during set-up ---------------------------------

def through_host_proc(root, path_inside) -> str:
    """What a plain chroot with a /proc mounted reads at `path_inside`: the control that
    shows the image's link really leads to the host once /proc exists."""
    script = (f'mount -t proc proc "$0/proc" && exec chroot "$0" /bin/cat {path_inside}')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                             str(root)], capture_output=True, text=True)
    return result.stdout


def via_proc(host_path) -> str:
    """`host_path` reached through the root directory of a host process (this test's)."""
    return f"/proc/{os.getpid()}/root{host_path}"


def link_to_host(link, host_path):
    """`link` in the image pointing at `host_path` through a magic link."""
    link.unlink(missing_ok=True)
    link.symlink_to(via_proc(host_path))


def test_image_passwd_through_proc_pid_root(run_root, host_secret):
    host_passwd = host_secret.parent / "host-passwd"
    host_passwd.write_text("app:x:1000:1000:host secret:/:/bin/sh\n")
    link_to_host(run_root / "etc" / "passwd", host_passwd)
    result = droot("run", "--root", run_root, "-u", "app", "--", "/bin/cat", "/etc/passwd")
    assert result.returncode == 125 and "host secret" not in result.stdout + result.stderr
    assert result.stderr == ("droot: unknown user 'app': neither the image's /etc/passwd nor "
                             "the host's has it (give a number, or add the user to the image)\n")
    assert "host secret" in through_host_proc(run_root, "/etc/passwd")


def test_image_env_file_through_proc_pid_root(run_root, host_secret):
    link_to_host(run_root / ".drootenv", host_secret.parent / "host.env")
    (host_secret.parent / "host.env").write_text("SECRET=host secret\n")
    result = droot("run", "--root", run_root, "--", "/bin/env")
    assert result.returncode == 0, result.stderr
    assert "host secret" not in result.stdout
    assert "host secret" in through_host_proc(run_root, "/.drootenv")


def test_copied_files_and_created_directories_stay_inside(run_root, tmp_path):
    """`--cp` writes /etc/*, a bind creates its target: through an image whose /etc and
    /data lead to the host, droot would replace host files and make root-owned
    directories there."""
    host_directory = tmp_path / "host-dir"
    host_directory.mkdir()
    (host_directory / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    before = sorted(os.listdir(host_directory))
    shutil.rmtree(run_root / "etc")
    link_to_host(run_root / "etc", host_directory)
    (run_root / "data").symlink_to(via_proc(host_directory))
    bind_source = tmp_path / "bind-source"
    bind_source.mkdir()
    for options in (["--cp"], ["-b", f"{bind_source}:/data/new/deeper"]):
        result = droot("run", "--root", run_root, *options, "--", "/bin/true")
        assert result.returncode == 125, result.stderr
        assert result.stderr.startswith("droot: cannot "), result.stderr
        assert sorted(os.listdir(host_directory)) == before
    assert host_mounts_below(tmp_path) == []
    assert "root:x:0:0" in through_host_proc(run_root, "/etc/passwd")


def test_a_host_proc_left_mounted_in_the_root_is_not_followed(run_root, host_secret):
    """The second layer: a host /proc already mounted in the root (an older run, or the
    original droot, can leave one), so the magic link exists before droot mounts its own;
    openat2's RESOLVE_NO_MAGICLINKS refuses it."""
    link_to_host(run_root / ".droot.json", host_secret)
    script = ('mount -t proc proc "$1/proc" && exec "$0" run --root "$1" -- /bin/true; '
              'echo unreachable')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                             sys.prefix + "/bin/droot", str(run_root)], capture_output=True,
                            text=True)
    assert result.returncode == 0  # the command given: /.droot.json is not even read
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount -t proc proc "$1/proc" && exec "$0" run --root "$1"',
         sys.prefix + "/bin/droot", str(run_root)], capture_output=True, text=True)
    assert result.returncode == 125 and "host secret" not in result.stdout + result.stderr
    assert result.stderr == ("droot: cannot read the image's /.droot.json: a /proc magic "
                             "link (refused), or a loop of symbolic links\n")
    assert "host secret" in through_host_proc(run_root, "/.droot.json")


def test_dev_as_a_link_is_refused(run_root, tmp_path):
    (run_root / "dev").rmdir()
    (run_root / "dev").symlink_to("/tmp")
    result = droot("run", "--root", run_root, "--", "/bin/true")
    assert result.returncode == 125
    assert result.stderr == ("droot: the image's /dev is not a directory (a symbolic link?): "
                             "droot mounts its own /dev there; remove it from the image\n")
    assert not (run_root / "tmp" / "null").exists()


def test_directories_droot_makes_are_0755(run_root, tmp_path):
    source = tmp_path / "bind-source"
    source.mkdir()
    (run_root / "etc" / "passwd").unlink()
    (run_root / "etc" / "group").unlink()
    (run_root / "etc").rmdir()
    result = droot("run", "--root", run_root, "--cp", "-b", f"{source}:/made/by/droot", "--",
                   "/bin/true")
    assert result.returncode == 0, result.stderr
    for path in ("etc", "made", "made/by", "made/by/droot"):
        assert (run_root / path).stat().st_mode & 0o7777 == 0o755, path


# --- 3. no import from the image after chroot ------------------------------------------

PLANTED = "open('/PWNED', 'w').write('imported from the image')\n"


def plant_modules(root, names):
    """The image's copy of `names` in every directory of droot's module search path."""
    for directory in sys.path:
        if directory.startswith("/") and os.path.isdir(directory):
            inside = root / directory.lstrip("/")
            inside.mkdir(parents=True, exist_ok=True)
            for name in names:
                (inside / f"{name}.py").write_text(PLANTED)


def test_debug_after_chroot_imports_nothing_from_the_image(run_root):
    plant_modules(run_root, ["traceback", "linecache", "tokenize"])
    (run_root / ".droot.json").write_text("{not json")
    result = droot("--debug", "run", "--root", run_root)
    assert result.returncode == 125
    assert "Traceback (most recent call last, source lines omitted after chroot)" in result.stderr
    assert result.stderr.endswith("droot: the image's /.droot.json is not valid: Expecting "
                                  "property name enclosed in double quotes: line 1 column 2 "
                                  "(char 1)\n"), result.stderr
    assert not (run_root / "PWNED").exists()
    # The control: a Python that chroots into this root and imports, as droot did, runs
    # the image's copy.
    control = ("import os, sys; os.chroot(sys.argv[1]); os.chdir('/'); import traceback")
    subprocess.run([sys.executable, "-c", control, str(run_root)], check=True)
    assert (run_root / "PWNED").read_text() == "imported from the image"


def test_exec_into_an_app_that_planted_modules_imports_nothing(run_root):
    """A running app can write its root: `droot exec --debug` into it, failing after
    chroot, must not run what the app planted."""
    script = "echo ready; exec sleep 60"
    app = subprocess.Popen([sys.prefix + "/bin/droot", "run", "--root", str(run_root), "--",
                            "/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline() == "ready\n"
        plant_modules(run_root, ["traceback", "linecache", "tokenize"])
        result = droot("--debug", "exec", "--pid", app.pid, "-u", "no-such-user", "--", "/bin/true")
        assert result.returncode == 125
        assert result.stderr.endswith("droot: exec: unknown user 'no-such-user' in the app's "
                                      "/etc/passwd\n"), result.stderr
        assert "source lines omitted after chroot" in result.stderr
        assert not (run_root / "PWNED").exists()
    finally:
        app.kill()
        app.wait()


def test_a_late_import_fails_instead_of_searching_the_image(run_root, tmp_path):
    """The seal itself: after it, a module not yet loaded is refused, not searched for."""
    plant_modules(run_root, ["colorsys"])
    script = ("import os, sys; from droot.core import importseal; importseal.seal(); "
              "os.chroot(sys.argv[1]); os.chdir('/')\n"
              "try:\n    import colorsys\nexcept ImportError as error:\n    print(error)\n"
              "import xxsubtype")  # built into the interpreter: still importable
    result = subprocess.run([sys.executable, "-c", script, str(run_root)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "droot imports nothing after chroot (wanted colorsys)\n"
    assert not (run_root / "PWNED").exists()


# --- 4. kernel keyrings ----------------------------------------------------------------

def test_keyrings(run_root, attack_binary):
    host = {which: subprocess.run([attack_binary, "keyring-id", which], capture_output=True,
                                  text=True, check=True).stdout for which in ("session", "user")}
    # Denied by the seccomp filter...
    for which in ("session", "user"):
        assert_refused(attack(run_root, "keyring-id", which), "keyctl: Operation not permitted")
    # ...and with the call allowed, the operator's session keyring is not the app's, while
    # root's user keyring is the host's (what the filter keeps out of reach).
    allowed = ["--allow-syscall", "keyctl"]
    inside = {which: attack(run_root, "keyring-id", which, options=allowed).stdout
              for which in ("session", "user")}
    assert inside["session"] != host["session"]
    assert inside["user"] == host["user"]


# --- 5. processes and IPC outside the app ----------------------------------------------

def test_signals_to_host_processes(run_root, host_process_of):
    # Root becomes the process's uid, then signals it: Landlock's signal scope refuses.
    assert_refused(attack(run_root, "kill-as", 4321, host_process_of.pid),
                   "kill: Operation not permitted")
    assert_worked(attack(run_root, "kill-as", 4321, host_process_of.pid,
                         options=["--share", "signals"]), "SIGNALLED")


def test_other_processes_proc_files(run_root, host_process_of):
    path = f"/proc/{host_process_of.pid}/oom_score_adj"
    assert_refused(attack(run_root, "open-write", path), "No such file or directory")
    assert_worked(attack(run_root, "open-write", path, options=["--share", "proc"]),
                  "WRITABLE")


def test_host_abstract_sockets(run_root):
    name = f"droot-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0" + name)
        server.listen(4)
        assert_refused(attack(run_root, "abstract-connect", name),
                       "connect: Operation not permitted")
        assert_worked(attack(run_root, "abstract-connect", name,
                             options=["--share", "abstract-sockets"]), "CONNECTED")


def test_host_shared_memory(run_root, attack_binary):
    key = 0x0D5000 + os.getpid() % 4096
    made = subprocess.run([attack_binary, "shm-make", str(key), "host secret"],
                          capture_output=True, text=True, check=True)
    segment = made.stdout.strip()
    try:
        assert_refused(attack(run_root, "shm-read", segment), "shmat: Invalid argument")
        assert_worked(attack(run_root, "shm-read", segment, options=["--share", "ipc"]),
                      "host secret")
    finally:
        subprocess.run(["ipcrm", "-m", segment], check=True)


# --- 6. the kernel's risky system calls -------------------------------------------------

@pytest.mark.parametrize("call", ["io_uring_setup", "perf_event_open", "userfaultfd", "bpf",
                                  "add_key", "request_key", "name_to_handle_at", "setns",
                                  "unshare", "clone3"])
def test_risky_system_calls_are_denied(run_root, call):
    refusal = "Function not implemented" if call == "clone3" else "Operation not permitted"
    assert_refused(attack(run_root, "syscall-probe", call), f"{call}: {refusal}")
    result = attack(run_root, "syscall-probe", call, options=["--allow-syscall", call])
    assert result.returncode == 0 and result.stdout.startswith("REACHED"), result.stdout


def test_capability_gates_and_unknown_calls(run_root):
    assert_refused(attack(run_root, "syscall-probe", "unshare"), "Operation not permitted")
    # Keeping SYS_ADMIN lets the mount and namespace calls through, as in Docker.
    result = attack(run_root, "syscall-probe", "unshare", options=["--cap-add", "SYS_ADMIN"])
    assert result.stdout == "REACHED ok\n", result.stdout
    result = droot("run", "--root", run_root, "--allow-syscall", "no_such_call", "--", "/bin/true")
    assert result.returncode == 125 and "--allow-syscall 'no_such_call'" in result.stderr


def test_the_filter_is_installed(run_root):
    result = droot("run", "--root", run_root, "--", "/bin/grep", "^Seccomp:", "/proc/self/status")
    assert result.stdout.split() == ["Seccomp:", "2"]


# --- what the image holds at a path, not only where it leads ---------------------------

def test_device_nodes_in_the_image_open_nothing(run_root):
    """An archive may carry a device node (the host's disk, say): the root is mounted
    nodev in the app's namespace, while droot's own /dev works."""
    os.mknod(run_root / "random-device", 0o20666, os.makedev(1, 9))
    result = droot("run", "--root", run_root, "--", "/bin/sh", "-c",
                   "head -c 4 /random-device | wc -c; head -c 4 /dev/urandom | wc -c")
    assert "/random-device: Permission denied" in result.stderr
    assert result.stdout.split() == ["0", "4"]
    control = subprocess.run(["chroot", run_root, "/bin/sh", "-c",
                              "head -c 4 /random-device | wc -c"], capture_output=True, text=True)
    assert control.stdout.split() == ["4"], control.stderr



def test_device_nodes_on_a_mount_below_the_root_open_nothing(run_root, tmp_path):
    """A mount below the root (the operator's, or one an older run left) is a mount of
    its own: it is made nodev too."""
    below = tmp_path / "mounted-below"
    below.mkdir()
    os.mknod(below / "random-device", 0o20666, os.makedev(1, 9))
    (run_root / "data").mkdir()
    read = "head -c 4 /data/random-device | wc -c"
    script = ('mount --bind "$2" "$1/data" && '
              'exec "$0" run --root "$1" -- /bin/sh -c "$3"')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                             sys.prefix + "/bin/droot", str(run_root), str(below), read],
                            capture_output=True, text=True)
    assert "/data/random-device: Permission denied" in result.stderr
    assert result.stdout.split() == ["0"]
    control = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              'mount --bind "$1" "$0/data" && exec chroot "$0" /bin/sh -c "$2"',
                              str(run_root), str(below), read], capture_output=True, text=True)
    assert control.stdout.split() == ["4"], control.stderr


def test_a_fifo_or_device_as_an_image_file_is_refused_not_read(run_root):
    """A FIFO would block droot (still root, before any capability is dropped); a device
    would feed it anything, endlessly for /dev/zero."""
    os.mkfifo(run_root / ".drootenv")
    result = droot("run", "--root", run_root, "--", "/bin/true", timeout=60)
    assert result.returncode == 125
    assert result.stderr == "droot: cannot read the image's /.drootenv: not a regular file\n"
    (run_root / ".drootenv").unlink()
    (run_root / "etc" / "passwd").unlink()
    (run_root / "etc" / "passwd").symlink_to("/dev/zero")
    os.mknod(run_root / "dev" / "zero", 0o20666, os.makedev(1, 5))  # the image's own
    result = droot("run", "--root", run_root, "-u", "app", "--", "/bin/true", timeout=60)
    assert result.returncode == 125  # the image's devices are inert: refused at the open
    assert result.stderr == "droot: cannot read the image's /etc/passwd: Permission denied\n"


def test_ps_reads_the_apps_passwd_inside_its_root(run_root, tmp_path):
    decoy = tmp_path / "host-passwd"
    decoy.write_text("HOST-DECOY-SECRET:x:0:0::/:/bin/sh\n")
    script = f"ln -sf {decoy} /etc/passwd && echo ready && exec sleep 60"
    app = subprocess.Popen([sys.prefix + "/bin/droot", "run", "--root", str(run_root), "--",
                            "/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline() == "ready\n"
        listing = droot("ps")
        assert listing.returncode == 0, listing.stderr
        assert str(run_root) in listing.stdout
        assert "HOST-DECOY-SECRET" not in listing.stdout
        # the control: the same name opened on the host leads to the decoy
        assert "HOST-DECOY-SECRET" in (run_root / "etc" / "passwd").read_text()
    finally:
        app.kill()
        app.wait()


def test_stdio_is_reopened_only_as_it_was_given(run_root, tmp_path):
    """Landlock lets the app reopen its stdin, stdout and stderr, which may be host files:
    only for what each descriptor was opened for."""
    given = tmp_path / "host-config"
    given.write_text("host config\n")
    log = tmp_path / "host-log"
    log.write_text("earlier secret line\n")
    write_input = ["/bin/sh", "-c", "echo overwritten > /proc/self/fd/0"]
    read_output = ["/bin/sh", "-c", "exec 3</proc/self/fd/1 && cat <&3 >&2"]
    with open(given) as stdin:
        result = droot("run", "--root", run_root, "--", *write_input, stdin=stdin)
    assert "Permission denied" in result.stderr and given.read_text() == "host config\n"
    with open(log, "a") as stdout:
        result = droot("run", "--root", run_root, "--", *read_output, stdout=stdout,
                       stderr=subprocess.PIPE, capture_output=False, timeout=60)
    assert "Permission denied" in result.stderr and "secret" not in result.stderr
    # writing where it was given to write still works, through /dev/stdout too
    with open(log, "a") as stdout:
        result = droot("run", "--root", run_root, "--", "/bin/sh", "-c",
                       "echo appended >> /dev/stdout", stdout=stdout,
                       stderr=subprocess.PIPE, capture_output=False)
    assert result.returncode == 0 and log.read_text().endswith("appended\n")
    # the control: the same shell on the host reopens them as it likes
    with open(given) as stdin:
        subprocess.run([run_root / "bin" / "busybox", *write_input], stdin=stdin, check=True)
    assert given.read_text() == "overwritten\n"


def test_the_pid_init_cannot_be_taken_over(run_root):
    """Under --pid the init (PID 1) shares the app's uid, capabilities and Landlock
    domain, but is not dumpable: no ptrace, no pidfd_getfd of its pipe to the relay."""
    assert_refused(attack(run_root, "ptrace", 1, options=["--pid"]),
                   "ptrace: Operation not permitted")
    assert_worked(attack(run_root, "ptrace", 1, options=["--pid", "--no-dropcaps"]),
                  "ATTACHED")
