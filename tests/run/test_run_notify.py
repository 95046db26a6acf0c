"""NOTIFY_SOCKET reaches the app inside the root: the test is the supervisor's receiving
end (a datagram socket with SO_PASSCRED, as systemd's), the app (tests/run/supervised.c)
sends READY=1 the way sd_notify(3) does, and the kernel stamps the sender's PID, which
must be the one the supervisor started (NotifyAccess=main)."""

import os
import socket
import struct
import subprocess
import uuid

import pytest

from tests.conftest import DROOT


@pytest.fixture
def receiver(tmp_path):
    """A notification socket in the test's directory (srwxrwxrwx, like systemd's), with a
    host file beside it that the app must not see."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    path.chmod(0o777)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.setblocking(False)
    (tmp_path / "beside-the-socket").write_text("host file")
    yield sock, str(path)
    sock.close()


def received(sock) -> tuple[bytes, tuple[int, int, int]] | None:
    """The datagram waiting (the app has exited, so it is there if it was sent) and its
    sender's pid, uid, gid; None when nothing was sent."""
    try:
        data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    except BlockingIOError:
        return None
    credentials = [struct.unpack("iII", payload) for level, kind, payload in ancillary
                   if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)]
    return data, credentials[0]


def run_app(root, command, notify_socket=None, options=()):
    env = {name: value for name, value in os.environ.items() if name != "NOTIFY_SOCKET"}
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = notify_socket
    process = subprocess.Popen([DROOT, "run", "--root", str(root), *options, "--", *command],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    out, err = process.communicate(timeout=120)
    return process, out, err


def test_ready_reaches_the_supervisor_from_the_app_pid(app_root, receiver):
    sock, path = receiver
    process, out, err = run_app(app_root, ["/supervised", "notify", "READY=1"], path,
                                ["-u", "app"])
    assert process.returncode == 0, err
    assert out == f"sent to /run/droot-notify/notify from pid {process.pid}\n"
    data, (pid, uid, gid) = received(sock)
    # the PID the supervisor started is the app's: NotifyAccess=main accepts it
    assert (data, pid, uid, gid) == (b"READY=1", process.pid, 1000, 1000)


def test_only_the_socket_is_in_the_root_and_read_only(app_root, receiver):
    sock, path = receiver
    script = ("ls /run/droot-notify; echo $NOTIFY_SOCKET; "
              "grep -c droot-notify /proc/self/mountinfo; "
              "rm /run/droot-notify/notify || echo kept")
    process, out, err = run_app(app_root, ["/bin/sh", "-c", script], path)
    # not the socket's directory (beside-the-socket stays out), not removable
    assert out.split() == ["notify", "/run/droot-notify/notify", "1", "kept"], err
    assert os.path.exists(path)


def test_controls_nothing_arrives_unset_or_unbound(app_root, receiver, tmp_path):
    sock, path = receiver
    process, out, _ = run_app(app_root, ["/supervised", "notify", "READY=1"])
    assert process.returncode == 3 and out == "NOTIFY_SOCKET unset\n"
    # The host's path as such (-e passes it untouched when the host has none) is not in the
    # root: what passing the variable without the bind would do.
    process, _, err = run_app(app_root, ["/supervised", "notify", "READY=1"],
                              options=["-e", f"NOTIFY_SOCKET={path}"])
    assert process.returncode == 1 and "No such file or directory" in err
    assert received(sock) is None


@pytest.fixture
def abstract_receiver():
    name = f"droot-test-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.setblocking(False)
    yield sock, "@" + name
    sock.close()


def test_abstract_address_refused_in_the_sandbox_or_shared(app_root, abstract_receiver):
    sock, address = abstract_receiver
    process, out, err = run_app(app_root, ["/supervised", "notify", "READY=1"], address)
    assert process.returncode == 125 and out == ""
    assert err.count("\n") == 1 and "--share abstract-sockets" in err
    # why: the sandbox does stop the app (-e passes the address untouched)
    process, _, err = run_app(app_root, ["/supervised", "notify", "READY=1"],
                              options=["-e", f"NOTIFY_SOCKET={address}"])
    assert process.returncode == 1 and "Operation not permitted" in err
    assert received(sock) is None
    # with the scope lifted, it arrives
    process, _, err = run_app(app_root, ["/supervised", "notify", "READY=1"], address,
                              ["--share", "abstract-sockets"])
    assert process.returncode == 0, err
    data, (pid, _, _) = received(sock)
    assert (data, pid) == (b"READY=1", process.pid)
    # another network namespace has none of the host's abstract sockets
    process, _, err = run_app(app_root, ["/bin/true"], address,
                              ["--share", "abstract-sockets", "--net", "none"])
    assert process.returncode == 125 and "--net none" in err and err.count("\n") == 1


@pytest.mark.parametrize("value, message", [
    ("relative/notify", "is neither a socket path nor an abstract address"),
    ("/nonexistent/notify", "NOTIFY_SOCKET=/nonexistent/notify: No such file or directory"),
    ("/etc/passwd", "NOTIFY_SOCKET=/etc/passwd is not a socket"),
])
def test_bad_notify_socket_is_one_line(app_root, value, message):
    process, out, err = run_app(app_root, ["/bin/true"], value)
    assert process.returncode == 125 and out == ""
    assert err.count("\n") == 1 and message in err, err
