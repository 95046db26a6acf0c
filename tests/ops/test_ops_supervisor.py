"""An app under a real supervisor (Debian's runit: runsv and sv): droot execs in place, so
the PID runsv watches is the app's, its stop and restart signals reach the app directly,
and the exit status runsv reports is the app's own."""

import os
import re
import signal
import subprocess

import pytest

from tests.conftest import DROOT, stop_runsv
from tests.ops.conftest import fresh_root, wait_until

# Records its PID as it sees it and every TERM it gets, in the root's /tmp (the host sees
# it at ROOT/tmp), then ends with status 42 on TERM.
APP = ('echo $$ > /tmp/pid; trap "echo TERM >> /tmp/signals; exit 42" TERM; '
       'while :; do sleep 0.1; done')


@pytest.fixture
def service(tmp_path, request):
    options = " ".join(getattr(request, "param", []))
    root = fresh_root(tmp_path)
    directory = tmp_path / "service"
    directory.mkdir()
    run = directory / "run"
    run.write_text(f"#!/bin/sh\nexec {DROOT} run --root {root} {options} -- /bin/sh -c '{APP}'\n")
    finish = directory / "finish"
    # runsv calls ./finish with the run script's exit code (-1 if killed) and signal.
    finish.write_text(f"#!/bin/sh\necho \"$1 $2\" >> {tmp_path}/finished\n")
    run.chmod(0o755)
    finish.chmod(0o755)
    runsv = subprocess.Popen(["runsv", str(directory)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield directory, root, tmp_path / "finished"
    finally:
        stop_runsv(runsv, directory)


def sv(*args) -> str:
    return subprocess.run(["sv", *map(str, args)], capture_output=True, text=True,
                          timeout=60).stdout


def running_pid(directory) -> int | None:
    match = re.match(r"run: \S+: \(pid (\d+)\)", sv("status", directory))
    return int(match.group(1)) if match else None


def app_pid(root, previous=None) -> int:
    """The PID the app wrote for itself (a new one after a restart)."""
    pid_file = root / "tmp" / "pid"

    def written():
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() and int(text) != previous else None
    return wait_until(written, "the app to start")


def finish_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_supervisor_signals_reach_the_app_and_its_status_is_reported(service):
    directory, root, finished = service
    first = app_pid(root)
    # The PID runsv supervises is the app itself, as the app sees it: nothing in between.
    assert wait_until(lambda: running_pid(directory), "sv status") == first

    sv("term", directory)  # SIGTERM to that PID; runsv then starts the app again
    wait_until(lambda: finish_lines(finished), "the finish script")
    assert (root / "tmp" / "signals").read_text() == "TERM\n"  # the app's own trap ran
    assert finish_lines(finished) == ["42 0"]  # the app's exit status, reported by runsv

    second = app_pid(root, previous=first)
    assert wait_until(lambda: running_pid(directory), "the restart") == second
    sv("restart", directory)
    third = app_pid(root, previous=second)
    assert (root / "tmp" / "signals").read_text() == "TERM\nTERM\n"
    assert finish_lines(finished) == ["42 0", "42 0"]
    assert wait_until(lambda: running_pid(directory), "the second restart") == third


def test_supervisor_sees_the_apps_death_by_signal(service):
    directory, root, finished = service
    pid = app_pid(root)
    os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer
    wait_until(lambda: finish_lines(finished), "the finish script")
    assert finish_lines(finished) == ["-1 9"]


@pytest.mark.parametrize("service", [["--pid"]], indirect=True)
def test_supervisor_signals_are_relayed_under_pid_namespace(service):
    directory, root, finished = service
    assert app_pid(root) == 2  # the app's PID inside; runsv watches the relay
    relay = wait_until(lambda: running_pid(directory), "sv status")
    assert "--pid" in open(f"/proc/{relay}/cmdline").read().split("\0")  # droot itself
    sv("term", directory)
    wait_until(lambda: finish_lines(finished), "the finish script")
    assert (root / "tmp" / "signals").read_text() == "TERM\n"  # relayed to the app's trap
    assert finish_lines(finished) == ["42 0"]  # and its status relayed back
