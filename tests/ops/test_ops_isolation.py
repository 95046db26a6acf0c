"""The namespaces, observed from the kernel's side: the opt-in --pid, --net none and
--hostname, the default that shares those with the host (as the original did), and the
IPC namespace, private unless --share ipc."""

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import PseudoTerminal
from tests.ops.conftest import fresh_root, run_app, start_app, stop_app, wait_until


@pytest.fixture
def root(tmp_path):
    return fresh_root(tmp_path)


def namespace_ids(root, options=()):
    script = "for n in pid net uts ipc; do echo $n $(readlink /proc/self/ns/$n); done"
    result = run_app(root, options, ["/bin/sh", "-c", script])
    assert result.returncode == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())


def host_namespace_ids():
    return {n: os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "net", "uts", "ipc")}


def test_default_shares_every_namespace_but_ipc_with_the_host(root):
    inside, host = namespace_ids(root), host_namespace_ids()
    assert {n for n in host if inside[n] != host[n]} == {"ipc"}
    assert namespace_ids(root, ["--share", "ipc"]) == host


@pytest.mark.parametrize("options, changed", [
    (["--pid"], {"pid", "ipc"}),
    (["--net", "none"], {"net", "ipc"}),
    (["--hostname", "box"], {"uts", "ipc"}),
    (["--ipc"], {"ipc"}),
    (["--pid", "--share", "ipc"], {"pid"}),
    (["--pid", "--net", "none", "--hostname", "box", "--ipc"], {"pid", "net", "uts", "ipc"}),
])
def test_each_option_unshares_exactly_its_namespace(root, options, changed):
    inside, host = namespace_ids(root, options), host_namespace_ids()
    assert {n for n in host if inside[n] != host[n]} == changed


@pytest.mark.parametrize("options, first", [([], 2), (["--share", "proc"], 1)])
def test_pid_namespace_proc_shows_only_the_app(root, options, first):
    result = run_app(root, ["--pid", *options], ["/bin/sh", "-c", "echo $$; ls /proc"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    pids = sorted(int(name) for name in lines[1:] if name.isdigit())
    # The shell (2) and `ls`; the init (1) too when /proc lists what the app may not
    # ptrace (it is not dumpable): nothing of the host's processes, which number in the
    # hundreds.
    assert pids[0] == first and len(pids) <= 3 and max(pids) < 10, pids
    assert int(lines[0]) in pids


def test_pid_exit_status_is_the_apps(root):
    assert run_app(root, ["--pid"], ["/bin/sh", "-c", "exit 7"]).returncode == 7
    # Killed by a signal: droot dies of the same signal, as the app would have.
    result = run_app(root, ["--pid"], ["/bin/sh", "-c", "kill -TERM $$"])
    assert result.returncode == -signal.SIGTERM


def test_pid_forwards_signals_to_the_app(root):
    script = 'trap "echo got TERM; exit 3" TERM; echo ready; while :; do sleep 0.1; done'
    app = start_app(root, ["--pid"], ["/bin/sh", "-c", script])
    try:
        assert app.stdout.readline() == "ready\n"
        app.send_signal(signal.SIGTERM)  # to the process the supervisor started
        out, _ = app.communicate(timeout=30)
        assert "got TERM" in out
        assert app.returncode == 3
    finally:
        stop_app(app)


def test_pid_init_reaps_orphans(root):
    # The subshell exits at once, orphaning `sleep`: the init must reap it when it ends.
    script = "(sleep 0.2 &); sleep 1; ps -o pid,stat,comm"
    result = run_app(root, ["--pid"], ["/bin/sh", "-c", script])
    assert result.returncode == 0, result.stderr
    states = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert states and not any(state.startswith("Z") for state in states), result.stdout


def test_net_none_has_only_loopback_and_it_is_up(root):
    script = "cat /proc/net/dev; ip -o link show lo"
    result = run_app(root, ["--net", "none"], ["/bin/sh", "-c", script])
    assert result.returncode == 0, result.stderr
    dev_lines = result.stdout.splitlines()[2:-1]  # /proc/net/dev after its two headers
    assert [line.split(":")[0].strip() for line in dev_lines] == ["lo"]
    assert ",UP" in result.stdout.splitlines()[-1]


def test_net_none_cannot_reach_the_host(root):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer():  # accept and hang up, so that nc ends
            while True:
                try:
                    connection, _ = server.accept()
                except OSError:
                    return
                connection.close()
        threading.Thread(target=answer, daemon=True).start()
        connect = ["/bin/sh", "-c", f"echo hi | nc 127.0.0.1 {port} && echo connected"]
        # Shared network (the default): the host's port answers, so the test can fail...
        assert "connected" in run_app(root, [], connect).stdout
        # ...and with --net none it does not.
        result = run_app(root, ["--net", "none"], connect)
        assert "connected" not in result.stdout


def test_hostname_is_set_inside_only(root):
    host_name = socket.gethostname()
    result = run_app(root, ["--hostname", "droot-box"], ["/bin/hostname"])
    assert result.stdout.strip() == "droot-box"
    assert socket.gethostname() == host_name


def test_ipc_namespace_hides_host_semaphores(root):
    # A System V semaphore made on the host is visible with --share ipc, and not by
    # default (nor with the older --ipc).
    key = 0x0D5007 + os.getpid() % 1000
    made = subprocess.run([sys.executable, "-c", "import ctypes;l=ctypes.CDLL(None);"
                           f"print(l.semget({key}, 1, 0o1600))"],
                          capture_output=True, text=True, check=True)
    semid = int(made.stdout)
    assert semid >= 0
    try:
        script = ["/bin/sh", "-c", "cat /proc/sysvipc/sem"]

        def keys(options):
            output = run_app(root, options, script).stdout
            return [line.split()[0] for line in output.splitlines()[1:]]
        assert str(key) in keys(["--share", "ipc"])
        assert str(key) not in keys([])
        assert str(key) not in keys(["--ipc"])
    finally:
        subprocess.run(["ipcrm", "-s", str(semid)], check=False)


def test_pid_namespace_dies_with_a_killed_relay(root):
    app = start_app(root, ["--pid"], ["/bin/sh", "-c", "echo ready; exec sleep 60"])
    try:
        assert app.stdout.readline() == "ready\n"
        children = wait_until(lambda: open(f"/proc/{app.pid}/task/{app.pid}/children")
                              .read().split(), "the init")
        init = int(children[0])
        app.send_signal(signal.SIGKILL)  # no chance to forward anything
        app.wait(timeout=30)
        wait_until(lambda: not os.path.exists(f"/proc/{init}"), "the init to die too")
        app.communicate(timeout=30)  # and every process holding the pipes is gone
    finally:
        stop_app(app)


def test_pid_ctrl_c_reaches_the_app_once(root):
    # Ctrl-C on a terminal signals the whole foreground process group: relay, init and app.
    # The app must get it once, not once more through each forwarder.
    script = ("n=0; trap 'n=$((n+1))' INT; echo ready >&2; "
              "while [ $n -eq 0 ]; do sleep 0.1; done; sleep 1; echo interrupts $n >&2")
    with PseudoTerminal() as tty:
        app = start_app(root, ["--pid"], ["/bin/sh", "-c", script], stdin=tty.terminal,
                        preexec_fn=PseudoTerminal.take_as_controlling)
        try:
            assert app.stderr.readline() == "ready\n"
            os.write(tty.controller, b"\x03")
            _, err = app.communicate(timeout=30)
            assert err.strip() == "interrupts 1"
        finally:
            stop_app(app)
