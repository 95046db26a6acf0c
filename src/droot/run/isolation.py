"""The opt-in isolation of `droot run`: namespaces (`--pid`, `--net none`, `--hostname NAME`,
`--userns`) and resource limits (`--memory`, `--cpus`, `--pids-limit`).

By default droot shares the host's network, hostname, PIDs and users and sets no limit, as
the original did (the IPC namespace is private by default: droot.run.runner); each option here adds one piece around the same run. Except
for --pid, none adds a process between the supervisor and the app: droot unshares more
namespaces of its own process (never clone(2)) and still execs the app in place.

`Isolation` holds the options and hooks them into the run (droot.run.runner), in order:

    validate (before anything is made) → prepare_host (cgroups, the user namespace)
    → [unshare(CLONE_NEWNS|CLONE_NEWIPC)] → enter_namespaces (net/uts, --pid's fork, the cgroups)
    → [chroot, mounts, files, user lookup] → enter_user_namespace
    → [capabilities, user, workdir] → before_exec (--pid: the init forks the app) → [exec]

Standard library only, imported by `droot run` only when one of these options is given.
"""

import os

from droot.core.errors import RunError, UsageError
from droot.core import kernel

CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Linux <net/if.h> and <linux/sockios.h>
_AF_INET, _SOCK_DGRAM = 2, 2
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def unshare(flags: int, what: str):
    """unshare(2); `what` names the option for the error line."""
    try:
        kernel.unshare(flags)
    except OSError as error:
        raise RunError(f"{what}: cannot create the namespace: {error.strerror}") from None


def parse_net(value: str) -> str:
    if value not in ("host", "none"):
        raise UsageError(f"--net {value!r}: use 'none' (loopback only) or 'host' (the "
                         "default)")
    return value


def parse_hostname(name: str) -> str:
    """A hostname the kernel accepts and resolvers understand (RFC 1123 labels)."""
    labels = name.split(".")
    if len(name) > 64 or not all(
            0 < len(label) < 64 and label.isascii() and label.replace("-", "").isalnum()
            and not label.startswith("-") and not label.endswith("-") for label in labels):
        raise UsageError(f"--hostname {name!r}: not a valid hostname (letters, digits, '-' "
                         "and '.', at most 64 characters)")
    return name


def namespace_flags(net: str = "host", hostname: str | None = None) -> int:
    flags = 0
    if net == "none":
        flags |= CLONE_NEWNET
    if hostname is not None:
        flags |= CLONE_NEWUTS
    return flags


def enter(net: str = "host", hostname: str | None = None):
    """Unshare the requested namespaces of this process and set them up: loopback up in a
    new network namespace, the hostname in a new UTS namespace."""
    flags = namespace_flags(net, hostname)
    if not flags:
        return
    names = [f for f, b in (("--net none", CLONE_NEWNET), ("--hostname", CLONE_NEWUTS))
             if flags & b]
    unshare(flags, ", ".join(names))
    if flags & CLONE_NEWNET:
        loopback_up()
    if hostname is not None:
        set_hostname(hostname)


def loopback_up():
    """`ip link set lo up` without needing `ip`: SIOCSIFFLAGS on a datagram socket (through
    the C library: the socket module would cost more to import than the call)."""
    try:
        ifreq = b"lo".ljust(40, b"\0")  # struct ifreq: the name, then the flags
        ifreq = kernel.socket_ioctl(_AF_INET, _SOCK_DGRAM, _SIOCGIFFLAGS, ifreq)
        flags = int.from_bytes(ifreq[16:18], "little") | _IFF_UP
        kernel.socket_ioctl(_AF_INET, _SOCK_DGRAM, _SIOCSIFFLAGS,
                            ifreq[:16] + flags.to_bytes(2, "little") + ifreq[18:])
    except OSError as error:
        raise RunError(f"--net none: cannot bring up the loopback interface: "
                       f"{error.strerror}") from None


def set_hostname(name: str):
    try:
        kernel.sethostname(name)
    except OSError as error:
        raise RunError(f"--hostname {name}: cannot set the hostname: {error.strerror}") \
            from None


class Isolation:
    """The opt-in namespaces and limits of one run (see the module doc for the order)."""

    def __init__(self, options, root: str):
        self.root = root
        self.pid = bool(options.pid)
        self.net = parse_net(options.net) if options.net else "host"
        self.hostname = parse_hostname(options.hostname) if options.hostname is not None \
            else None
        self.id_ranges = None
        if options.userns:
            from droot.run import userns
            self.id_ranges = userns.parse(options.userns)
        self.cgroups = None
        if options.memory or options.cpus or options.pids_limit:
            from droot.run import cgroups
            limits = cgroups.Limits(
                memory=cgroups.parse_memory(options.memory) if options.memory else None,
                cpus=cgroups.parse_cpus(options.cpus) if options.cpus else None,
                pids=cgroups.parse_pids(options.pids_limit) if options.pids_limit else None)
            # Named after the root as given (the link a deploy switches, not the release).
            self.cgroups = cgroups.AppCgroups(os.path.abspath(options.root), os.getpid(),
                                              limits)
        self.user_namespace = None
        self.keeper_starter = 0  # the keeper's intermediate child, until reaped

    def prepare_host(self):
        """Before the mount namespace: the cgroups (with their limits) and the user namespace."""
        if self.cgroups is not None:
            from droot.run import cgroups
            cgroups.sweep_stale()
            # The keeper first: whenever droot dies from here on, it removes what was made.
            self.keeper_starter = cgroups.start_keeper(self.cgroups, os.getpid())
            self.cgroups.create()
        if self.id_ranges is not None:
            from droot.run import userns
            try:
                self.user_namespace = userns.create(*self.id_ranges)
            except BaseException:
                if self.cgroups is not None:
                    self.cgroups.remove()
                raise

    def enter_namespaces(self):
        """In droot's private mount namespace, before chroot: the other namespaces, then
        --pid's relay/init split, and the app's place in its cgroups (under --pid the init
        joins them and the relay stays outside)."""
        if self.keeper_starter:
            os.waitpid(self.keeper_starter, 0)
        enter(self.net, self.hostname)
        if self.pid:
            from droot.run import pidinit
            pidinit.enter_pid_namespace(self.cgroups)  # returns in the namespace's init
        elif self.cgroups is not None:
            self.cgroups.join()

    def enter_user_namespace(self, user):
        """After the mounts and the files written as real root, before the user switch."""
        if self.user_namespace is not None:
            from droot.run import userns
            userns.check_covers(*self.id_ranges, user.uid, user.gid, user.groups)
            userns.enter(self.user_namespace)

    def before_exec(self):
        """Under --pid, the init forks the app here and stays to forward and reap."""
        if self.pid:
            from droot.run import pidinit
            pidinit.fork_app()
