"""A bare-bones run flow built from droot's isolation modules only, for testing them against
the real kernel without the rest of `droot run`: `python ops_module_runner.py --root ROOT
[--pid] [--net none] [--hostname H] [--ipc] [--userns R] [--memory M] [--cpus C]
[--pids-limit N] [--bind SRC:DST] -- CMD…`. The order of the steps is the one `droot run`
uses: cgroups and the user namespace before anything else, then the mount namespace, the
other namespaces, binds, chroot, /proc, the user namespace joined, the init forked, exec.
"""

import argparse
import os
import subprocess
import sys

from droot.run import cgroups, isolation, pidinit, userns

parser = argparse.ArgumentParser()
parser.add_argument("--root", required=True)
parser.add_argument("--pid", action="store_true")
parser.add_argument("--net", default="host")
parser.add_argument("--hostname")
parser.add_argument("--ipc", action="store_true")
parser.add_argument("--userns")
parser.add_argument("--memory")
parser.add_argument("--cpus")
parser.add_argument("--pids-limit")
parser.add_argument("--bind", action="append", default=[])
parser.add_argument("command", nargs=argparse.REMAINDER)
args = parser.parse_args()
command = args.command[1:] if args.command[:1] == ["--"] else args.command

app_cgroups = None
limits = cgroups.Limits(
    memory=cgroups.parse_memory(args.memory) if args.memory else None,
    cpus=cgroups.parse_cpus(args.cpus) if args.cpus else None,
    pids=cgroups.parse_pids(args.pids_limit) if args.pids_limit else None)
if limits.controllers():
    cgroups.sweep_stale()
    app_cgroups = cgroups.AppCgroups(args.root, os.getpid(), limits)
    app_cgroups.create()
user_namespace = userns.create(*userns.parse(args.userns)) if args.userns else None

isolation.unshare(isolation.CLONE_NEWNS, "mount namespace")
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
isolation.enter(args.net, args.hostname, args.ipc)
if args.pid:
    pidinit.enter_pid_namespace(app_cgroups)
elif app_cgroups:
    cgroups.start_keeper(app_cgroups, os.getpid())
    app_cgroups.join()
subprocess.run(["mount", "--rbind", "/dev", args.root + "/dev"], check=True)  # droot makes its own
for spec in args.bind:
    source, _, target = spec.partition(":")
    os.makedirs(args.root + target, exist_ok=True)
    subprocess.run(["mount", "--bind", source, args.root + target], check=True)
os.chroot(args.root)
os.chdir("/")
subprocess.run(["/bin/mount", "-t", "proc", "proc", "/proc"], check=True)
if user_namespace is not None:
    userns.enter(user_namespace)
if args.pid:
    pidinit.fork_app()
sys.stdout.flush()
os.execv(command[0], command)
