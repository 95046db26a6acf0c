"""`--restart pidfile:PATH`: droot (root) signals the process the file names, so the file
must be one the app cannot write (in-process, with a real child process as the target)."""

import os
import signal
import stat
import subprocess

import pytest

from droot.core.errors import DrootError
from tests.conftest import OpenWatch
from droot.deploy.restart import Failed, PidfileSignal, parse_restart


@pytest.fixture
def supervisor():
    """A process of root's, as a supervisor is."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def pidfile(tmp_path, pid, mode=0o644, owner=0):
    path = tmp_path / "app.pid"
    path.write_text(f"{pid}\n")
    os.chmod(path, mode)
    os.chown(path, owner, owner)
    return PidfileSignal(str(path), signal.SIGHUP)


def test_a_root_owned_pid_file_names_the_supervisor(tmp_path, supervisor):
    assert pidfile(tmp_path, supervisor).pid() == supervisor


@pytest.mark.parametrize("mode", [0o666, 0o664])
def test_a_pid_file_others_can_write_is_refused(tmp_path, supervisor, mode):
    with pytest.raises(Failed, match="writable by group or others"):
        pidfile(tmp_path, supervisor, mode=mode).pid()


def test_an_app_owned_pid_file_cannot_name_a_root_process(tmp_path, supervisor):
    """An app (uid 1000) writing its release's pid file must not pick droot's target."""
    with pytest.raises(Failed, match="belongs to uid 1000, which does not own process"):
        pidfile(tmp_path, supervisor, owner=1000).pid()


def test_a_pid_file_owned_by_the_process_owner_is_taken(tmp_path):
    """A supervisor running as an unprivileged user writes its own pid file."""
    process = subprocess.Popen(["sleep", "60"], user=1000)
    try:
        assert pidfile(tmp_path, process.pid, owner=1000).pid() == process.pid
    finally:
        process.kill()
        process.wait()


def test_a_symlinked_pid_file_is_refused(tmp_path, supervisor):
    target = pidfile(tmp_path, supervisor).path
    link = tmp_path / "link.pid"
    os.symlink(target, link)
    with pytest.raises(Failed, match="cannot read the pid file"):
        PidfileSignal(str(link), signal.SIGHUP).pid()


class _Layout:
    """The two paths preflight reads of a deploy's Layout."""

    def __init__(self, root, releases_dir):
        self.root, self.releases_dir = root, releases_dir


def app_layout(tmp_path):
    """ROOT -> ROOT.releases/r1, as deploy makes it; the app (root) writes in r1."""
    release = tmp_path / "app.releases" / "r1"
    release.mkdir(parents=True)
    os.symlink(release, tmp_path / "app")
    return _Layout(tmp_path / "app", tmp_path / "app.releases"), release


def test_a_pid_file_in_the_app_s_release_is_refused(tmp_path, supervisor):
    """The app runs as root: a root-owned 0644 file it writes passes the owner checks."""
    layout, release = app_layout(tmp_path)
    (release / "run").mkdir()
    (release / "run" / "app.pid").write_text(f"{supervisor}\n")
    for path in (tmp_path / "app" / "run" / "app.pid", release / "run" / "app.pid"):
        watched = PidfileSignal(str(path), signal.SIGHUP)
        assert watched.pid() == supervisor  # the control: no layout, no refusal
        with pytest.raises(DrootError, match="reached through the app's root or releases"):
            watched.preflight(layout)


def test_a_link_the_app_plants_to_a_host_pid_file_is_refused(tmp_path, supervisor):
    """pidfile:ROOT/run/x.pid, and the app makes its run/ a link to a host directory
    holding a root-owned x.pid of another process: that process must not be signalled."""
    layout, release = app_layout(tmp_path)
    host = tmp_path / "host-run"
    host.mkdir()
    (host / "x.pid").write_text(f"{supervisor}\n")
    os.symlink(host, release / "run")
    with pytest.raises(DrootError, match="reached through the app's root or releases"):
        PidfileSignal(str(tmp_path / "app" / "run" / "x.pid"), signal.SIGHUP).preflight(layout)


def test_a_device_node_at_the_pid_file_s_path_is_not_opened(tmp_path):
    """Opening a device runs its driver's open (a watchdog arms): refused unopened."""
    node = tmp_path / "app.pid"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo, 0o600)  # opened for reading, a FIFO with no writer would block
    watch = OpenWatch([node, fifo])
    try:
        for path in (node, fifo):
            with pytest.raises(Failed, match="is not a regular file"):
                PidfileSignal(str(path), signal.SIGHUP).pid()
        assert watch.opened() == set()
        os.close(os.open(node, os.O_RDONLY))  # the control: an open is seen
        assert watch.opened() == {node}
    finally:
        watch.close()


def test_a_real_time_signal_is_named(tmp_path):
    spec = parse_restart(f"pidfile:{tmp_path / 'app.pid'}:{signal.SIGRTMIN + 2}")
    assert spec.shown.endswith(f"(signal {signal.SIGRTMIN + 2})")
