"""`droot deploy|pull --restart/--check/--check-timeout`: restart the app after the
switch, check it, roll back when the new release fails; one line and an exit status
that says which release runs (0 the new one, 3 rolled back, 4 neither).

The app runs as it would in production: Server::Starter's start_server (Debian's
libserver-starter-perl) holds the listening socket and runs each release under
`droot run --preserve-fds 1`; `--restart pidfile:PATH` sends it SIGHUP, which starts a
worker from the new release and stops the old one once the new one runs. systemd is not
PID 1 here, so the systemctl path is tested for its refusal: one clear line, nothing
deployed."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DROOT, free_port, make_busybox_root, stop, stop_runsv, wait_for_port
from droot.deploy.releases import ROLLED_BACK_NAME
from tests.deploy.conftest import current, deploy, release_names, releases_dir, tar_of

HERE = Path(__file__).parent
CHECK = f"{sys.executable} -I {HERE / 'http_check.py'}"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Path:
    """tests/deploy/app_server.c compiled static (the roots have no C library)."""
    output = tmp_path_factory.mktemp("app-server") / "server"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(output), str(HERE / "app_server.c")],
                   check=True)
    return output


@pytest.fixture
def release(tmp_path, app_server):
    """release(body, status=200) -> the archive of a busybox root whose /app/server
    answers `body` with HTTP `status` (and whose /www/index.html is `body`, for busybox
    httpd)."""
    def make(body: str, status: int = 200) -> bytes:
        root = make_busybox_root(tmp_path / f"src-{body}")
        (root / "app").mkdir()
        shutil.copy2(app_server, root / "app" / "server")
        (root / "body").write_text(body)
        (root / "www").mkdir()
        (root / "www" / "index.html").write_text(body)
        if status != 200:
            (root / "status").write_text(str(status))
        return tar_of(root)
    return make


def get(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Supervised:
    """start_server holding 127.0.0.1:PORT on descriptor 3 (`=3`: otherwise whichever
    descriptor it got) and running the app of ROOT under droot run --preserve-fds 1."""

    def __init__(self, root: Path, directory: Path):
        self.port = free_port()
        self.pidfile = directory / "start_server.pid"
        self.log = directory / "start_server.log"
        self.process = subprocess.Popen(
            ["start_server", f"--port=127.0.0.1:{self.port}=3", f"--pid-file={self.pidfile}",
             "--interval=1", f"--log-file={self.log}", "--",
             DROOT, "run", "--root", str(root), "--preserve-fds", "1", "--", "/app/server"],
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(self.port, self.process, "start_server")
            self.wait_for_answer()
        except BaseException:
            self.stop()
            raise

    def wait_for_answer(self):
        """The port is bound by start_server before its worker runs: wait for a reply."""
        import time
        deadline = time.monotonic() + 30
        while True:
            try:
                return get(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no worker answers; start_server's log:\n"
                                       f"{self.log.read_text()}") from None
                time.sleep(0.1)

    def workers(self) -> set[int]:
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as file:
            return {int(pid) for pid in file.read().split()}

    def wait_for_one_new_worker(self, old: set[int]):
        """start_server keeps the old worker for --interval after the new one started (both
        accept meanwhile), then stops it: wait until one worker runs, not one of `old`, so
        the next answer is the newest worker's. A bounded wait, no timed assertion."""
        import time
        deadline = time.monotonic() + 60
        while len(self.workers()) != 1 or self.workers() & old:
            assert time.monotonic() < deadline, f"workers {self.workers()}, old ones {old}"
            time.sleep(0.1)

    def restart_option(self) -> str:
        return f"pidfile:{self.pidfile}"

    def stop(self):
        stop(self.process)  # start_server passes SIGTERM on to its worker and waits for it


@pytest.fixture
def supervised(tmp_path, release):
    """The first release ("v1") deployed at ROOT and running under start_server."""
    root = tmp_path / "srv" / "app"
    assert deploy(root, release("v1")).returncode == 0
    app = Supervised(root, tmp_path)
    yield root, app
    app.stop()


def test_good_release_is_restarted_checked_and_answers(supervised, release):
    root, app = supervised
    assert get(app.port) == (200, "v1")
    old = app.workers()
    result = deploy(root, release("v2"), "--restart", app.restart_option(),
                    "--check", f"{CHECK} {app.port}", "--check-timeout", "60")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("droot: deployed "), lines
    assert lines[0].endswith(f"restarted {app.pidfile} (SIGHUP), check passed"), lines
    assert current(root) == release_names(root)[-1]
    app.wait_for_one_new_worker(old)
    assert get(app.port) == (200, "v2")


def test_failing_release_is_rolled_back_and_the_old_one_answers(supervised, release):
    root, app = supervised
    good = current(root)
    old = app.workers()
    result = deploy(root, release("v2-broken", status=500), "--restart", app.restart_option(),
                    "--check", f"{CHECK} {app.port}", "--check-timeout", "8")
    assert result.returncode == 3, result.stderr  # 3: rolled back, the previous release runs
    lines = result.stderr.decode().strip().splitlines()
    bad = release_names(root)[-1]
    assert lines == [f"droot: check failed on {bad}: the check ended with exit status 1: no "
                     f"good answer: HTTP Error 500: Failing" + lines[0].split("Failing", 1)[1]]
    assert lines[0].endswith(f"; rolled back to {good}, restarted {app.pidfile} (SIGHUP), "
                             "check passed"), lines
    assert current(root) == good
    app.wait_for_one_new_worker(old)  # v1's, replaced by v2's, then by a new v1's
    assert get(app.port) == (200, "v1")


def test_zero_failed_requests_across_a_deploy_and_restart(supervised, release):
    """A client keeps sending requests (each on a new connection) while a new release is
    deployed and start_server restarts the app: none fails, and the new release answers
    afterwards. The load is bounded by the deploy, not by time."""
    root, app = supervised
    answers, failures, done = [], [], threading.Event()
    old = app.workers()

    def load():
        while not done.is_set() or len(answers) < 20:
            try:
                answers.append(get(app.port))
            except OSError as error:
                failures.append(repr(error))

    client = threading.Thread(target=load)
    client.start()
    try:
        result = deploy(root, release("v2"), "--restart", app.restart_option(),
                        "--check", f"{CHECK} {app.port}", "--check-timeout", "60")
    finally:
        done.set()
        client.join(60)
    assert result.returncode == 0, result.stderr
    assert failures == []
    assert len(answers) >= 20
    assert all(status == 200 for status, _ in answers)
    bodies = [body for _, body in answers]
    assert bodies[0] == "v1" and "v2" in bodies
    app.wait_for_one_new_worker(old)
    assert [get(app.port) for _ in range(5)] == [(200, "v2")] * 5


def test_runit_restarts_the_app_by_its_pid_file(tmp_path, release):
    """runit's runsv writes the app's pid to supervise/pid (droot execs in place: the pid
    is the app's); TERM ends the app and runsv starts it again, from the new release."""
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    port = free_port()
    service = tmp_path / "service"
    service.mkdir()
    (service / "run").write_text(f"#!/bin/sh\nexec {DROOT} run --root {root} -- "
                                 f"/bin/httpd -f -p 127.0.0.1:{port} -h /www\n")
    (service / "run").chmod(0o755)
    runsv = subprocess.Popen(["runsv", str(service)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, runsv, "runsv's httpd")
        assert get(port) == (200, "v1")
        result = deploy(root, release("v2"), "--restart", f"pidfile:{service}/supervise/pid:TERM",
                        "--check", f"{CHECK} {port}")
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().strip().endswith(
            f"restarted {service}/supervise/pid (SIGTERM), check passed")
        assert get(port) == (200, "v2")
    finally:
        stop_runsv(runsv, service)


def test_check_alone_rolls_back_without_a_restart(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    first = current(root)
    check = 'test "$(cat "$DROOT_RELEASE_DIR/body")" = v1 || { echo "body is not v1"; exit 7; }'
    result = deploy(root, release("v2"), "--check", check, "--check-timeout", "1")
    assert result.returncode == 3, result.stderr
    second = release_names(root)[-1]
    assert result.stderr.decode().splitlines() == [
        f"droot: check failed on {second}: the check ended with exit status 7: body is not v1 "
        f"(2 attempts in 1 s); rolled back to {first}, check passed"]
    assert current(root) == first


def test_the_check_runs_under_the_deploy_lock(tmp_path, release):
    """A rollback tried from inside the check finds the root locked: nothing else changes
    the root between the switch and the outcome."""
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    said = tmp_path / "rollback.out"
    check = f'{DROOT} rollback --root "$DROOT_ROOT" --lock-timeout 0 2> {said}; test $? = 1'
    result = deploy(root, release("v2"), "--check", check, "--check-timeout", "30")
    assert result.returncode == 0, result.stderr
    assert "is locked by another deploy, rollback or rm" in said.read_text()
    assert current(root) == release_names(root)[-1]


def test_check_that_hangs_is_killed_at_the_timeout(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    first = current(root)
    # The check and a child it leaves behind: both are killed, or droot would wait on the
    # pipe the child holds.
    result = deploy(root, release("v2"), "--check",
                    'test "$DROOT_RELEASE" = ' + first + ' || { sleep 600 & sleep 600; }',
                    "--check-timeout", "1")
    assert result.returncode == 3, result.stderr
    assert "the check did not finish in" in result.stderr.decode()
    assert current(root) == first


def test_first_release_failing_its_check_has_nothing_to_roll_back_to(tmp_path, release):
    root = tmp_path / "app"
    result = deploy(root, release("v1"), "--check", "false", "--check-timeout", "0")
    assert result.returncode == 4, result.stderr
    (name,) = release_names(root)
    assert result.stderr.decode().splitlines() == [
        f"droot: check failed on {name}: the check ended with exit status 1 (1 attempt in "
        f"0 s); no previous release to roll back to, {name} stays current"]


def test_previous_release_failing_too_is_status_4(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    first = current(root)
    result = deploy(root, release("v2"), "--check", "exit 5", "--check-timeout", "0")
    assert result.returncode == 4, result.stderr
    line, = result.stderr.decode().splitlines()
    assert f"; rolled back to {first}, but its check failed too: " in line
    assert current(root) == first


def test_missing_systemctl_is_one_line_and_nothing_is_deployed(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    before = release_names(root)
    no_systemctl = tmp_path / "bin"
    no_systemctl.mkdir()
    for tool in ("sh", "rsync"):  # what deploy itself may start, without systemctl
        if shutil.which(tool):
            (no_systemctl / tool).symlink_to(shutil.which(tool))
    result = deploy(root, release("v2"), "--restart", "myapp.service",
                    env=dict(os.environ, PATH=str(no_systemctl)))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "droot: --restart myapp.service: systemctl not found (is systemd running here?); "
        "for another supervisor use --restart pidfile:PATH[:SIGNAL]"]
    assert release_names(root) == before


@pytest.mark.skipif(not shutil.which("systemctl") or os.path.exists("/run/systemd/system"),
                    reason="needs systemctl on a machine where systemd is not running")
def test_systemctl_without_systemd_is_one_line_and_nothing_is_deployed(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    before = release_names(root)
    result = deploy(root, release("v2"), "--restart", "myapp.service")
    assert result.returncode == 1
    line, = result.stderr.decode().splitlines()
    assert line.startswith("droot: --restart myapp.service: systemctl cannot reach systemd: ")
    assert release_names(root) == before


def test_missing_pidfile_is_one_line_and_nothing_is_deployed(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    before = release_names(root)
    result = deploy(root, release("v2"), "--restart", f"pidfile:{tmp_path}/none.pid")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"droot: --restart pidfile:{tmp_path}/none.pid: cannot read the pid file "
        f"{tmp_path}/none.pid: No such file or directory"]
    assert release_names(root) == before


@pytest.mark.parametrize("arguments, message", [
    (["--restart", "pidfile:relative.pid"], "give the pid file's absolute path"),
    (["--restart", "pidfile:/run/x.pid:NOPE"], "unknown signal 'NOPE'"),
    (["--restart", "/etc/x"], "not a systemd unit name"),
    (["--check", " "], "--check is empty"),
    (["--check-timeout", "5"], "--check-timeout needs --check or --restart"),
    (["--check", "true", "--check-timeout", "-1"], "--check-timeout '-1': expected seconds"),
    (["--check", "true", "--mode", "rsync"], "need --mode symlink"),
])
def test_bad_options_are_one_line(tmp_path, release, arguments, message):
    root = tmp_path / "app"
    result = deploy(root, release("v1"), *arguments)
    assert result.returncode in (1, 2)
    line, = result.stderr.decode().splitlines()
    assert line.startswith("droot: ") and message in line, line
    assert not root.exists()


def test_pull_takes_the_same_options(tmp_path, release):
    archive = tmp_path / "app.tar.gz"
    archive.write_bytes(release("v1"))
    root = tmp_path / "app"
    result = subprocess.run([DROOT, "pull", str(archive), "--root", str(root), "--no-verify",
                             "--check", 'test -f "$DROOT_ROOT/body"'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith(", check passed")


# --- a rolled-back release and pull --if-changed ---------------------------------------------

def publish(directory: Path, archive: bytes) -> tuple[str, str]:
    """The archive as a path store holds it (with its sidecar): (its path, its SHA-256)."""
    path = directory / "store" / "app.tar.gz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    (directory / "store" / "app.tar.gz.sha256").write_text(f"{digest}  app.tar.gz\n")
    return str(path), digest


def pull(root: Path, src: str, *options) -> subprocess.CompletedProcess:
    return subprocess.run([DROOT, "pull", src, "--root", str(root), *options],
                          capture_output=True, text=True, timeout=120)


def rolled_back_record(root: Path) -> dict:
    """ROOT.releases/.rolled-back, checked to be a regular file only root can read."""
    path = releases_dir(root) / ROLLED_BACK_NAME
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and info.st_mode & 0o777 == 0o600
    return json.loads(path.read_text())


def test_a_rolled_back_release_is_not_deployed_again_at_every_poll(supervised, release,
                                                                      tmp_path):
    """A timer polling with --if-changed --restart --check: the failing release is
    deployed and rolled back once (exit 3); the next polls leave the app alone (no
    restart, no new release; one line, exit 0); a new release in the store is pulled."""
    root, app = supervised
    good = current(root)
    src, digest = publish(tmp_path, release("v2-broken", status=500))
    poll = ["--if-changed", "--restart", app.restart_option(), "--check",
            f"{CHECK} {app.port}", "--check-timeout", "8"]
    old = app.workers()
    result = pull(root, src, *poll)
    assert result.returncode == 3, result.stderr
    bad = release_names(root)[-1]
    record = rolled_back_record(root)
    assert (record["sha256"], record["release"]) == (digest, bad)
    assert current(root) == good
    app.wait_for_one_new_worker(old)  # v2's, then v1's again
    workers, names = app.workers(), release_names(root)

    result = pull(root, src, *poll)
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert line == (f"droot: not deploying {src}: its release (sha256 {digest[:12]}) was "
                    f"rolled back here at {record['rolled_back_at']} (release {bad}); to try "
                    "it again, pull without --if-changed (success clears this)")
    assert app.workers() == workers  # not restarted
    assert release_names(root) == names and current(root) == good
    assert get(app.port) == (200, "v1")

    src, _ = publish(tmp_path, release("v3"))
    result = pull(root, src, *poll)
    assert result.returncode == 0, result.stderr
    assert current(root) == release_names(root)[-1] != good
    assert not (releases_dir(root) / ROLLED_BACK_NAME).exists()
    app.wait_for_one_new_worker(workers)
    assert get(app.port) == (200, "v3")


def test_a_plain_pull_tries_a_rolled_back_release_again_and_clears_the_record(
        supervised, release, tmp_path):
    """The check failed for a reason outside the release (a service only the new release
    uses was down): once it is back, the operator's plain pull deploys the release, and
    the polls find it current."""
    root, app = supervised
    good = current(root)
    down = tmp_path / "dependency-down"
    down.touch()
    check = f'{{ test "$DROOT_RELEASE" = {good} || test ! -e {down}; }} && {CHECK} {app.port}'
    restart_check = ["--restart", app.restart_option(), "--check", check,
                     "--check-timeout", "2"]
    src, digest = publish(tmp_path, release("v2"))
    assert pull(root, src, "--if-changed", *restart_check).returncode == 3
    assert rolled_back_record(root)["sha256"] == digest
    down.unlink()
    result = pull(root, src, "--if-changed", *restart_check)
    assert result.returncode == 0 and "was rolled back here" in result.stderr, result.stderr
    assert current(root) == good  # the record holds until someone pulls without it

    result = pull(root, src, *restart_check)
    assert result.returncode == 0, result.stderr
    assert current(root) == release_names(root)[-1] != good
    assert not (releases_dir(root) / ROLLED_BACK_NAME).exists()
    result = pull(root, src, "--if-changed", *restart_check)
    assert (result.returncode, result.stderr) == (0, "")  # unchanged: quiet under a timer


def test_rm_removes_a_root_with_a_rolled_back_record(tmp_path, release):
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    only_v1 = 'test "$(cat "$DROOT_RELEASE_DIR/body")" = v1'
    assert deploy(root, release("v2"), "--check", only_v1, "--check-timeout", "0").returncode == 3
    assert rolled_back_record(root)["release"] == release_names(root)[-1]
    result = subprocess.run([DROOT, "rm", "--root", str(root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not root.exists() and not releases_dir(root).exists()


def test_a_release_not_recovered_is_not_deployed_again_at_every_poll(tmp_path, release):
    """Exit status 4 after the switch back: the new release failed its check, and so did
    the previous one, now current again. The store still holds the new release: a poll
    that deployed it again would restart and fail twice more at every poll; it is recorded
    as a rollback is, and the polls leave the host alone, with a line saying both failed."""
    root = tmp_path / "app"
    assert deploy(root, release("v1")).returncode == 0
    good = current(root)
    src, digest = publish(tmp_path, release("v2"))
    poll = ["--if-changed", "--check", "false", "--check-timeout", "0"]
    result = pull(root, src, *poll)
    assert result.returncode == 4, result.stderr
    assert current(root) == good
    bad = release_names(root)[-1]
    record = rolled_back_record(root)
    assert (record["sha256"], record["release"], record["recovered"]) == (digest, bad, False)
    names = release_names(root)

    result = pull(root, src, *poll)
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert line == (f"droot: not deploying {src}: its release (sha256 {digest[:12]}) was "
                    f"rolled back here at {record['rolled_back_at']} (release {bad}), and "
                    "the previous release failed its restart or check too: look at the app; "
                    "to try it again, pull without --if-changed (success clears this)")
    assert release_names(root) == names and current(root) == good


def test_a_first_release_not_recovered_is_current_and_unchanged_for_the_polls(tmp_path,
                                                                              release):
    """Exit status 4 with nothing to roll back to: the new release stays current, as
    `.deployed` says, so the next poll finds it unchanged (there is nothing else to run)."""
    root = tmp_path / "app"
    src, _ = publish(tmp_path, release("v1"))
    poll = ["--if-changed", "--check", "false", "--check-timeout", "0"]
    assert pull(root, src, *poll).returncode == 4
    names = release_names(root)
    assert current(root) == names[-1]
    assert not (releases_dir(root) / ROLLED_BACK_NAME).exists()
    assert (pull(root, src, *poll).returncode, release_names(root)) == (0, names)
