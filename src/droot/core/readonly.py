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

A root or bind source that shows a release's directory through another mount of it
(`mount --bind REL/srv /mnt/srv`) never passes the mark on its path:
release_behind_mounts finds the release from the directory's path in its filesystem.

Imported by `droot run`: the standard library and droot.core only.
"""

import errno
import os
import stat

from droot.core import kernel, mountinfo

MARK = "trusted.droot.read-only"
_DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


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


def release_holding(descriptor: int) -> str | None:
    """The path here of the read-only release that the entry open as `descriptor` lies
    in, or None. Found by walking up its directories with ".." from the descriptor
    (a file's: from the directory it was opened in, checked to still hold it), so no name
    of the path it was opened by is looked up again: a name swapped on that path since
    changes nothing. OSError when the file moved meanwhile."""
    if stat.S_ISDIR(os.fstat(descriptor).st_mode):
        current = os.open(".", _DIRECTORY, dir_fd=descriptor)
    else:
        opened_at = os.readlink(f"/proc/self/fd/{descriptor}")  # the kernel's: no symlink
        current = kernel.openat2(kernel.AT_FDCWD, os.path.dirname(opened_at), _DIRECTORY,
                                 0, kernel.RESOLVE_NO_SYMLINKS)  # nor one swapped in since
        if not os.path.samestat(os.fstat(descriptor), os.stat(
                os.path.basename(opened_at), dir_fd=current, follow_symlinks=False)):
            os.close(current)
            raise OSError(errno.ESTALE, "it moved while droot looked at it")
    try:
        while True:
            try:  # the magic link followed: that inode (an O_PATH descriptor has no xattrs)
                os.getxattr(f"/proc/self/fd/{current}", MARK)
                return os.readlink(f"/proc/self/fd/{current}")
            except OSError as error:
                if error.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                    raise
            parent = os.open("..", _DIRECTORY, dir_fd=current)
            if os.path.samestat(os.fstat(parent), os.fstat(current)):  # "/": the top
                os.close(parent)
                return None
            os.close(current)
            current = parent
    finally:
        os.close(current)


def release_behind_mounts(path: str, mounts: list[mountinfo.Mount]) -> str | None:
    """A read-only release that `path`, or a mount below it, shows part of when the
    release's own directory is not on the way there: another mount of a directory of a
    release (`mount --bind REL/srv /mnt/srv`) starts below the mark, which
    split_at_release looks for on the path. Found from each directory's path in its
    filesystem (mountinfo), through a mount that shows the release's directory; that
    directory's path here, or None (also when no mount here shows it). Mounts are told
    apart by their IDs, not by paths or device numbers: a covered mount, or a btrfs
    subvolume's own st_dev, would otherwise hide the release."""
    # the mounts of each filesystem directory: (device, root) -> mounts
    showing: dict[tuple[str, str], list[mountinfo.Mount]] = {}
    for mount in mounts:
        showing.setdefault((mount.device, mount.root.rstrip("/") or "/"), []).append(mount)
    looked: dict[tuple[str, str], str | None] = {}
    for number, (mount, inside) in enumerate(mountinfo.shown_by(path, mounts)):
        if number == 0 and mount.root == "/":
            continue  # it shows every directory above `path`: split_at_release looked
        directory = inside.rstrip("/") or "/"
        while True:
            key = (mount.device, directory)
            if key not in looked:
                looked[key] = _marked_here(mount.device, directory, showing)
            if looked[key]:
                return looked[key]
            if directory == "/":
                break
            directory = os.path.dirname(directory)
    return None


def _marked_here(device: str, directory: str, showing: dict) -> str | None:
    """The path here of `directory` of the filesystem on `device` when it carries the
    mark, looked at through the first mount that shows it (a mount of it or of a
    directory above it, per `showing`) and can be reached: from its mount point, not
    covered by another mount, with no symlink or mount on the way below it."""
    above = directory
    while True:
        for mount in showing.get((device, above), ()):
            below = directory[len(above):].strip("/")
            try:
                point = os.open(mount.point, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if mountinfo.mount_id(point) != mount.mount_id:
                    continue  # covered: the name leads to another mount
                found = kernel.openat2(point, below or ".", os.O_PATH | os.O_DIRECTORY, 0,
                                       kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS
                                       | kernel.RESOLVE_NO_XDEV)
            except OSError:  # not there, or not ours to look at: another mount may show it
                continue
            finally:
                os.close(point)
            try:  # the magic link followed: that inode (an O_PATH descriptor has no xattrs)
                os.getxattr(f"/proc/self/fd/{found}", MARK)
                return os.path.join(mount.point, below) if below else mount.point
            except OSError:  # no mark (ENODATA), or none to be had: not a release
                return None
            finally:
                os.close(found)
        if above == "/":
            return None
        above = os.path.dirname(above)
