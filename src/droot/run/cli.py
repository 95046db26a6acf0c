"""The command line of `droot run` and `droot umount`.

`droot run` starts on every restart of every app, and argparse (with the `re`, `enum`
and `gettext` it imports) costs more here than the rest of the run. So the options live
in one table, RUN_OPTIONS: `run_arguments` builds the argparse parser from it (for
--help, abbreviations and error messages), and `parse_run_quickly` reads the plain
command lines that real use is made of with the same table and the same results, handing
anything else to argparse. Add a run option by adding a row to the table.
"""

# (flags, destination, kind, metavar, help); kind: "value" (one value, last one wins),
# "append" (repeatable, collected in a list), "flag" (true when given).
RUN_OPTIONS = (
    (("-r", "--root"), "root", "value", "DIR", "the root filesystem to run in (required)"),
    (("--cp", "-cp", "--copy-files"), "copy_files", "flag", None,
     "copy the host's /etc/passwd, /etc/group, /etc/resolv.conf and /etc/hosts into the root"),
    (("-u", "--user"), "user", "value", "USER[:GROUP]",
     "run as this user (name or number), looked up in the root's /etc/passwd"),
    (("-g", "--group"), "group", "value", "GROUP",
     "run with this primary group (name or number), looked up in the root's /etc/group"),
    (("-b", "--bind"), "bind", "append", "SRC[:DST]",
     "bind-mount the host's SRC at DST inside the root (DST created if missing; repeatable)"),
    (("--robind",), "robind", "append", "SRC[:DST]", "like --bind, but read-only (repeatable)"),
    (("--read-only",), "read_only", "flag", None,
     "mount the root read-only (always, for a release deployed with --read-only); the "
     "app writes only to --tmpfs, --bind, /dev and /proc"),
    (("--tmpfs",), "tmpfs", "append", "DST",
     "mount an empty tmpfs (mode 1777, nosuid, nodev) at DST inside the root, e.g. /tmp "
     "or /run beside --read-only (DST created if missing; repeatable)"),
    (("-e", "--env"), "env", "append", "NAME=VALUE",
     "set an environment variable (repeatable; wins over --env-file and /.drootenv)"),
    (("--env-file",), "env_file", "append", "FILE",
     "read NAME=VALUE lines from the host's FILE (repeatable; wins over /.drootenv)"),
    (("-w", "--workdir"), "workdir", "value", "DIR",
     "working directory inside the root (default: the image's, else /)"),
    (("--no-dropcaps",), "no_dropcaps", "flag", None,
     "keep all of droot's capabilities and skip the Landlock and seccomp confinement "
     "(unsafe: root inside can leave the chroot)"),
    (("--cap-add",), "cap_add", "append", "CAP",
     "keep this capability too, e.g. NET_RAW, or ALL (repeatable; for a non-root user it "
     "becomes an ambient capability)"),
    (("--cap-drop",), "cap_drop", "append", "CAP", "drop this capability too, or ALL (repeatable)"),
    (("--allow-new-privs",), "allow_new_privs", "flag", None,
     "do not set no_new_privs: setuid binaries and file capabilities in the root take effect"),
    (("--allow-syscall",), "allow_syscall", "append", "NAME",
     "let the app make this system call, which droot's seccomp filter denies (e.g. "
     "io_uring_setup, keyctl), or ALL for the whole list (repeatable)"),
    (("--share",), "share", "append", "WHAT",
     "share with the host what the app does not by default: ipc (System V IPC, POSIX "
     "queues), proc (every host process in /proc), signals (may signal host processes), "
     "abstract-sockets (may connect to the host's abstract unix sockets) (repeatable)"),
    (("--preserve-fds",), "preserve_fds", "value", "N",
     "pass descriptors 3..3+N-1 to the app, with the variables Server::Starter and einhorn "
     "describe them with (SERVER_STARTER_*, EINHORN_*); systemd's LISTEN_FDS sockets pass "
     "without it"),
    # Opt-in isolation and limits (droot.run.isolation, imported only when one is given).
    (("--pid",), "pid", "flag", None,
     "own PID namespace and /proc, under a minimal init that forwards signals and reaps; "
     "the only option that puts processes between the supervisor and the app (droot waits "
     "and exits as the app did)"),
    (("--net",), "net", "value", "none", "'none': own network namespace, loopback only "
     "(default: the host's network)"),
    (("--hostname",), "hostname", "value", "NAME", "own UTS namespace with this hostname"),
    (("--ipc",), "ipc", "flag", None,
     "own IPC namespace: the default now (see --share ipc), accepted for older command lines"),
    (("--userns",), "userns", "value", "USER|FIRST:COUNT",
     "own user namespace: ids 0..COUNT-1 inside are FIRST.. on the host, from USER's ranges "
     "in /etc/subuid and /etc/subgid or given"),
    (("--memory",), "memory", "value", "SIZE", "memory limit, e.g. 256M (OOM kill past it)"),
    (("--cpus",), "cpus", "value", "CPUS", "CPU quota in CPUs, e.g. 0.5 (throttled past it)"),
    (("--pids-limit",), "pids_limit", "value", "N", "at most N processes and threads"),
)

DEFAULTS = {"value": None, "flag": False}  # "append": a new empty list each time


def add_options(parser, table, required=()):
    """The argparse arguments of an options `table` (RUN_OPTIONS' shape); the
    destinations in `required` must be given."""
    for flags, dest, kind, metavar, help_text in table:
        if kind == "flag":
            parser.add_argument(*flags, dest=dest, action="store_true", help=help_text)
        else:
            parser.add_argument(*flags, dest=dest, metavar=metavar, help=help_text,
                                required=dest in required,
                                **({"action": "append", "default": []} if kind == "append" else {}))


def run_arguments(parser):
    import argparse
    add_options(parser, RUN_OPTIONS, required=("root",))
    parser.add_argument("app_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                        help="the command to run (default: the image's entrypoint and cmd)")


class RunOptions:
    """The parsed command line, as argparse's Namespace would hold it."""

    def __init__(self, **values):
        self.__dict__.update(values)


def parse_run_quickly(argv: list[str]) -> RunOptions | None:
    """The options of a plain `droot [--debug] run …` command line without argparse;
    None when argparse must decide (help, an abbreviation, `-uNAME`, a missing value, an
    unknown option, ...)."""
    by_flag = {flag: (dest, kind) for flags, dest, kind, _, _ in RUN_OPTIONS for flag in flags}
    values = {dest: [] if kind == "append" else DEFAULTS[kind]
              for _, dest, kind, _, _ in RUN_OPTIONS}
    values.update(app_argv=[], command="run", debug=False, handler=run)
    index = 0
    while index < len(argv) and argv[index] in ("-D", "--debug"):
        values["debug"] = True
        index += 1
    if index == len(argv) or argv[index] != "run":
        return None
    index += 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            values["app_argv"] = argv[index:]
            break
        if arg in ("-D", "--debug"):
            values["debug"] = True
            index += 1
            continue
        flag, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag not in by_flag:
            return None
        dest, kind = by_flag[flag]
        if kind == "flag":
            if equals:
                return None
            values[dest] = True
            index += 1
            continue
        if not equals:
            if index + 1 == len(argv) or argv[index + 1].startswith("-"):
                return None
            value = argv[index + 1]
            index += 1
        index += 1
        if kind == "append":
            values[dest].append(value)
        else:
            values[dest] = value
    if values["root"] is None:
        return None
    return RunOptions(**values)


def run(args) -> int:
    from droot.run.runner import run_container
    if args.app_argv[:1] == ["--"]:  # argparse keeps the `--` before a REMAINDER
        args.app_argv = args.app_argv[1:]
    run_container(args)
    return 125  # not reached: run_container execs the app or raises


def umount_arguments(parser):
    parser.add_argument("-r", "--root", required=True, metavar="DIR",
                        help="unmount everything mounted below DIR (deepest first)")


def umount(args) -> int:
    from droot.run.umount import unmount_below
    for path in unmount_below(args.root):
        print(f"unmounted {path}")
    return 0
