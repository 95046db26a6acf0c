"""The mounts of a run: /proc, a read-only /sys, a minimal /dev, and the bind mounts.

All of them are attached in droot's private mount namespace after chroot, and they all
vanish with the namespace (a bind's copy is cloned before unshare, detached, from the
descriptor its source was checked through). The bind targets, named by the image, are opened (and made)
inside the root before /proc exists (droot.run.rootfs), and the binds are attached to
those descriptors: no path the image controls is resolved once /proc is there.
"""

import errno
import os
import stat
import sys

from droot.core.errors import RunError
from droot.core import kernel, mountinfo, readonly
from droot.run import rootfs
from droot.core.kernel import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC

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


def forbid_image_devices(root: str, root_descriptor: int) -> list[int] | None:
    """Device nodes in the image (an archive can carry one for the host's disk) open
    nothing: droot's copies of the mount holding the root and of every mount below the
    root are made `nodev`, in droot's namespace only (the host's mounts keep their flags),
    one by one: not the host's whole tree, which on a busy host is hundreds of mounts on
    every start. Called after the binds are cloned, which keep theirs; droot's own /dev is
    mounted later. (The root is not bound onto itself to get a mount of its own: Landlock
    would take a file opened by handle through that bind for one beneath the root.)
    Returns descriptors of those mounts for make_read_only (None: this kernel cannot)."""
    mounts = mountinfo.read()
    # The mount the root (open as `root_descriptor`, the directory droot enters) is on, by
    # its ID: not the longest mount point of `root`, which a covered mount fools; and
    # still at `root` once its mounts are read, or those below it would be missed.
    top = mountinfo.mount_id(root_descriptor)
    holding = [mount for mount in mounts if mount.mount_id == top]
    if not holding:
        raise RunError(f"root {root} is on a mount outside droot's mount namespace: "
                       "give a path of the host")
    if os.readlink(f"/proc/self/fd/{root_descriptor}") != root:
        raise RunError(f"root {root} moved or was removed while droot was starting: run it "
                       "again")
    below = root.rstrip("/") + "/"
    points = [holding[0].point]
    points += [mount.point for mount in mounts if mount.point.startswith(below)]
    descriptors = []
    for number, point in enumerate(points):
        try:
            descriptor = os.open(point, os.O_PATH | os.O_CLOEXEC)
            descriptors.append(descriptor)
            if number == 0 and mountinfo.mount_id(descriptor) != top:
                raise RunError(f"cannot make the root's device nodes inert: {point} leads "
                               "to another mount than the root's (covered?)")
            kernel.set_mount_attributes(descriptor, kernel.MOUNT_ATTR_NODEV, recursive=False)
        except OSError as error:
            if error.errno != errno.ENOSYS:
                raise RunError(f"cannot make the root's device nodes inert (nodev on "
                               f"{point}): {error.strerror}") from None
            print("droot: warning: this kernel has no mount_setattr(2) (Linux < 5.12): "
                  "device nodes in the image are not made inert", file=sys.stderr)
            return None
    return descriptors


def make_read_only(root_mounts: list[int] | None) -> None:
    """Make the mounts forbid_image_devices returned read-only, in droot's namespace:
    after the image's files droot writes, before any mount of its own (which keep their
    flags). The mount holding the root is read-only to the app as a whole, which reaches
    only the root of it."""
    if root_mounts is None:
        raise RunError("cannot mount the root read-only: this kernel has no "
                       "mount_setattr(2) (Linux < 5.12)")
    for descriptor in root_mounts:
        try:
            kernel.set_mount_attributes(descriptor, kernel.MOUNT_ATTR_RDONLY, recursive=False)
        except OSError as error:
            raise RunError(f"cannot mount the root read-only: {error.strerror}") from None


class TmpfsMount:
    """`--tmpfs DST`: an empty tmpfs at DST inside the root, its target opened (and made)
    like a bind's, before /proc exists, and the new mount attached to that descriptor.
    `tree` stays open: the Landlock rule for the mount is made from it, not by a path
    the image could lead elsewhere once /proc exists."""

    def __init__(self, target: str):
        self.target = os.path.normpath("/" + target.lstrip("/"))
        if not target.startswith("/") or self.target == "/":
            raise RunError(f"--tmpfs {target!r}: expected an absolute directory inside the "
                           "root, other than /")
        self.tree = self.target_descriptor = -1

    def open_target(self) -> None:
        try:
            self.target_descriptor = rootfs.make_directories(self.target)
            made, root = os.fstat(self.target_descriptor), os.stat("/")
        except OSError as error:
            raise RunError(f"cannot create the --tmpfs target {self.target} inside the root: "
                           f"{error.strerror}") from None
        if (made.st_dev, made.st_ino) == (root.st_dev, root.st_ino):  # the image's link to /
            raise RunError(f"--tmpfs {self.target} is the root itself inside (a symbolic "
                           "link to /?): a tmpfs there would be out of the app's sight")

    def mount(self) -> None:
        try:
            self.tree = kernel.new_mount("tmpfs", {"mode": "1777"},
                                         kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV)
            kernel.move_mount_to(self.tree, self.target_descriptor)
        except OSError as error:
            raise RunError(f"cannot mount a tmpfs on {self.target} inside the root: "
                           f"{error.strerror}") from None
        os.close(self.target_descriptor)


def make_mount_points() -> None:
    """/proc, /dev and /sys as real directories of the image (made 0755 if missing),
    checked before /proc exists: through a symbolic link there, droot's mounts and the
    device nodes it makes would land wherever the image likes, a magic link included.
    (Once mounted, a running app cannot rename or replace them: they are mount points.)"""
    for path in ("/proc", "/dev", "/sys"):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise RunError(f"the image's {path} is not a directory (a symbolic link?): droot "
                           f"mounts its own {path} there; remove it from the image")


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


def mount_proc(hide_other_processes: bool) -> None:
    """/proc; with `hide_other_processes`, a /proc of this run's own that lists only the
    processes the app may ptrace: with Landlock, only its own. Per-mount options need
    Linux 5.8 (before, every /proc of a PID namespace shares them, so the host's too)."""
    options = None
    if hide_other_processes and kernel_at_least(5, 8):
        options = "hidepid=ptraceable"
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)


def kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def mount_dev() -> None:
    """A tmpfs with the usual device nodes, its own devpts instance and a /dev/shm."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name, major, minor in DEVICES:
        os.mknod(f"/dev/{name}", CHARACTER_DEVICE | 0o666, os.makedev(major, minor))
    for name, target in DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/pts", 0o755)
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
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
    mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if os.path.isdir("/sys/firmware"):
        hide_directory("/sys/firmware")


def bind_releases_read_only(binds: list["BindMount"], table: list) -> None:
    """Bind read-only each writable bind whose source, or a mount below it, shows a
    directory of a read-only release through another mount of it (`mount --bind REL/srv
    /mnt/srv`), as one whose path leads into a release is (BindMount): the same files.
    `table`: droot's mounts (mountinfo)."""
    for bind in [bind for bind in binds if not bind.read_only]:
        release = readonly.release_behind_mounts(bind.pinned_path, table)
        if release:
            bind.read_only = True
            print(f"droot: warning: {bind.flag} {bind.source} shows the read-only release "
                  f"{release} through another mount of it: bound read-only", file=sys.stderr)


def refuse_sources_off_namespace(binds: list["BindMount"], table: list) -> None:
    """Refuse a bind whose source is on a mount droot's namespace does not list (a
    detached tree another process holds, mountinfo.is_listed): no check would find a
    release's directory mounted in it. `table`: read after the sources were opened."""
    for bind in binds:
        if not mountinfo.is_listed(bind.pinned, table):
            raise RunError(f"{bind.flag} source {bind.source} is on a mount outside droot's "
                           "mount namespace (a detached mount tree?): bind a path of the host")


class BindMount:
    """`-b/--bind` or `--robind SRC[:DST]`: its source resolved once, when it is made
    (`pinned`); checked through that descriptor; cloned from it in droot's mount
    namespace before unshare (open_tree, Linux 5.2+); its target opened inside the root
    before /proc exists, and the clone attached to that descriptor after."""

    def __init__(self, source: str, target: str, read_only: bool, flag: str):
        """The host's absolute `source` at the absolute `target` inside; `flag` names the
        bind in error lines."""
        self.source, self.target, self.read_only, self.flag = source, target, read_only, flag
        self.tree = self.target_descriptor = -1
        # A source in a read-only release is bound read-only (its files may be another
        # release's too), and resolved inside the release: the image's symlinks there
        # would otherwise lead the bind to any host directory.
        try:
            self.in_release = readonly.split_at_release(source)
        except OSError as error:  # a symlink loop, a directory droot may not search
            raise RunError(f"{flag} source {source}: {error.strerror}") from None
        # Every check, and the clone, look at this descriptor through its magic link, never
        # at the source's path again: a host user who swaps a name on that path (a
        # directory for a symlink into a release) after this changes nothing droot binds.
        if self.in_release:
            self.read_only = True
            self.pinned = self._open_in_release()
        else:
            try:
                self.pinned = os.open(source, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                raise RunError(f"{flag} source {source} does not exist on the host") from None
            except OSError as error:
                raise RunError(f"{flag} source {source}: {error.strerror}") from None
            if not self.read_only:  # a --robind is read-only whatever it shows
                self._bind_release_read_only()
        self.read_only_after_mount = False  # Linux < 5.12: no mount_setattr(2)

    @property
    def pinned_path(self) -> str:
        return f"/proc/self/fd/{self.pinned}"

    def _bind_release_read_only(self) -> None:
        """Read-only if what was opened lies in a read-only release after all: its path
        led elsewhere when split_at_release looked, and was changed before the open."""
        try:
            release = readonly.release_holding(self.pinned)
        except OSError as error:
            raise RunError(f"{self.flag} source {self.source}: {error.strerror}") from None
        if release:
            self.read_only = True
            print(f"droot: warning: {self.flag} {self.source} now leads into the read-only "
                  f"release {release}: bound read-only", file=sys.stderr)

    @classmethod
    def of_option(cls, spec: str, read_only: bool) -> "BindMount":
        """`--bind` or `--robind SRC[:DST]` (DST defaults to SRC)."""
        flag = "--robind" if read_only else "--bind"
        source, _, target = spec.partition(":")
        if not source or ":" in target or (target and not target.startswith("/")):
            raise RunError(f"malformed {flag} {spec!r}: expected SRC[:DST] with an absolute DST")
        source = os.path.abspath(source)
        return cls(source, os.path.normpath(target or source), read_only, flag)

    def clone(self) -> None:
        """A detached copy of the source and every mount below it, read-only if asked;
        made before unshare, where the pinned descriptor's mount is (open_tree clones
        only from the caller's own mount namespace)."""
        try:
            self.tree = kernel.open_tree(self.pinned_path,
                                         kernel.OPEN_TREE_CLONE | kernel.AT_RECURSIVE)
        except OSError as error:
            hint = " (needs Linux 5.2 or later)" if error.errno == errno.ENOSYS else ""
            raise RunError(f"cannot open {self.flag} source {self.source}: "
                           f"{error.strerror}{hint}") from None
        finally:
            os.close(self.pinned)
            self.pinned = -1
        self.is_directory = os.path.isdir(f"/proc/self/fd/{self.tree}")
        if self.read_only:
            try:
                kernel.set_mount_attributes(self.tree, kernel.MOUNT_ATTR_RDONLY)
            except OSError as error:
                if error.errno != errno.ENOSYS:
                    raise RunError(f"cannot make {self.source} read-only: "
                                   f"{error.strerror}") from None
                self.read_only_after_mount = True

    def _open_in_release(self) -> int:
        """An O_PATH descriptor of the source resolved inside its read-only release."""
        release, rest = self.in_release
        try:
            return rootfs.open_in_root(rest, os.O_PATH, root=release)
        except OSError as error:
            raise RunError(f"{self.flag} source {self.source}: cannot open {rest} inside the "
                           f"read-only release {release}: {error.strerror}") from None

    def open_target(self) -> None:
        """The target inside the root, created if missing (a directory 0755, an empty file
        0644); called after chroot, before /proc is mounted."""
        try:
            make = rootfs.make_directories if self.is_directory else rootfs.make_file
            self.target_descriptor = make(self.target)
        except OSError as error:
            raise RunError(f"cannot create the {self.flag} target {self.target} inside the "
                           f"root: {error.strerror}") from None

    def mount(self) -> None:
        try:
            kernel.move_mount_to(self.tree, self.target_descriptor)
        except OSError as error:
            raise RunError(f"cannot bind {self.source} on {self.target} inside the root: "
                           f"{error.strerror}") from None
        # Cloned in the host's namespace, it is a peer of the source if that is shared:
        # made private, as every other mount of the run, so no mount event crosses.
        mount("none", f"/proc/self/fd/{self.tree}", None, MS_REC | kernel.MS_PRIVATE)
        if self.read_only_after_mount:  # this mount only, not those below it
            mount("none", f"/proc/self/fd/{self.tree}", None,
                  MS_BIND | kernel.MS_REMOUNT | MS_RDONLY)
        os.close(self.target_descriptor)  # the tree stays open: see TmpfsMount
