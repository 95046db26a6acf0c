"""`droot run` under supervisors that pass sockets: Server::Starter's start_server
(`--preserve-fds`), systemd's socket activation (LISTEN_FDS), each a real program from
Debian; the app is tests/run/supervised.c, answering on the socket from inside the root."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import DROOT, free_port


def ask(port: int, process: subprocess.Popen, log) -> dict[str, str]:
    """The app's one-line answer on `port` as a dict, retried until the supervisor has
    started listening (a readiness wait, not a measurement)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the supervisor exited: {log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                answer = connection.makefile().readline()
            if answer:
                return dict(word.split("=", 1) for word in answer.split())
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered on port {port}: {log.read_text()}")


def wait_for_line(log, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text():
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.1)


def supervise(command: list, log):
    """Start a supervisor in a process group of its own, output to `log`."""
    with open(log, "w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """The supervisor and whatever it started (its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def start_server(port: int, run_options: list, root) -> list:
    """Server::Starter holding 127.0.0.1:port on descriptor 3 and running droot as its
    worker."""
    if not shutil.which("start_server"):
        pytest.fail("these tests need Server::Starter: apt-get install libserver-starter-perl")
    return ["start_server", f"--port=127.0.0.1:{port}=3", "--", DROOT, "run", "--root",
            str(root), *run_options, "--", "/supervised", "serve", "3"]


def test_server_starter_socket_reaches_the_app(app_root, tmp_path):
    port, log = free_port(), tmp_path / "start_server.log"
    process = supervise(start_server(port, ["--preserve-fds", "1"], app_root), log)
    try:
        answer = ask(port, process, log)
    finally:
        stop(process)
    # answered from inside the root (only the root has /release), by a worker of its own,
    # which was told what the supervisor passed
    assert answer["release"] == "inside-the-root"
    assert int(answer["pid"]) != process.pid
    assert answer["SERVER_STARTER_PORT"] == f"127.0.0.1:{port}=3"
    assert answer["SERVER_STARTER_GENERATION"] == "1"


def test_without_preserve_fds_the_socket_does_not_reach_the_app(app_root, tmp_path):
    """The control: droot closes what it was not told to keep, and the app cannot accept."""
    port, log = free_port(), tmp_path / "start_server.log"
    process = supervise(start_server(port, [], app_root), log)
    try:
        wait_for_line(log, "accept on fd 3: Bad file descriptor", process)
    finally:
        stop(process)


def test_systemd_socket_activation_reaches_the_app(app_root, tmp_path):
    """systemd-socket-activate (runs without systemd as PID 1) passes the socket the
    LISTEN_FDS way, with LISTEN_PID its child's PID: droot's, which the app keeps."""
    port, log = free_port(), tmp_path / "socket-activate.log"
    process = supervise(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", DROOT, "run",
                         "--root", str(app_root), "--", "/supervised", "serve", "3"], log)
    try:
        answer = ask(port, process, log)
    finally:
        stop(process)
    assert answer["release"] == "inside-the-root"
    assert answer["LISTEN_FDS"] == "1"
    assert answer["SERVER_STARTER_PORT"] == "-"  # nothing of --preserve-fds without it


def preserved(run_root, tmp_path, options, environment):
    """The descriptors and variables the app gets when fds 3 and 4 are open files."""
    (tmp_path / "f").write_text("x")
    script = f'exec 3<{tmp_path}/f 4<{tmp_path}/f; exec {DROOT} run --root {run_root} ' \
             f'{options} -- /bin/sh -c "/attack fds; env"'
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                            env={**os.environ, **environment}, timeout=120)
    assert result.returncode == 0, result.stderr
    descriptors, *variables = result.stdout.splitlines()
    return descriptors.split(), dict(line.split("=", 1) for line in variables if "=" in line)


def test_preserve_fds_keeps_exactly_those_and_their_variables(run_root, tmp_path):
    environment = {"SERVER_STARTER_PORT": "0.0.0.0:80=3", "SERVER_STARTER_GENERATION": "4",
                   "EINHORN_FD_COUNT": "1", "EINHORN_FD_0": "3", "EINHORN_MASTER_PID": "1",
                   "EINHORN_SOCK_PATH": "/host/einhorn.sock", "EINHORN_FD_X": "no",
                   "UNRELATED_HOST_VARIABLE": "no"}
    descriptors, variables = preserved(run_root, tmp_path, "--preserve-fds 1", environment)
    assert descriptors == ["0", "1", "2", "3"]  # 4 was open too, and was not asked for
    for name in ("SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION", "EINHORN_FD_COUNT",
                 "EINHORN_FD_0", "EINHORN_MASTER_PID"):
        assert variables[name] == environment[name]
    for name in ("EINHORN_SOCK_PATH", "EINHORN_FD_X", "UNRELATED_HOST_VARIABLE"):
        assert name not in variables
    descriptors, variables = preserved(run_root, tmp_path, "--preserve-fds 2", environment)
    assert descriptors == ["0", "1", "2", "3", "4"]
    # without the option: neither the descriptors nor the variables
    descriptors, variables = preserved(run_root, tmp_path, "", environment)
    assert descriptors == ["0", "1", "2"]
    assert not {name for name in variables if name.startswith(("SERVER_STARTER", "EINHORN"))}
    descriptors, variables = preserved(run_root, tmp_path, "--preserve-fds 0", environment)
    assert descriptors == ["0", "1", "2"] and "SERVER_STARTER_PORT" not in variables


@pytest.mark.parametrize("value, message", [
    ("2", "--preserve-fds 2: descriptor 4 is not open"),
    ("-1", "--preserve-fds '-1': give a number of descriptors"),
    ("1.5", "--preserve-fds '1.5': give a number of descriptors"),
    ("x", "--preserve-fds 'x': give a number of descriptors"),
])
@pytest.mark.parametrize("bind", [False, True])
def test_bad_preserve_fds_is_one_line(run_root, tmp_path, value, message, bind):
    """Also with a bind, whose source droot opens early: a descriptor of droot's own must
    never count as one the supervisor passed."""
    (tmp_path / "f").write_text("x")
    binds = f"-b {tmp_path}:/mnt" if bind else ""
    result = subprocess.run(
        ["/bin/sh", "-c", f'exec 3<{tmp_path}/f; exec {DROOT} run --root {run_root} {binds} '
         f'--preserve-fds={value} -- /bin/true'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_preserved_host_directory_opens_nothing(run_root, tmp_path):
    """What --preserve-fds passes is the operator's choice, but Landlock still stands: a
    host directory passed as fd 3 lets the app look names up, not open what they name."""
    (tmp_path / "host-only").mkdir()
    (tmp_path / "host-only" / "secret").write_text("host secret\n")

    def read_through_fd(*options):
        script = f'exec 3<{tmp_path}/host-only; exec {DROOT} run --root {run_root} ' \
                 f'--preserve-fds 1 {" ".join(options)} -- /bin/cat /proc/self/fd/3/secret'
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              timeout=120)

    result = read_through_fd()
    assert result.returncode == 1 and "Permission denied" in result.stderr, result
    # the control: without the sandbox the same descriptor reads the host's file
    result = read_through_fd("--no-dropcaps")
    assert (result.returncode, result.stdout) == (0, "host secret\n"), result.stderr
