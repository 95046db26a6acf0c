"""Which capabilities the app keeps, and how every capability set is cut down to them.

The original droot only trimmed the bounding set, so a root app kept its other sets.
Here the kept capabilities are the only ones in the bounding, permitted, effective,
inheritable and ambient sets, and a non-root app keeps none unless `--cap-add` asks.
"""

import errno

from droot.core.errors import RunError
from droot.core import kernel

# Index = capability number (linux/capability.h).
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

# What a root app keeps by default: enough to manage its own files and switch users,
# nothing that reaches past the chroot (no SYS_CHROOT, SYS_ADMIN, MKNOD, NET_RAW, ...).
# Not DAC_READ_SEARCH: its open_by_handle_at(2) opens any inode of a filesystem the root
# shares with the host, from the filesystem's root down ("Shocker"). DAC_OVERRIDE already
# lets root read and search whatever it can reach.
DEFAULT_ROOT_KEEP = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID",
                     "NET_BIND_SERVICE")


def capability_number(name: str) -> int | None:
    """The number of a capability named `NET_RAW`, `cap_net_raw` or `CAP_NET_RAW`;
    None for `ALL`."""
    upper = name.strip().upper().removeprefix("CAP_")
    if upper == "ALL":
        return None
    try:
        return NAMES.index(upper)
    except ValueError:
        raise RunError(f"unknown capability {name!r} (see capabilities(7), e.g. NET_RAW)") \
            from None


def kept_capabilities(root_user: bool, add: list[str], drop: list[str]) -> set[int]:
    """The capability numbers the app keeps: the default set for root, none for another
    user, then `--cap-add` and `--cap-drop` (drop wins; `ALL` means every capability)."""
    keep = {NAMES.index(name) for name in DEFAULT_ROOT_KEEP} if root_user else set()
    for name in add:
        number = capability_number(name)
        keep |= set(range(len(NAMES))) if number is None else {number}
    for name in drop:
        number = capability_number(name)
        keep -= set(range(len(NAMES))) if number is None else {number}
    return keep


def trim_bounding_set(keep: set[int]) -> None:
    """Drop every other capability from the bounding set (needs CAP_SETPCAP, so it runs
    while droot still has all of them). Numbers past those this kernel knows end it."""
    number = 0
    while True:
        if number not in keep:
            try:
                kernel.prctl(kernel.PR_CAPBSET_DROP, number)
            except OSError as error:
                if error.errno == errno.EINVAL:
                    return
                raise
        number += 1


def limit_process_to(keep: set[int]) -> None:
    """Make `keep` the permitted, effective, inheritable and ambient sets. After a switch
    to another user this needs PR_SET_KEEPCAPS set before the switch."""
    mask = 0
    for number in keep:
        mask |= 1 << number
    kernel.capset(mask, mask, mask)
    kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_CLEAR_ALL)
    for number in sorted(keep):
        kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_RAISE, number)
