"""The kernel's mount table of a process (/proc/PID/mountinfo), parsed in this one place
for every stage. Standard library only, and no `re`: `droot run` reads it on every start."""

import os


class Mount:
    """One line of mountinfo: its ID, the directory of its filesystem it shows (`root`),
    where (`point`), the device, the filesystem type, the superblock's options, and
    whether the mount itself is read-only."""

    __slots__ = ("mount_id", "root", "point", "device", "fstype", "super_options",
                 "read_only")

    def __init__(self, mount_id: int, root: str, point: str, device: str, fstype: str,
                 super_options: str, read_only: bool = False):
        self.mount_id, self.root, self.point, self.device = mount_id, root, point, device
        self.fstype, self.super_options, self.read_only = fstype, super_options, read_only

    def in_filesystem(self, path: str) -> str:
        """`path` (absolute, resolved, on this mount) as a path of the mount's filesystem."""
        below = path[len(self.point):] if self.point != "/" else path
        return self.root.rstrip("/") + "/" + below.strip("/")


def decode(field: str) -> str:
    """A mountinfo field with its octal escapes (space, tab, newline, backslash) undone."""
    parts = field.split("\\")
    decoded = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 3 and all(c in "01234567" for c in part[:3]):
            decoded.append(chr(int(part[:3], 8)) + part[3:])
        else:
            decoded.append("\\" + part)
    return "".join(decoded)


def parse(text: str) -> list[Mount]:
    """The mounts listed in mountinfo text, in its order (malformed lines left out)."""
    found = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)  # after the optional fields
            found.append(Mount(int(fields[0]), decode(fields[3]), decode(fields[4]),
                               fields[2], fields[separator + 1], fields[separator + 3],
                               "ro" in fields[5].split(",")))
        except (ValueError, IndexError):
            continue
    return found


def read(pid: int | str = "self") -> list[Mount]:
    """The mounts process `pid` sees (OSError when it is gone)."""
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return parse(file.read())


def within(directory: str, path: str) -> bool:
    """Whether `path` is `directory` or below it (both absolute and resolved, or both
    paths of one filesystem)."""
    directory, path = directory.rstrip("/"), path.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def containing(path: str, mounts: list[Mount]) -> Mount:
    """The mount that `path` (absolute, resolved) lies on: the last one listed (the top of
    a stack) among those whose mount point is the longest ancestor of `path`."""
    candidates = [mount for mount in mounts if within(mount.point, path)]
    longest = max(len(mount.point) for mount in candidates)
    return [mount for mount in candidates if len(mount.point) == longest][-1]


def mount_id(descriptor: int) -> int:
    """The ID of the mount that the open `descriptor` is on (as mountinfo lists it)."""
    with open(f"/proc/self/fdinfo/{descriptor}", "rb") as info:
        return int(info.read().split(b"mnt_id:", 1)[1].split()[0])


def is_listed(descriptor: int, mounts: list[Mount]) -> bool:
    """Whether the mount that the open `descriptor` is on is one of `mounts` (read while
    the descriptor was open: an ID is unique among the mounts alive, and an open
    descriptor keeps its mount alive). Not listed: a mount of another namespace, or of a
    detached tree (open_tree, fsmount) that some process holds, reached through
    /proc/PID/fd/N, where walking up with ".." stops at the tree's root."""
    return mount_id(descriptor) in {mount.mount_id for mount in mounts}


def shown_by(path: str, mounts: list[Mount]) -> list[tuple[Mount, str]]:
    """What a recursive bind of `path` shows: first the mount it resolves onto (told by
    its ID, not by the longest mount point, which a covered or moved mount would fool)
    with the path of `path` in that mount's filesystem, then each mount below `path` with
    its own root; (mount, path in its filesystem) each. Empty when `path` cannot be
    opened."""
    try:
        source = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        real, top = os.readlink(f"/proc/self/fd/{source}"), mount_id(source)
    finally:
        os.close(source)
    shown = [(mount, mount.in_filesystem(real)) for mount in mounts if mount.mount_id == top]
    return shown + [(mount, mount.root) for mount in mounts if mount.mount_id != top
                    and within(real, mount.point) and mount.point != real.rstrip("/")]
