"""Opt-in namespaces for `droot run`: `--net none`, `--hostname NAME`, `--ipc` (and the
unshare/setns calls that `--pid`, `--userns` and `droot exec` share).

By default droot shares the host's network, hostname, IPC and PIDs, as the original did;
each option here unshares one more namespace of droot's own process (never clone(2): the
PID stays the one the supervisor started).

Standard library only, imported by `droot run` only when one of these options is given.
"""

import ctypes
import os
import re

from droot.errors import RunError, UsageError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)

# Linux <net/if.h> and <linux/sockios.h>
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def unshare(flags: int, what: str):
    """unshare(2); `what` names the option for the error line."""
    if _libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise RunError(f"{what}: cannot create the namespace: {os.strerror(error)}")


def setns(fd: int, nstype: int = 0):
    if _libc.setns(fd, nstype) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def parse_net(value: str) -> str:
    if value not in ("host", "none"):
        raise UsageError(f"--net {value!r}: use 'none' (loopback only) or 'host' (the "
                         "default)", 125)
    return value


def parse_hostname(name: str) -> str:
    """A hostname the kernel accepts and resolvers understand (RFC 1123 labels)."""
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if len(name) > 64 or not re.fullmatch(rf"{label}(\.{label})*", name):
        raise UsageError(f"--hostname {name!r}: not a valid hostname (letters, digits, '-' "
                         "and '.', at most 64 characters)", 125)
    return name


def namespace_flags(net: str = "host", hostname: str | None = None, ipc: bool = False) -> int:
    flags = 0
    if net == "none":
        flags |= CLONE_NEWNET
    if hostname is not None:
        flags |= CLONE_NEWUTS
    if ipc:
        flags |= CLONE_NEWIPC
    return flags


def enter(net: str = "host", hostname: str | None = None, ipc: bool = False):
    """Unshare the requested namespaces of this process and set them up: loopback up in a
    new network namespace, the hostname in a new UTS namespace."""
    flags = namespace_flags(net, hostname, ipc)
    if not flags:
        return
    names = [f for f, b in (("--net none", CLONE_NEWNET), ("--hostname", CLONE_NEWUTS),
                            ("--ipc", CLONE_NEWIPC)) if flags & b]
    unshare(flags, ", ".join(names))
    if flags & CLONE_NEWNET:
        loopback_up()
    if hostname is not None:
        import socket
        socket.sethostname(hostname)


def loopback_up():
    """`ip link set lo up` without needing `ip`: SIOCSIFFLAGS on a datagram socket."""
    import fcntl
    import socket
    import struct
    ifreq = "16sH22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack(ifreq, fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack(ifreq, b"lo", 0)))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(ifreq, b"lo", flags | _IFF_UP))
