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


def unit_arguments(parser):
    parser.description = ("Print a systemd service unit that runs 'droot run' with these "
                          "arguments (Type=exec, KillMode=mixed, Restart=on-failure; the "
                          "limits become MemoryMax=, CPUQuota= and TasksMax=).")
    parser.add_argument("--description", help="the unit's Description=")
    parser.add_argument("--allow-missing-root", action="store_true",
                        help="write the unit although DIR does not exist yet (before the "
                        "first deploy)")
    from droot.run.cli import run_arguments
    run_arguments(parser)


def unit(args) -> int:
    from droot.ops import unit as units
    from droot.run import cgroups
    limits = dict(
        memory=cgroups.parse_memory(args.memory) if args.memory else None,
        cpus=cgroups.parse_cpus(args.cpus) if args.cpus else None,
        pids=cgroups.parse_pids(args.pids_limit) if args.pids_limit else None)
    units.check_root(args.root, args.allow_missing_root)
    text = units.render(
        units.droot_path(), units.run_tokens(sys.argv), args.root, args.description, **limits)
    sys.stdout.write(text)
    return 0
