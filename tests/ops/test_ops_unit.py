"""`droot unit`: a systemd service that systemd itself accepts, with the run line intact."""

import shlex
import subprocess

import pytest

from tests.conftest import DROOT, droot


def unit_of(*args) -> str:
    # The roots named here do not exist: written before the first deploy, and the flag
    # stays out of the unit.
    result = droot("unit", "--allow-missing-root", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def directives(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)


def exec_start_words(unit: str) -> list[str]:
    """ExecStart= split back into words (these values hold no control characters, where
    systemd's C escapes and shlex's differ), with systemd's %% and $$ undone."""
    words = shlex.split(directives(unit)["ExecStart"])
    return [word.replace("%%", "%").replace("$$", "$") for word in words]


def test_systemd_accepts_the_unit(tmp_path):
    unit = unit_of("--root", "/srv/app", "-u", "app", "--memory", "256M", "--", "/app/server",
                   "--port", "8080")
    path = tmp_path / "ops-test-app.service"
    path.write_text(unit)
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stderr
    assert "ops-test-app.service" not in verify.stderr  # no complaint about our unit


def test_systemd_rejects_what_it_should(tmp_path):
    # The same check fails on a broken ExecStart, so the test above can fail.
    path = tmp_path / "ops-test-broken.service"
    path.write_text(unit_of("--root", "/srv/app", "--", "/bin/true").replace(
        "ExecStart=", 'ExecStart="'))
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True)
    assert verify.returncode != 0


def test_service_settings():
    settings = directives(unit_of("--root", "/srv/app", "--", "/bin/server"))
    assert settings["Type"] == "exec"  # a failed exec fails the start
    assert settings["KillMode"] == "mixed"  # SIGTERM to the app itself
    assert settings["Restart"] == "on-failure"
    assert settings["TimeoutStopSec"] == "30"
    assert settings["RestartPreventExitStatus"] == "126 127"
    assert settings["WantedBy"] == "multi-user.target"


def test_arguments_survive_systemd_quoting():
    tricky = ["/bin/sh", "-c", 'echo "$HOME" 100% \\ done; x=\'y\'', "", "two  spaces"]
    unit = unit_of("--root", "/srv/my app", "-e", "MSG=50% of $USER", "--pid", "--", *tricky)
    assert exec_start_words(unit) == [DROOT, "run", "--root", "/srv/my app", "-e",
                                      "MSG=50% of $USER", "--pid", "--", *tricky]
    line = directives(unit)["ExecStart"]
    assert "%%" in line and "$$USER" in line  # no specifier or variable expansion


def test_limits_become_systemd_directives_not_run_flags():
    unit = unit_of("--root", "/srv/app", "--memory", "1G", "--cpus=1.5", "--pids-limit", "64",
                   "--", "/bin/server", "--memory", "kept")
    settings = directives(unit)
    assert (settings["MemoryMax"], settings["CPUQuota"], settings["TasksMax"]) == \
        ("1G", "150%", "64")
    # systemd owns the service's cgroup; droot must not move the app out of it. The
    # command's own arguments are left alone.
    assert exec_start_words(unit)[2:] == ["--root", "/srv/app", "--", "/bin/server",
                                          "--memory", "kept"]


@pytest.mark.parametrize("args, message", [
    (["--root", "/srv/app", "--memory", "12XB"], "--memory '12XB': not a size"),
    (["--", "/bin/true"], "the following arguments are required: -r/--root"),
])
def test_bad_input_is_one_line(args, message):
    result = droot("unit", *args)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
