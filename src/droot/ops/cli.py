"""The day-2 commands: `droot ps`, `droot exec`, `droot unit` (arguments only; each
command imports its implementation when it runs)."""

import argparse
import sys


def ps_arguments(parser):
    parser.description = ("List the apps running from droot roots on this host, found from "
                          "/proc and the cgroups (no state file): PID (the one the supervisor "
                          "started), root, release, user, uptime, resident memory and CPU use "
                          "(share of one CPU over its lifetime).")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")


def ps(args) -> int:
    from droot.ops.ps import ps as list_apps
    return list_apps(args.json, sys.stdout.write)


def exec_arguments(parser):
    parser.description = ("Run COMMAND inside a running app's environment: its cgroups, mount "
                          "and other namespaces, root, working directory and environment, as "
                          "its user, with no capability the app lacks.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-r", "--root", metavar="DIR", help="the app running from DIR")
    target.add_argument("--pid", type=int, metavar="PID",
                        help="the app that process PID belongs to (see 'droot ps')")
    parser.add_argument("-u", "--user", metavar="USER[:GROUP]",
                        help="run as USER from the app's /etc/passwd (default: the app's user)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                        help="set an environment variable (repeatable)")
    parser.add_argument("-w", "--workdir", metavar="DIR",
                        help="working directory inside (default: the app's)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                        help="the command to run (default: /bin/sh)")


def exec(args) -> int:  # noqa: A001 - the command's name
    from droot.ops.execute import run
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run(args.root, args.pid, args.user, args.env, args.workdir, command or ["/bin/sh"])


# `droot unit`'s own options, beside the run options (taken out of the run line):
# (flags, destination, kind, metavar, help) as in droot.run.cli.RUN_OPTIONS.
UNIT_OPTIONS = (
    (("--name",), "name", "value", "NAME",
     "the units' name and their SyslogIdentifier= (default: the root's last component)"),
    (("--description",), "description", "value", "TEXT", "the service's Description="),
    (("--allow-missing-root",), "allow_missing_root", "flag", None,
     "write the unit although DIR does not exist yet (before the first deploy)"),
    (("--listen",), "listen", "append", "ADDR",
     "add a NAME.socket unit with ListenStream=ADDR (a port, IP:PORT, [IPv6]:PORT or a "
     "path), so systemd holds the socket across restarts and passes it as LISTEN_FDS "
     "(repeatable)"),
    (("--notify",), "notify", "flag", None,
     "Type=notify: the start completes when the app sends READY=1 to $NOTIFY_SOCKET"),
    (("--watchdog",), "watchdog", "value", "SECONDS",
     "WatchdogSec=: systemd restarts the app when it sends no WATCHDOG=1 for that long"),
    (("-o", "--output"), "output", "value", "DIR",
     "write NAME.service (and NAME.socket) into DIR instead of printing them"),
)


def unit_arguments(parser):
    parser.description = ("Print a systemd service unit (and with --listen its socket unit) "
                          "that runs 'droot run' with these arguments (Type=exec, "
                          "KillMode=mixed, Restart=on-failure; the limits become MemoryMax=, "
                          "CPUQuota= and TasksMax=; logs tagged with the app and its release).")
    from droot.run.cli import add_options, run_arguments
    add_options(parser, UNIT_OPTIONS)
    run_arguments(parser)


def unit(args) -> int:
    from droot.ops import unit as units
    from droot.run import cgroups
    limits = dict(
        memory=cgroups.parse_memory(args.memory) if args.memory else None,
        cpus=cgroups.parse_cpus(args.cpus) if args.cpus else None,
        pids=cgroups.parse_pids(args.pids_limit) if args.pids_limit else None)
    units.check_root(args.root, args.allow_missing_root)
    service = units.Service(
        name=units.checked_name(args.name, args.root), root=args.root,
        exec_start=[*units.droot_command(), "run", *units.run_tokens(sys.argv)],
        description=args.description, listen=[units.checked_listen(a) for a in args.listen],
        notify=args.notify, watchdog=units.checked_watchdog(args.watchdog),
        pid_namespace=args.pid, **limits)
    files = units.render(service)
    if args.output:
        for path in units.write(files, args.output):
            print(f"wrote {path}")
    else:
        sys.stdout.write("\n".join(f"# /etc/systemd/system/{name}\n{text}"
                                   for name, text in files))
    return 0
