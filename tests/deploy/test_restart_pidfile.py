"""`--restart pidfile:PATH`: droot (root) signals the process the file names, so the file
must be one the app cannot write (in-process, with a real child process as the target)."""

import os
import signal
import subprocess

import pytest

from droot.deploy.restart import Failed, PidfileSignal


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
