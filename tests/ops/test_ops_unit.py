"""`droot unit`: a systemd service that systemd itself accepts, with the run line intact."""

import os
import shlex
import subprocess
import sys

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
    # named after the root, escaped as systemd-escape does
    assert unit.startswith("# /etc/systemd/system/my\\x20app.service\n")
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


def verify(*paths) -> str:
    """systemd's own check of unit files (runs without systemd as PID 1); what it says
    about them (it exits 0 on a setting it ignores, so that is read from its output)."""
    result = subprocess.run(["systemd-analyze", "verify", *map(str, paths)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return "\n".join(line for line in result.stderr.splitlines()
                     if any(str(path) in line for path in paths))


def test_listen_writes_a_socket_unit_systemd_accepts(tmp_path):
    result = droot("unit", "--allow-missing-root", "--root", "/srv/shop", "--listen",
                   "127.0.0.1:8080", "--listen", "/run/shop.sock", "-o", tmp_path, "--",
                   "/app/server")
    assert result.returncode == 0, result.stderr
    service, sockets = tmp_path / "shop.service", tmp_path / "shop.socket"
    assert result.stdout.splitlines() == [f"wrote {service}", f"wrote {sockets}"]
    assert sorted(os.listdir(tmp_path)) == ["shop.service", "shop.socket"]
    assert verify(service, sockets) == ""
    settings = directives(service.read_text())
    assert settings["Requires"] == "shop.socket" and "shop.socket" in settings["After"]
    assert settings["Also"] == "shop.socket"  # enabling the service enables its socket
    assert exec_start_words(service.read_text())[2:] == ["--root", "/srv/shop", "--",
                                                        "/app/server"]
    listen = [line for line in sockets.read_text().splitlines()
              if line.startswith("ListenStream=")]
    assert listen == ["ListenStream=127.0.0.1:8080", "ListenStream=/run/shop.sock"]
    assert os.stat(service).st_mode & 0o777 == 0o644
    # the check above can fail: systemd does complain about an address it cannot use
    sockets.write_text(sockets.read_text().replace("127.0.0.1:8080", "not an address"))
    assert "Failed to parse address" in verify(service, sockets)


def test_printed_as_systemctl_cat_shows_them(tmp_path):
    args = ["--root", "/srv/shop", "--listen", "8080", "--notify", "--", "/app/server"]
    printed = unit_of(*args)
    assert droot("unit", "--allow-missing-root", "-o", tmp_path, *args).returncode == 0
    expected = "\n".join(f"# /etc/systemd/system/{name}\n{(tmp_path / name).read_text()}"
                         for name in ("shop.service", "shop.socket"))
    assert printed == expected


@pytest.mark.parametrize("args, expected", [
    ([], {"Type": "exec"}),
    (["--notify"], {"Type": "notify", "NotifyAccess": "main"}),
    (["--notify", "--watchdog", "30"],
     {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30"}),
    (["--watchdog=2.5"], {"Type": "exec", "NotifyAccess": "main", "WatchdogSec": "2.5"}),
    # under --pid the app is not the main PID (droot's relay is): only "all" lets it notify
    (["--notify", "--pid"], {"Type": "notify", "NotifyAccess": "all"}),
])
def test_notify_and_watchdog(tmp_path, args, expected):
    unit = unit_of("--root", "/srv/app", *args, "--", "/app/server")
    settings = directives(unit)
    assert {name: settings.get(name) for name in ("Type", "NotifyAccess", "WatchdogSec")} == \
        {"NotifyAccess": None, "WatchdogSec": None, **expected}
    path = tmp_path / "app.service"
    path.write_text(unit)
    assert verify(path) == ""
    # the unit's own flags stay out of the run line
    assert "--notify" not in exec_start_words(unit) and "--watchdog" not in unit.split("ExecStart")[1]


def test_logs_name_the_app_and_its_release(tmp_path, busybox_root):
    root = tmp_path / "shop"
    archive = subprocess.run(["tar", "-C", str(busybox_root), "-c", "."], capture_output=True,
                             check=True).stdout
    deployed = droot("deploy", "--root", root, input=archive, text=False)
    assert deployed.returncode == 0, deployed.stderr
    release = os.path.basename(os.readlink(root))
    unit = droot("unit", "--root", root, "--", "/bin/true").stdout
    settings = directives(unit)
    assert settings["SyslogIdentifier"] == "shop"
    assert settings["LogExtraFields"] == f"DROOT_ROOT={root} DROOT_RELEASE={release}"
    path = tmp_path / "shop.service"
    path.write_text(unit)
    assert verify(path) == ""
    # the check reads the fields: a name journald would refuse is reported
    path.write_text(unit.replace("DROOT_RELEASE=", "droot_release="))
    assert "Log field name is invalid" in verify(path)
    # a root deploy did not make (a plain directory): the root only; a named unit
    unit = droot("unit", "--root", busybox_root, "--name", "other", "--", "/bin/true").stdout
    assert directives(unit)["LogExtraFields"] == f"DROOT_ROOT={busybox_root}"
    assert directives(unit)["SyslogIdentifier"] == "other"


def test_python_m_droot_writes_an_exec_start_that_runs(busybox_root):
    """Under `python -m droot`, argv[0] is droot/__main__.py, which cannot be executed."""
    result = subprocess.run([sys.executable, "-m", "droot", "unit", "--root", busybox_root,
                             "--", "/bin/echo", "ran inside"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    words = exec_start_words(result.stdout)
    assert not words[0].endswith("__main__.py") and os.access(words[0], os.X_OK)
    ran = subprocess.run(words, capture_output=True, text=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (0, "ran inside\n"), ran.stderr


@pytest.mark.parametrize("args, message", [
    (["--root", "/srv/app", "--name", "my app"], "--name 'my app' is not a unit name"),
    (["--root", "/srv/app", "--name", "../../etc/x"], "--name '../../etc/x' is not a unit"),
    (["--root", "/"], "cannot name the units after the root /: give --name"),
    (["--root", "/srv/app", "--listen", "80\nExecStartPre=/bin/evil"], "--listen '80\\n"),
    (["--root", "/srv/app", "--listen", ""], "--listen '': give a port"),
    (["--root", "/srv/app", "--watchdog", "0"], "--watchdog '0': give a number of seconds"),
    (["--root", "/srv/app", "--watchdog", "5m"], "--watchdog '5m': give a number of seconds"),
])
def test_bad_unit_options_are_one_line(args, message):
    result = droot("unit", "--allow-missing-root", *args, "--", "/bin/true")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_output_to_a_missing_directory_is_one_line(tmp_path):
    result = droot("unit", "--allow-missing-root", "--root", "/srv/app", "-o",
                   tmp_path / "missing", "--", "/bin/true")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"droot: cannot write {tmp_path}/missing/app.service: "
                             "No such file or directory\n")
