"""`droot umount --root DIR`: undo the mounts an older run (or the original droot) left.

A run of this droot leaves none: its mounts live in its own mount namespace. This reads
the host's mount table and unmounts everything strictly below DIR, deepest first.
"""

import errno
import os
import re

from droot.errors import DrootError
from droot.run import kernel


def mount_points(mountinfo: str) -> list[str]:
    """The mount points listed in /proc/self/mountinfo text (octal escapes decoded)."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
    return points


def unmount_below(root: str) -> list[str]:
    """Unmount every mount below `root`, deepest (and latest) first; the paths done."""
    if not os.path.isdir(root):
        raise DrootError(f"root {root} is not a directory")
    root = os.path.realpath(root)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        points = mount_points(file.read())
    below = [point for point in points if point.startswith(root.rstrip("/") + "/")]
    # The deepest paths first; a path listed twice (mounts stacked) is unmounted twice.
    ordered = sorted(below, key=lambda point: point.count("/"), reverse=True)
    done = []
    for point in ordered:
        try:
            kernel.umount2(point, kernel.MNT_DETACH | kernel.UMOUNT_NOFOLLOW)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.ENOENT):
                continue  # went with a mount above it
            raise DrootError(f"cannot unmount {point}: {error.strerror}") from None
        done.append(point)
    return done
