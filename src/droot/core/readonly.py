"""Read-only releases: the mark a deploy leaves, and how `droot run` finds it.

`droot deploy|pull --read-only` makes a release no app may change, so that the next
delta pull can hard-link its unchanged files into the new release instead of copying
them (droot.deploy.reuse): a hard link shares the inode, which is only safe when no
release can change another. The release directory carries the extended attribute
MARK; `droot run` on a root inside such a release mounts it read-only and confines
writes with Landlock to the places it makes writable (droot.run).

Why a `trusted.*` attribute: setting or removing one needs CAP_SYS_ADMIN, which an app
under `droot run` never has, and the release's own mount is read-only to it anyway. An
image that carries the attribute only makes itself read-only.

Imported by `droot run`: standard library only.
"""

import errno
import os

from droot.core import mountinfo

MARK = "trusted.droot.read-only"


def mark(directory_fd: int) -> None:
    """Mark the directory open as `directory_fd` (a release being made) read-only."""
    os.setxattr(directory_fd, MARK, b"1")


def is_marked(path) -> bool:
    """Whether the directory `path` carries the mark (not its parents)."""
    try:
        os.getxattr(path, MARK, follow_symlinks=False)
        return True
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOENT, errno.ENOTDIR):
            return False
        raise


def split_at_release(path: str) -> tuple[str, str] | None:
    """(the real path of the read-only release that the absolute `path` leads into, the
    rest of `path` below it), or None when it leads into none. `path` is resolved name by
    name as the kernel would, and stops at the release: the names above it are the
    host's (droot's `current` symlink among them), those below are the image's, whose
    symbolic links may aim anywhere on the host and must be resolved inside the release
    only (droot.run.rootfs.open_in_root)."""
    resolved, pending, links = "/", [part for part in path.split("/") if part], 0
    while True:
        if is_marked(resolved):
            return resolved, "/" + "/".join(pending)
        if not pending:
            return None
        name = pending.pop(0)
        if name in (".", ".."):
            resolved = os.path.dirname(resolved) if name == ".." else resolved
            continue
        candidate = os.path.join(resolved, name)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a symbolic link, or missing: the open decides
            resolved = candidate
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        resolved = "/" if target.startswith("/") else resolved
        pending[:0] = [part for part in target.split("/") if part]


def release_behind_mounts(path: str, mounts: list[mountinfo.Mount]) -> str | None:
    """A read-only release that the real `path`, or a mount below it, shows part of when
    the release's own directory is not on the way there: another mount of a directory of
    a release (`mount --bind REL/srv /mnt/srv`) starts below the mark, which
    split_at_release looks for on the path. Found from the directory's path in its
    filesystem (mountinfo), through a mount that shows the release's directory; the path
    of that directory here, or None (also when no mount here shows it)."""
    top = mountinfo.containing(path, mounts)
    # A mount of its filesystem's root shows every directory above `path`, which
    # split_at_release has looked at.
    shown = [(top, top.in_filesystem(path))] if top.root != "/" else []
    shown += [(mount, mount.root) for mount in mounts
              if mount is not top and mountinfo.within(path, mount.point)]
    for mount, inside in shown:
        directory = inside.rstrip("/") or "/"
        while True:
            release = _shown_marked(mount.device, directory, mounts)
            if release:
                return release
            if directory == "/":
                break
            directory = os.path.dirname(directory)
    return None


def _shown_marked(device: str, directory: str, mounts: list[mountinfo.Mount]) -> str | None:
    """The path here of `directory` of the filesystem on `device` (major:minor) when it
    carries the mark, through any mount that shows it and is not covered."""
    for mount in mounts:
        if mount.device != device or not mountinfo.within(mount.root, directory):
            continue
        below = directory[len(mount.root.rstrip("/")):].strip("/")
        here = os.path.join(mount.point, below) if below else mount.point
        if mountinfo.containing(here, mounts) is not mount:
            continue  # another mount covers it: the name leads elsewhere
        try:
            info = os.stat(here)
            if f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}" == device and is_marked(here):
                return here
        except OSError:  # gone, or not ours to look at: not a release found
            continue
    return None
