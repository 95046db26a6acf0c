"""A `droot exec` session is sandboxed like the app it enters: an image's program run in
an interactive session cannot push input into the operator's terminal (TIOCSTI), nor keep
it; nothing the app made leads the session out of the root; `droot ps` shows what the app
wrote, not sends it."""

import fcntl
import json
import os
import select
import shlex
import struct
import subprocess
import termios
import time

from tests.conftest import DROOT, PseudoTerminal, run_with_controlling_terminal
from tests.ops.conftest import remove_cgroups, start_app, stop_app, wait_until


def test_exec_session_cannot_inject_into_the_terminal(run_root):
    # The same program injects when run by plain chroot (this kernel allows TIOCSTI on
    # one's own terminal), so the refusal below is droot's doing.
    plain = run_with_controlling_terminal(["chroot", str(run_root), "/attack", "tiocsti"])
    assert plain.stdout.strip() == "INJECTED"
    app = start_app(run_root, ["--no-dropcaps"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        result = run_with_controlling_terminal(
            [DROOT, "exec", "--pid", str(app.pid), "--", "/attack", "tiocsti"])
        assert result.returncode == 1
        assert "TIOCSTI: Operation not permitted" in result.stdout
    finally:
        stop_app(app)


def test_exec_workdir_through_a_magic_link_stays_in_the_root(run_root):
    """`-w DIR` is entered as the app's user, confined, as `droot run` enters its own: the
    app's link to /proc/PID/root of a host process (which droot, root with every
    capability and no Landlock yet, could follow) is refused, not a working directory on
    the host for the app's program."""
    host = subprocess.Popen(["sleep", "60"])
    app = start_app(run_root, command=["/bin/sh", "-c", f"ln -s /proc/{host.pid}/root /work; "
                                       "exec sleep 60"])
    try:
        wait_until(lambda: os.path.islink(run_root / "work"), "the app's link")
        result = subprocess.run([DROOT, "exec", "--pid", str(app.pid), "-w", "/work", "--",
                                 "/bin/sh", "-c", "readlink /proc/self/cwd"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 125, result.stdout
        assert "cannot enter the working directory /work" in result.stderr
    finally:
        stop_app(app)
        host.kill()
        host.wait()


def test_exec_into_an_app_given_sys_admin_is_under_landlock_as_the_app(run_root):
    """An app run with `--cap-add SYS_ADMIN` keeps Landlock, which refuses it every mount
    (a fresh /proc would give it the host's sysctls); the command is not `--no-dropcaps`'."""
    app = start_app(run_root, ["--cap-add", "SYS_ADMIN"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        result = subprocess.run([DROOT, "exec", "--pid", str(app.pid), "--",
                                 "/attack", "mount-tmpfs", "/tmp"],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (1, "mount: Operation not permitted\n")
    finally:
        stop_app(app)


def test_a_process_that_left_the_root_is_no_app(run_root):
    """With --cap-add SYS_CHROOT the app may leave its root for a directory of the host
    (Landlock still confines it there) and stays in its droot cgroup: neither `droot ps`
    nor `droot exec` takes that directory for the app's root (exec would have given the
    session a Landlock domain over it: the host's files beside the root, writable)."""
    outside = run_root.parent
    app = start_app(run_root, ["--cap-add", "SYS_CHROOT", "--pids-limit", "50"],
                    ["/attack", "leave-into", str(outside), f"/{run_root.name}/bin/sleep", "60"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(outside), "the escape")
        result = subprocess.run([DROOT, "exec", "--pid", str(app.pid), "--",
                                 f"/{run_root.name}/bin/true"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "is not a droot app" in result.stderr
        listed = json.loads(subprocess.run([DROOT, "ps", "--json"], capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        assert not any(entry["app_pid"] == app.pid for entry in listed)
    finally:
        stop_app(app)
        remove_cgroups(run_root)


def test_ps_escapes_control_characters_of_the_apps_user_name(run_root):
    """USER comes from the app's /etc/passwd: an escape sequence there (OSC 52 writes the
    operator's clipboard, CSI erases the app's line) is shown escaped, never sent."""
    name = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2K\x1b[1G[hidden]"
    with open(run_root / "etc" / "passwd", "a", encoding="utf-8") as passwd:
        passwd.write(f"{name}:x:4321:4321::/:/bin/sh\n")
    app = start_app(run_root, ["-u", "4321"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        listed = subprocess.run([DROOT, "ps"], capture_output=True, text=True, timeout=60,
                                check=True).stdout
    finally:
        stop_app(app)
    row = next(line for line in listed.splitlines() if str(run_root) in line)
    assert "\x1b" not in listed and "\x07" not in listed, listed
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07\\x1b[2K\\x1b[1G[hidden]" in row, row


def typed_until(tty, marker: bytes, timeout: float = 30) -> bytes:
    """What the terminal showed, read until `marker`."""
    shown, deadline = b"", time.monotonic() + timeout
    while marker not in shown and time.monotonic() < deadline:
        if select.select([tty.controller], [], [], 0.1)[0]:
            try:
                shown += os.read(tty.controller, 4096)
            except OSError:
                break
    assert marker in shown, shown
    return shown


def test_a_process_left_by_an_exec_session_cannot_read_the_operators_terminal(run_root):
    """The command is the app's program: it may leave a process holding its terminal. On
    the operator's own, that process would read what is typed at the host's shell once
    droot returns; the command gets a pseudo-terminal of its own, closed then."""
    app = start_app(run_root)
    leave = ("exec 3<&0; setsid sh -c 'sleep 1; head -c 6 >/tmp/typed' <&3 >/dev/null 2>&1 & "
             "sleep 0.5")
    session = shlex.join([DROOT, "exec", "--pid", str(app.pid), "--", "/bin/sh", "-c", leave])
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        with PseudoTerminal() as tty:  # the operator's login shell runs droot exec
            shell = subprocess.Popen(["sh", "-c", f"{session}; echo EXEC-ENDED; sleep 5"],
                                     stdin=tty.terminal, stdout=tty.terminal,
                                     stderr=tty.terminal,
                                     preexec_fn=PseudoTerminal.take_as_controlling)
            typed_until(tty, b"EXEC-ENDED")
            wait_until(lambda: (run_root / "tmp" / "typed").exists(), "the reader left behind")
            os.write(tty.controller, b"secret\n")  # at the host's shell, after droot exec
            time.sleep(1)
            assert (run_root / "tmp" / "typed").read_bytes() == b""
            shell.kill()
            shell.wait()
    finally:
        stop_app(app)


def test_an_exec_session_on_a_terminal_is_interactive(run_root):
    """Through the pseudo-terminal: what is typed, the window size, the exit status."""
    app = start_app(run_root)
    try:
        wait_until(lambda: os.readlink(f"/proc/{app.pid}/root") == str(run_root), "the app")
        with PseudoTerminal() as tty:
            fcntl.ioctl(tty.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
            session = subprocess.Popen(
                [DROOT, "exec", "--pid", str(app.pid), "--", "/bin/sh", "-c",
                 "stty size; read line; echo got=$line; exit 3"],
                stdin=tty.terminal, stdout=tty.terminal, stderr=tty.terminal,
                preexec_fn=PseudoTerminal.take_as_controlling)
            typed_until(tty, b"33 101")
            os.write(tty.controller, b"hello\n")
            typed_until(tty, b"got=hello")
            assert session.wait(timeout=60) == 3
    finally:
        stop_app(app)
