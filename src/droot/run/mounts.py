"""The mounts of a run: /proc, a read-only /sys, a minimal /dev, and the bind mounts.

All of them are made in droot's private mount namespace after chroot, so every path
is resolved inside the root (a symbolic link in the image cannot point a mount, or a
directory droot creates, at the host), and they all vanish with the namespace.
"""

import errno
import os

from droot.errors import RunError
from droot.run import kernel
from droot.run.kernel import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC

# The device nodes of the minimal /dev: name, major, minor (devices.txt). The original
# droot gave /dev/zero the numbers of /dev/null.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))

# What root without capabilities could still do through /proc and /sys, hidden the way
# other runtimes hide it. Writing a sysctl needs only uid 0 (kernel.core_pattern would
# run a program as full root on the host), /proc/sysrq-trigger can reboot the host.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
PROC_MASKED_DIRECTORIES = ("acpi", "scsi", "asound")

CHARACTER_DEVICE = 0o020000


def make_all_private() -> None:
    """Stop mount events from propagating to the host (or from it) in this namespace."""
    kernel.mount("none", "/", None, MS_REC | kernel.MS_PRIVATE)


def mount_point(path: str) -> str:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    return path


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None):
    try:
        kernel.mount(source, target, fstype, flags, data)
    except OSError as error:
        raise RunError(f"cannot mount {fstype or source} on {target} inside the root: "
                       f"{error.strerror}") from None


def bind_read_only(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND)
    mount("none", target, None, MS_BIND | kernel.MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
          | MS_NOEXEC)


def mount_proc() -> None:
    mount("proc", mount_point("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev() -> None:
    """A tmpfs with the usual device nodes, its own devpts instance and a /dev/shm."""
    mount("tmpfs", mount_point("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name, major, minor in DEVICES:
        os.mknod(f"/dev/{name}", CHARACTER_DEVICE | 0o666, os.makedev(major, minor))
    for name, target in DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    mount("devpts", mount_point("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.mkdir("/dev/shm", 0o1777)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")


def mask_proc() -> None:
    """Read-only binds over the writable kernel knobs, /dev/null over kernel internals
    (needs /dev), empty read-only tmpfs over whole directories."""
    for name in PROC_READ_ONLY:
        path = f"/proc/{name}"
        if os.path.exists(path):
            bind_read_only(path, path)
    for name in PROC_MASKED_FILES:
        path = f"/proc/{name}"
        if os.path.exists(path):
            mount("/dev/null", path, None, MS_BIND)
    for name in PROC_MASKED_DIRECTORIES:
        if os.path.isdir(f"/proc/{name}"):
            hide_directory(f"/proc/{name}")


def hide_directory(path: str) -> None:
    mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")


def mount_sys() -> None:
    """A fresh sysfs, read-only: no write under /sys reaches the kernel. The firmware's
    tables (ACPI, memory map) are hidden."""
    mount("sysfs", mount_point("/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if os.path.isdir("/sys/firmware"):
        hide_directory("/sys/firmware")


class BindMount:
    """`-b/--bind` or `--robind SRC[:DST]`: checked before anything is mounted, opened
    in droot's mount namespace before chroot (the kernel binds only mounts of the
    caller's namespace), mounted through /proc/self/fd after it."""

    def __init__(self, spec: str, read_only: bool):
        flag = "--robind" if read_only else "--bind"
        source, _, target = spec.partition(":")
        if not source or ":" in target or (target and not target.startswith("/")):
            raise RunError(f"malformed {flag} {spec!r}: expected SRC[:DST] with an absolute DST")
        self.source = os.path.abspath(source)
        self.target = os.path.normpath(target or self.source)
        self.read_only, self.flag = read_only, flag
        if not os.path.exists(self.source):
            raise RunError(f"{flag} source {self.source} does not exist on the host")
        self.descriptor = -1

    def open(self) -> None:
        try:
            self.descriptor = os.open(self.source, os.O_PATH | os.O_CLOEXEC)
        except OSError as error:
            raise RunError(f"cannot open {self.flag} source {self.source}: "
                           f"{error.strerror}") from None
        self.is_directory = os.path.isdir(f"/proc/self/fd/{self.descriptor}")

    def mount(self) -> None:
        """Create the target inside the root if missing, bind, then make it read-only
        with every mount below it when asked (a write then fails inside)."""
        target = self.target
        try:
            if self.is_directory:
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as error:
            raise RunError(f"cannot create the bind target {target} inside the root: "
                           f"{error.strerror}") from None
        try:
            kernel.mount(f"/proc/self/fd/{self.descriptor}", target, None, MS_BIND | MS_REC)
        except OSError as error:
            raise RunError(f"cannot bind {self.source} on {target} inside the root: "
                           f"{error.strerror}") from None
        if self.read_only:
            try:
                kernel.make_tree_read_only(target)
            except OSError as error:
                if error.errno != errno.ENOSYS:
                    raise RunError(f"cannot make {target} read-only: {error.strerror}") from None
                mount("none", target, None, MS_BIND | kernel.MS_REMOUNT | MS_RDONLY)
        os.close(self.descriptor)
