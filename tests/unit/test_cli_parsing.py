"""The command line, in process: every command's flags and defaults, and which exit status
each kind of usage error gives (droot.cli.exit_status), without running any command."""

import re
import sys

import pytest

from droot import __version__
from droot.cli import COMMANDS, build_parser, exit_status, main, requested_command
from droot.core.errors import (CommandNotExecutable, CommandNotFound, DrootError, RunError,
                               UsageError)
from droot.run.cli import parse_run_quickly

SHA = "ab" * 32


def parse(*argv) -> dict:
    """The options of a command line as `droot` gets them (argparse's path)."""
    argv = [str(arg) for arg in argv]
    return vars(build_parser(requested_command(argv)).parse_args(argv))


def refused(*argv) -> str:
    """The message of the usage error a command line is refused with."""
    with pytest.raises(UsageError) as error:
        parse(*argv)
    return str(error.value)


@pytest.fixture
def sigterm_kept():
    """main() installs droot's SIGTERM handler and unraisable-exception hook: the test
    process gets its own back."""
    import signal
    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    yield
    signal.signal(signal.SIGTERM, handler)
    sys.unraisablehook = hook


# --- which command -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, command", [
    (["deploy", "--root", "x"], "deploy"), (["--debug", "rm", "--root", "x"], "rm"),
    (["--debug", "--debug", "run"], "run"), (["frobnicate", "run"], None), ([], None),
    (["--root", "x"], None), (["-"], None),
])
def test_requested_command(argv, command):
    assert requested_command(argv) == command


def test_each_command_is_built_from_its_stage():
    for name, (module, summary) in COMMANDS.items():
        options = parse(*MINIMAL[name])
        # exec's own COMMAND argument takes the name argparse would keep the command in
        assert options["command"] == ([] if name == "exec" else name)
        assert options["handler"].__module__ == module and options["handler"].__name__ == name
        assert summary and summary == summary.strip() and not summary.endswith(".")


# The shortest command line each command accepts, and every option's default on it.
MINIMAL = {
    "export": ["export", "img"],
    "push": ["push", "img", "s3://b/k"],
    "pull": ["pull", "s3://b/k", "--root", "/srv/app"],
    "gc": ["gc", "s3://b/p"],
    "deploy": ["deploy", "--root", "/srv/app"],
    "rollback": ["rollback", "--root", "/srv/app"],
    "releases": ["releases", "--root", "/srv/app"],
    "rm": ["rm", "--root", "/srv/app"],
    "run": ["run", "--root", "/srv/app"],
    "umount": ["umount", "--root", "/srv/app"],
    "exec": ["exec", "--root", "/srv/app"],
    "ps": ["ps"],
    "unit": ["unit", "--root", "/srv/app"],
}
TARGET_DEFAULTS = {"root": "/srv/app", "lock_timeout": None, "mode": "symlink", "keep": 5,
                   "devices": False, "sha256": None, "restart": None, "check": None,
                   "check_timeout": None, "trusted_keys": None, "signature": None,
                   "pushed": None, "allow_downgrade": False, "read_only": False}
RUN_DEFAULTS = {
    "root": "/srv/app", "copy_files": False, "user": None, "group": None, "bind": [],
    "robind": [], "read_only": False, "tmpfs": [], "env": [], "env_file": [], "workdir": None, "no_dropcaps": False,
    "cap_add": [], "cap_drop": [], "allow_new_privs": False, "allow_syscall": [], "share": [],
    "pid": False, "net": None, "hostname": None, "ipc": False, "userns": None, "memory": None,
    "cpus": None, "pids_limit": None, "preserve_fds": None, "app_argv": []}
DEFAULTS = {
    "export": {"image": "img", "output": None, "compress": "none", "plain_http": False},
    "push": {"image": "img", "dest": "s3://b/k", "to": None, "compress": "gzip",
             "plain_http": False, "sign": None, "delta": False},
    "pull": {"src": "s3://b/k", "src_option": None, "verify": True, "if_changed": False,
             "retries": 3, "timeout": 60.0, **TARGET_DEFAULTS},
    "gc": {"store": "s3://b/p", "keep": 5, "grace": 86400},
    "deploy": {"name": None, **TARGET_DEFAULTS},
    "rollback": {"root": "/srv/app", "lock_timeout": None, "to": None},
    "releases": {"root": "/srv/app"},
    "rm": {"root": "/srv/app", "lock_timeout": None},
    "run": RUN_DEFAULTS,
    "umount": {"root": "/srv/app"},
    "exec": {"root": "/srv/app", "pid": None, "user": None, "env": [], "workdir": None,
             "command": []},
    "ps": {"json": False},
    "unit": {"description": None, "allow_missing_root": False, "name": None, "listen": [],
             "notify": False, "watchdog": None, "output": None, **RUN_DEFAULTS},
}


@pytest.mark.parametrize("command", COMMANDS)
def test_defaults(command, monkeypatch):
    monkeypatch.delenv("DROOT_PLAIN_HTTP", raising=False)
    options = parse(*MINIMAL[command])
    del options["handler"]
    if command != "exec":  # whose COMMAND argument is in DEFAULTS
        assert options.pop("command") == command
    assert options == {"debug": False, **DEFAULTS[command]}


def test_debug_before_or_after_the_command():
    assert parse("--debug", "ps")["debug"] is True
    assert parse("ps", "--debug")["debug"] is True


# --- each command's options ----------------------------------------------------------------

def test_export_options(monkeypatch):
    monkeypatch.delenv("DROOT_PLAIN_HTTP", raising=False)
    options = parse("export", "oci:x", "-o", "out.tar", "--compress", "zstd", "--plain-http")
    assert (options["output"], options["compress"], options["plain_http"]) == \
        ("out.tar", "zstd", True)
    assert parse("export", "x", "--output", "o", "--insecure-registry")["output"] == "o"
    assert parse("export", "x", "--insecure-registry")["plain_http"] is True
    assert "argument --compress: invalid choice: 'bzip2'" in refused("export", "x",
                                                                     "--compress", "bzip2")
    assert "the following arguments are required: IMAGE" in refused("export")


@pytest.mark.parametrize("command", ["export", "push"])
@pytest.mark.parametrize("value, plain_http", [("1", True), ("yes", True), ("0", False),
                                               ("", False)])
def test_plain_http_from_the_environment(command, value, plain_http, monkeypatch):
    monkeypatch.setenv("DROOT_PLAIN_HTTP", value)
    assert parse(*MINIMAL[command])["plain_http"] is plain_http


def test_plain_http_reaches_the_registry_as_an_argument(monkeypatch):
    """--plain-http is passed down to the registry source, not through the process
    environment."""
    import os

    from droot.image.registry import Registry
    monkeypatch.delenv("DROOT_PLAIN_HTTP", raising=False)
    host = "registry.internal:5000"  # not loopback: HTTPS unless asked
    assert Registry(host, "app").base == f"https://{host}/v2/app"
    assert Registry(host, "app", plain_http=True).base == f"http://{host}/v2/app"
    for command in ("export", "push"):
        assert parse(*MINIMAL[command], "--plain-http")["plain_http"] is True
    assert "DROOT_PLAIN_HTTP" not in os.environ


def test_push_options():
    assert parse("push", "img", "-", "--zstd")["compress"] == "zstd"
    assert parse("push", "img", "-", "--compress", "none")["compress"] == "none"
    options = parse("push", "img", "--to", "s3://b/k")  # the original's spelling
    assert (options["dest"], options["to"]) == (None, "s3://b/k")


def test_pull_and_deploy_options():
    for command in ("deploy", "pull"):
        start = MINIMAL[command]
        options = parse(*start, "--mode", "rsync", "--keep", "0", "--devices",
                        "--sha256", SHA.upper(), "--lock-timeout", "2.5")
        assert (options["mode"], options["keep"], options["devices"], options["sha256"],
                options["lock_timeout"]) == ("rsync", 0, True, SHA, 2.5)
        assert parse(*start, "--devices", "--no-devices")["devices"] is False
        assert parse(command, *start[1:-2], "--dest", "/d")["root"] == "/d"
    assert parse("pull", "--src", "s3://b/k", "--root", "/r")["src_option"] == "s3://b/k"
    assert parse("pull", "s3://b/k", "--no-verify")["verify"] is False
    assert parse("pull", "s3://b/k")["root"] is None  # pull says so itself (below)


@pytest.mark.parametrize("flag, value, message", [
    ("--keep", "-1", "--keep '-1': expected a number of releases (0 keeps all)"),
    ("--keep", "many", "--keep 'many': expected a number of releases (0 keeps all)"),
    ("--keep", "1.5", "--keep '1.5'"),
    ("--lock-timeout", "-0.5", "--lock-timeout '-0.5': expected seconds (0 fails at once)"),
    ("--lock-timeout", "soon", "--lock-timeout 'soon'"),
    ("--sha256", "ab" * 31, "--sha256 '" + "ab" * 31 + "': expected 64 hexadecimal digits"),
    ("--sha256", "xy" * 32, "expected 64 hexadecimal digits"),
    ("--sha256", "ab" * 33, "expected 64 hexadecimal digits"),
    ("--mode", "copy", "argument -m/--mode: invalid choice: 'copy'"),
])
def test_deploy_values_refused(flag, value, message):
    for command in ("deploy", "pull"):
        assert message in refused(*MINIMAL[command], flag, value)


def test_deploy_values_at_their_bounds():
    assert parse(*MINIMAL["deploy"], "--keep", "0", "--lock-timeout", "0")["keep"] == 0
    assert parse(*MINIMAL["deploy"], "--sha256", f"  {SHA}\n")["sha256"] == SHA


def test_commands_that_need_a_root_say_so():
    for command in ("deploy", "rollback", "releases", "rm", "run", "umount", "unit"):
        assert re.search(r"the following arguments are required: (-r/)?--root\b",
                         refused(command))


@pytest.mark.parametrize("command", ["run", "pull", "deploy", "exec"])
def test_an_unknown_option_names_its_command_and_help(command):
    """The top-level parser reports it: it must still say which command's help to read."""
    assert refused(command, "--root", "/srv/app", "--frobnicate") == \
        f"{command}: unrecognized arguments: --frobnicate (see 'droot {command} --help')"


def test_rollback_options():
    assert parse(*MINIMAL["rollback"], "--to", "000003")["to"] == "000003"


def test_exec_options():
    options = parse("exec", "--pid", "42", "-u", "app:staff", "-e", "A=1", "--env", "B=2",
                    "-w", "/srv", "--", "/bin/ls", "-l")
    assert (options["pid"], options["root"], options["user"], options["env"],
            options["workdir"], options["command"]) == \
        (42, None, "app:staff", ["A=1", "B=2"], "/srv", ["--", "/bin/ls", "-l"])
    assert "one of the arguments -r/--root --pid is required" in refused("exec", "--",
                                                                         "/bin/sh")
    assert "argument --pid: not allowed with argument -r/--root" in refused(
        "exec", "--root", "/r", "--pid", "1")
    assert "argument --pid: invalid int value: 'abc'" in refused("exec", "--pid", "abc")


def test_ps_and_unit_options():
    assert parse("ps", "--json")["json"] is True
    options = parse("unit", "--root", "/r", "--description", "My app", "--allow-missing-root",
                    "--memory", "1G", "-u", "app", "--", "/app/server")
    assert (options["description"], options["allow_missing_root"], options["memory"],
            options["user"], options["app_argv"]) == \
        ("My app", True, "1G", "app", ["--", "/app/server"])


# --- `droot run`: the quick reader and argparse agree --------------------------------------

@pytest.mark.parametrize("argv", [
    ["run", "--root", "/r", "--", "/bin/true"],
    ["run", "--root", "/r", "/bin/sh", "-c", "echo --root"],
    ["--debug", "run", "--root=/r", "-u", "app", "-g", "50", "-e", "A=1", "-e", "B==",
     "--env-file", "f", "-b", "/a:/b", "--bind", "/c", "--robind", "/d:/e", "--cp",
     "--no-dropcaps", "--cap-add", "NET_RAW", "--cap-drop", "ALL", "--allow-new-privs",
     "-w", "/srv", "--", "x", "--", "y"],
    ["run", "--copy-files", "--root", "/r"],
    ["run", "--root", "/r", "--debug", "--", "--", "x"],
    ["run", "--root", "/r", "--pid", "--net", "none", "--memory=256M", "/bin/sh"],
    ["run", "--root", "/r", "--root", "/s", "--hostname", "h", "--userns", "0:65536",
     "--cpus", "0.5", "--pids-limit", "9", "--ipc", "--share", "ipc", "--share", "proc",
     "--allow-syscall", "keyctl", "--env-file", "g", "--user", "1", "--group", "2",
     "--workdir", "/w", "-", "x"],
])
def test_quick_parser_agrees_with_argparse(argv):
    """`droot run` reads plain command lines without argparse; the result is the same."""
    quick = vars(parse_run_quickly(argv))
    assert quick == parse(*argv)
    assert quick["command"] == "run" and quick["root"] is not None


def test_the_quick_reader_reads_the_values():
    """Not only the same as argparse: what was given (argparse could be wrong too)."""
    options = parse_run_quickly(["--debug", "run", "--root", "/r", "-u", "app", "-e", "A=1",
                                 "--env=B=2", "--pid", "--", "/bin/sh", "-c", "x"])
    assert (options.debug, options.root, options.user, options.env, options.pid,
            options.app_argv) == (True, "/r", "app", ["A=1", "B=2"], True,
                                  ["--", "/bin/sh", "-c", "x"])
    assert parse_run_quickly(["run", "--root", "/r", "--root", "/s"]).root == "/s"  # last wins


@pytest.mark.parametrize("argv", [
    ["run", "--help"], ["run", "--ro", "/r"], ["run", "-uapp", "--root", "/r"],
    ["run", "--root"], ["run", "-e", "--root", "/r"], ["run", "--frob", "--root", "/r"],
    ["run", "-w", "/x"], ["run", "--pid=1", "--root", "/r"], ["deploy", "--root", "/r"],
    ["--debug"], [], ["--version", "run", "--root", "/r"], ["run", "--root", "/r", "-u"],
])
def test_quick_parser_leaves_the_rest_to_argparse(argv):
    assert parse_run_quickly(argv) is None


# --- exit statuses ------------------------------------------------------------------------

@pytest.mark.parametrize("error, status, run_status", [
    (UsageError("bad flag"), 2, 125),
    (DrootError("failed"), 1, 125),
    (DrootError("failed", exit_status=7), 1, 125),
    (RunError("refused"), 1, 125),
    (CommandNotExecutable("not executable"), 1, 126),
    (CommandNotFound("not found"), 1, 127),
])
def test_exit_status_table(error, status, run_status):
    """The README's table: `run` and `exec` follow docker run, the others 2 and 1."""
    for command in COMMANDS:
        expected = run_status if command in ("run", "exec") else status
        assert exit_status(error, command) == expected, command
    assert exit_status(error, None) == status  # no command recognised


@pytest.mark.parametrize("argv, status, message", [
    (["frobnicate"], 2, "droot: argument COMMAND: invalid choice: 'frobnicate'"),
    ([], 2, "droot: the following arguments are required: COMMAND"),
    (["deploy", "--keep", "-1", "--root", "/r"], 2,
     "droot: --keep '-1': expected a number of releases (0 keeps all)"),
    (["deploy"], 2, "droot: deploy: the following arguments are required: -r/--root/-d/--dest"),
    (["rm", "--root", "/r", "--frob"], 2, "droot: rm: unrecognized arguments: --frob"),
    (["pull", "--root", "/r"], 2, "droot: pull: give a source: droot pull s3://BUCKET/KEY"),
    (["pull", "s3://b/k"], 2, "droot: pull: give the target directory: --root DIR"),
    (["push", "img"], 2, "droot: push: give a destination"),
    (["unit", "--root", "/r", "--allow-missing-root", "--memory", "12XB"], 2,
     "droot: --memory '12XB'"),
    (["run"], 125, "droot: run: the following arguments are required: -r/--root"),
    (["run", "--root", "/r", "--frob"], 125, "droot: run: unrecognized arguments: --frob"),
    (["exec", "--", "/bin/sh"], 125, "droot: exec: one of the arguments -r/--root --pid is"),
    (["--debug", "exec", "--pid", "x"], 125, "droot: exec: argument --pid: invalid int"),
])
def test_usage_errors_are_one_line_with_their_status(argv, status, message, capsys,
                                                    sigterm_kept):
    assert main(argv) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_failure_that_is_not_usage_is_1(tmp_path, capsys, sigterm_kept):
    assert main(["releases", "--root", str(tmp_path / "app")]) == 1
    assert capsys.readouterr().err == f"droot: {tmp_path / 'app'} has no releases " \
        "(not deployed yet?)\n"


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser(None).parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"droot {__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(command, "--help")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: droot {command} ")
    # every option the command takes is listed in its help
    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        for flag in action.option_strings:
            if action.help != "==SUPPRESS==":
                assert flag in text, (command, flag)


# --- main(): debug, signals -----------------------------------------------------------------

@pytest.mark.parametrize("argv, environment, traceback", [
    (["releases", "--root", "APP"], None, False),
    (["--debug", "releases", "--root", "APP"], None, True),
    (["releases", "--root", "APP", "--debug"], None, True),
    (["releases", "--root", "APP"], "1", True),
    (["releases", "--root", "APP"], "0", False),
    (["releases", "--root", "APP"], "", False),
])
def test_debug_adds_the_traceback(argv, environment, traceback, tmp_path, capsys,
                                  monkeypatch, sigterm_kept):
    if environment is None:
        monkeypatch.delenv("DROOT_DEBUG", raising=False)
    else:
        monkeypatch.setenv("DROOT_DEBUG", environment)
    app = str(tmp_path / "app")
    assert main([app if arg == "APP" else arg for arg in argv]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"droot: {app} has no releases (not deployed yet?)\n")
    assert err.startswith("Traceback (most recent call last):\n") is traceback, err
    assert ("DrootError: " in err) is traceback


def test_sigterm_is_handled_by_every_command_but_run_and_exec(tmp_path, capsys, sigterm_kept):
    """Not `run` and `exec`: they become the app, or forward signals to it."""
    import signal

    from droot.cli import raise_terminated
    for argv in (["run", "--root"], ["exec"]):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        main(argv)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, argv
    for argv in (["releases", "--root", str(tmp_path)], ["frobnicate"]):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        main(argv)
        assert signal.getsignal(signal.SIGTERM) == raise_terminated, argv


def test_sigterm_and_ctrl_c_are_143_and_130_with_one_line(tmp_path, capsys, sigterm_kept):
    """A real signal while `droot rm` waits for the deploy lock this test holds."""
    import fcntl
    import importlib
    import os
    import signal
    import threading

    from droot.cli import raise_terminated
    importlib.import_module("droot.deploy.deploy")  # now, not while the timer runs
    # Installed before main() does, so that no signal finds the default (which would end
    # the test process) however slow the start.
    signal.signal(signal.SIGTERM, raise_terminated)
    releases = tmp_path / "app.releases"
    releases.mkdir(mode=0o700)
    with open(releases / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for signum, status, word in ((signal.SIGTERM, 143, "terminated"),
                                     (signal.SIGINT, 130, "interrupted")):
            timer = threading.Timer(0.5, os.kill, (os.getpid(), signum))
            timer.start()
            try:
                assert main(["rm", "--root", str(tmp_path / "app")]) == status
            finally:
                timer.join()
            err = capsys.readouterr().err
            assert err.endswith(f"droot: {word}\n") and "Traceback" not in err, err


def test_the_help_lists_every_command_with_its_summary(capsys):
    with pytest.raises(SystemExit):
        build_parser(None).parse_args(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: droot ")
    assert "Chroot-based application containers: build with Docker, export, ship through" \
        in text
    listed = [line.split(None, 1) for line in text.splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert {name: summary for name, summary in listed} == \
        {name: summary for name, (_, summary) in COMMANDS.items()}
    assert "show a traceback on errors (also DROOT_DEBUG=1)" in text


def test_a_command_that_succeeds_is_0(capsys, monkeypatch, sigterm_kept):
    import json
    import sys
    assert main(["ps", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    monkeypatch.setattr(sys, "argv", ["droot", "ps", "--json"])  # main() reads sys.argv
    assert main() == 0 and isinstance(json.loads(capsys.readouterr().out), list)


def test_a_reader_that_went_away_is_141_and_quiet(tmp_path, capsys, monkeypatch,
                                                 sigterm_kept):
    """`droot releases … | head -0`: the pipe's reader is gone before droot writes."""
    import io
    import os
    import sys
    (tmp_path / "app").mkdir()
    (tmp_path / "app.releases").mkdir(mode=0o700)
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = io.TextIOWrapper(io.FileIO(write_end, "w"), line_buffering=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["releases", "--root", str(tmp_path / "app")]) == 141
    finally:
        monkeypatch.undo()
        try:
            stdout.close()  # what was not written is dropped with the pipe
        except BrokenPipeError:
            pass
    assert capsys.readouterr().err == ""
