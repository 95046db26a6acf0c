"""`droot unit`: a systemd service unit that runs an app with `droot run`, and with
`--listen` a socket unit beside it.

- Type=exec: systemd reports the start as failed if droot cannot be executed, and the
  main PID is droot's, which becomes the app's (droot execs it in place), so systemd's
  SIGTERM reaches the app itself and the app's exit status is the service's result.
  `--notify`: Type=notify, the start done when the app says READY=1; NotifyAccess=main
  accepts only the main PID, the app's (under --pid the app is a child: all).
- KillMode=mixed: SIGTERM to the app only (it decides how to stop its children), SIGKILL
  to whatever is left in the unit's cgroup once it has exited or TimeoutStopSec passed.
- Restart=on-failure, except for droot's own "cannot execute"/"not found" statuses
  (126, 127), which no restart fixes.
- --memory/--cpus/--pids-limit become MemoryMax=, CPUQuota= and TasksMax=: systemd owns the
  unit's cgroup, and droot must not move the app out of it (systemd would lose track of it).
- `--listen ADDR`: NAME.socket holds the listening sockets, so a restart refuses no
  connection; systemd passes them as LISTEN_FDS, which droot hands to the app.
- SyslogIdentifier=NAME, LogExtraFields= DROOT_ROOT and DROOT_RELEASE (the release the root
  points at when the unit is written): `journalctl DROOT_RELEASE=…` shows one release's lines.

Arguments are quoted by systemd's rules for ExecStart= (double quotes with C escapes,
`%` doubled against specifier expansion, `$` doubled against variable expansion).
"""

import os
import re
import sys
from dataclasses import dataclass, field

from droot.core.errors import DrootError, UsageError
from droot.core.releasename import release_of_link
from droot.ops.cli import UNIT_OPTIONS
from droot.run.cgroups import format_size
from droot.run.cli import RUN_OPTIONS

# Flags taken out of the run line: the unit's own, and the limits (systemd directives).
REMOVED_FLAGS = (*(flag for flags, *_ in UNIT_OPTIONS for flag in flags),
                 "--memory", "--cpus", "--pids-limit", "--debug")
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.-]{1,200}")
SECONDS = re.compile(r"\d+(\.\d+)?")
_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(word: str, variables: bool = True) -> str:
    """One ExecStart= word that systemd reads back as exactly `word` (`variables`: `$` is
    doubled, as ExecStart= expands variables and other settings do not)."""
    word = word.replace("%", "%%")
    if variables:
        word = word.replace("$", "$$")
    if _BARE.fullmatch(word):
        return word
    out = []
    for char in word:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7f:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def run_tokens(argv: list[str]) -> list[str]:
    """The `droot run` arguments in a `droot unit` command line: what follows `unit`,
    without REMOVED_FLAGS. argparse has already accepted the line; this reads it with the
    run options' table to know which flags take a value (abbreviations included)."""
    takes_value = {flag: kind != "flag" for flags, _, kind, _, _ in RUN_OPTIONS + UNIT_OPTIONS
                   for flag in flags}
    takes_value["--debug"] = False
    rest = argv[argv.index("unit") + 1:]
    tokens, index = [], 0
    while index < len(rest):
        token = rest[index]
        if token == "--" or not token.startswith("-") or token == "-":
            tokens += rest[index:]  # the command and its arguments, untouched
            break
        name, equals, _ = token.partition("=")
        if name not in takes_value and name.startswith("--"):
            name = next(flag for flag in takes_value if flag.startswith(name))
        elif name not in takes_value:  # a short flag with its value attached: -uapp
            name = token[:2]
            equals = equals or len(token) > 2
        words = rest[index:index + (2 if takes_value[name] and not equals else 1)]
        if name not in REMOVED_FLAGS:
            tokens += words
        index += len(words)
    return tokens


def check_root(root: str, allow_missing: bool):
    """A unit runs with / as its working directory and starts at every boot: its root
    must be an absolute path, and one that exists (unless the operator writes the unit
    before the first deploy, and says so)."""
    if not os.path.isabs(root):
        raise UsageError(f"--root {root}: give an absolute path (systemd runs the unit from /)")
    if os.path.isdir(root) or (allow_missing and not os.path.exists(root)):
        return
    if os.path.exists(root):
        raise DrootError(f"--root {root} is not a directory")
    what = "is a symlink to a missing directory" if os.path.islink(root) else "does not exist"
    raise DrootError(f"--root {root} {what}: deploy the app first, or pass "
                     "--allow-missing-root to write the unit before the first deploy")


def checked_name(name: str | None, root: str) -> str:
    """The units' name: `--name`, else the root's last component (/srv/shop → shop) with
    what a unit name cannot hold escaped as systemd-escape does (`my app` → my\\x20app)."""
    if name is not None:
        if not UNIT_NAME.fullmatch(name):
            raise UsageError(f"--name {name!r} is not a unit name (letters, digits, ':', "
                             "'_', '.', '-')")
        return name
    base = os.path.basename(root.rstrip("/"))
    escaped = "".join(char if UNIT_NAME.fullmatch(char) else "".join(
        f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogateescape")) for char in base)
    if not base or len(escaped) > 200:
        raise UsageError(f"cannot name the units after the root {root}: give --name")
    return escaped


def checked_listen(address: str) -> str:
    """A ListenStream= value, which systemd takes as the whole rest of the line: nothing
    that could end it or start another setting."""
    if not address.strip() or address != address.strip() or \
            any(ord(char) < 0x20 or ord(char) == 0x7f for char in address):
        raise UsageError(f"--listen {address!r}: give a port, IP:PORT, [IPv6]:PORT or an "
                         "absolute socket path")
    return address


def checked_watchdog(value: str | None) -> str | None:
    if value is not None and not (SECONDS.fullmatch(value) and float(value) > 0):
        raise UsageError(f"--watchdog {value!r}: give a number of seconds greater than 0")
    return value


def current_release(root: str) -> str | None:
    """The release the root links to, when it is a root `droot deploy` made."""
    try:
        target = os.readlink(root)
    except OSError:  # a plain directory (--mode rsync), or not there yet
        return None
    return release_of_link(os.path.basename(root.rstrip("/")), target)


@dataclass
class Service:
    name: str
    root: str
    exec_start: list[str]
    description: str | None = None
    listen: list[str] = field(default_factory=list)
    notify: bool = False
    watchdog: str | None = None
    pid_namespace: bool = False
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None


def render(service: Service) -> list[tuple[str, str]]:
    """The unit files, (file name, text): NAME.service, then NAME.socket with --listen."""
    socket_unit = f"{service.name}.socket"
    description = service.description or f"droot app {service.root}"
    unit = [
        "[Unit]",
        f"Description={description}",
        f"RequiresMountsFor={quote(service.root, variables=False)}",
        "After=network-online.target" + (f" {socket_unit}" if service.listen else ""),
        "Wants=network-online.target",
    ]
    if service.listen:
        unit.append(f"Requires={socket_unit}")
    unit += ["", "[Service]", f"Type={'notify' if service.notify else 'exec'}"]
    if service.notify or service.watchdog:
        unit.append(f"NotifyAccess={'all' if service.pid_namespace else 'main'}")
    if service.watchdog:
        unit.append(f"WatchdogSec={service.watchdog}")
    unit += [
        f"ExecStart={' '.join(quote(word) for word in service.exec_start)}",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "RestartPreventExitStatus=126 127",
        f"SyslogIdentifier={service.name}",
        f"LogExtraFields={log_fields(service.root)}",
    ]
    if service.memory is not None:
        unit += [f"MemoryMax={format_size(service.memory)}", "MemorySwapMax=0"]
    if service.cpus is not None:
        unit.append(f"CPUQuota={round(service.cpus * 100)}%")
    if service.pids is not None:
        unit.append(f"TasksMax={service.pids}")
    unit += ["", "[Install]", "WantedBy=multi-user.target"]
    if service.listen:
        unit.append(f"Also={socket_unit}")
    files = [(f"{service.name}.service", "\n".join(unit) + "\n")]
    if service.listen:
        sockets = ["[Unit]", f"Description={description}: its listening sockets", "",
                   "[Socket]"]
        sockets += [f"ListenStream={address.replace('%', '%%')}" for address in service.listen]
        sockets += ["", "[Install]", "WantedBy=sockets.target"]
        files.append((socket_unit, "\n".join(sockets) + "\n"))
    return files


def log_fields(root: str) -> str:
    """LogExtraFields= words: the root, and its release when deploy made it."""
    fields = [f"DROOT_ROOT={root}"]
    release = current_release(root)
    if release:
        fields.append(f"DROOT_RELEASE={release}")
    return " ".join(quote(word, variables=False) for word in fields)


def write(files: list[tuple[str, str]], directory: str) -> list[str]:
    """Each file into `directory` (mode 0644), replacing one there in one rename: systemd
    never reads half a unit."""
    written = []
    for name, text in files:
        path = os.path.join(directory, name)
        temporary = os.path.join(directory, f".{name}.droot-{os.getpid()}")
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), 0o644)
                file.write(text)
            os.replace(temporary, path)
        except OSError as error:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise DrootError(f"cannot write {path}: {error.strerror}") from None
        written.append(path)
    return written


def droot_command() -> list[str]:
    """How the unit runs this droot: its launcher's absolute path. Under `python -m droot`
    (argv[0] is droot/__main__.py, which cannot be executed) the launcher installed next
    to the interpreter, else the interpreter with -m."""
    program = os.path.abspath(sys.argv[0])
    if os.path.basename(program) != "__main__.py":
        return [program]
    launcher = os.path.join(os.path.dirname(sys.executable), "droot")
    if os.access(launcher, os.X_OK):
        return [launcher]
    return [sys.executable, "-m", "droot"]
