"""Which release directories a running process still uses: a `droot run` has chroot(2)ed
into its release (its root points there) and bind-mounted things into it, maybe in a
mount namespace of its own; a shell may sit in it (its cwd). Such a release is never
pruned or removed."""

import os
from pathlib import Path

from droot.core import mountinfo


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _mountinfo(pid: str):
    """(mount root within its filesystem, mount point, device) of each mount of `pid`."""
    try:
        mounts = mountinfo.read(pid)
    except OSError:
        return []
    return [(mount.root, mount.point, mount.device) for mount in mounts]


def _filesystem_path(directory: str) -> tuple[str, str] | None:
    """The device (major:minor) holding `directory` and its path inside that filesystem,
    which is how a bind mount of it shows in any mount namespace's mountinfo."""
    best = None
    for root, mount_point, device in _mountinfo("self"):
        if _inside(directory, mount_point.rstrip("/") or "/") or mount_point == "/":
            if best is None or len(mount_point) >= len(best[1]):
                best = (root, mount_point, device)
    if best is None:
        return None
    root, mount_point, device = best
    rest = directory[len(mount_point.rstrip("/")):] if mount_point != "/" else directory
    return device, (root.rstrip("/") + rest) or "/"


def in_use(directories) -> dict[Path, int]:
    """The directories (absolute, real paths) used by some process: {directory: pid}."""
    targets = {str(Path(directory).resolve()): Path(directory) for directory in directories}
    if not targets:
        return {}
    by_filesystem = {path: _filesystem_path(path) for path in targets}
    used: dict[Path, int] = {}

    def mark(path: str, pid: str):
        for target, original in targets.items():
            if original not in used and _inside(path, target):
                used[original] = int(pid)

    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        root = _readlink(f"/proc/{pid}/root")
        for link in (root, _readlink(f"/proc/{pid}/cwd")):
            if link:
                mark(link, pid)
        process_root = "" if root in (None, "/") else root
        for mount_root, mount_point, device in _mountinfo(pid):
            # A mount point inside the release, as seen from the process's own root ...
            mark(process_root + mount_point, pid)
            # ... or a bind mount of (part of) the release, wherever it is mounted.
            for target, original in targets.items():
                place = by_filesystem[target]
                if (original not in used and place and device == place[0]
                        and place[1] != "/" and _inside(mount_root, place[1])):
                    used[original] = int(pid)
    return used
