"""`droot unit`: a systemd service unit that runs an app with `droot run`.

- Type=exec: systemd reports the start as failed if droot cannot be executed, and the
  main PID is droot's, which becomes the app's (droot execs it in place), so systemd's
  SIGTERM reaches the app itself and the app's exit status is the service's result.
- KillMode=mixed: SIGTERM to the app only (it decides how to stop its children), SIGKILL
  to whatever is left in the unit's cgroup once it has exited or TimeoutStopSec passed.
- Restart=on-failure, except for droot's own "cannot execute"/"not found" statuses
  (126, 127), which no restart fixes.
- --memory/--cpus/--pids-limit become MemoryMax=, CPUQuota= and TasksMax=: systemd owns the
  unit's cgroup, and droot must not move the app out of it (systemd would lose track of it).

Arguments are quoted by systemd's rules for ExecStart= (double quotes with C escapes,
`%` doubled against specifier expansion, `$` doubled against variable expansion).
"""

import os
import re

from droot.run.cgroups import format_size

# Flags taken out of the run line: the unit's own, and the limits (systemd directives).
REMOVED_FLAGS = ("--description", "--allow-missing-root", "--memory", "--cpus", "--pids-limit",
                 "--debug")
_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(word: str) -> str:
    """One ExecStart= word that systemd reads back as exactly `word`."""
    word = word.replace("%", "%%").replace("$", "$$")
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
    from droot.run.cli import RUN_OPTIONS
    takes_value = {flag: kind != "flag" for flags, _, kind, _, _ in RUN_OPTIONS
                   for flag in flags}
    takes_value.update({"--description": True, "--allow-missing-root": False, "--debug": False})
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
    from droot.core.errors import DrootError, UsageError
    if not os.path.isabs(root):
        raise UsageError(f"--root {root}: give an absolute path (systemd runs the unit from /)")
    if os.path.isdir(root) or (allow_missing and not os.path.exists(root)):
        return
    if os.path.exists(root):
        raise DrootError(f"--root {root} is not a directory")
    what = "is a symlink to a missing directory" if os.path.islink(root) else "does not exist"
    raise DrootError(f"--root {root} {what}: deploy the app first, or pass "
                     "--allow-missing-root to write the unit before the first deploy")


def render(droot: str, tokens: list[str], root: str, description: str | None,
           memory: int | None, cpus: float | None, pids: int | None) -> str:
    exec_start = " ".join(quote(word) for word in [droot, "run", *tokens])
    lines = [
        "[Unit]",
        f"Description={description or f'droot app {root}'}",
        f"RequiresMountsFor={quote(root)}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "RestartPreventExitStatus=126 127",
    ]
    if memory is not None:
        lines += [f"MemoryMax={format_size(memory)}", "MemorySwapMax=0"]
    if cpus is not None:
        lines.append(f"CPUQuota={round(cpus * 100)}%")
    if pids is not None:
        lines.append(f"TasksMax={pids}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def droot_path() -> str:
    """The absolute path of the droot being run (a unit needs one)."""
    import sys
    return os.path.abspath(sys.argv[0])
