"""`droot umount --root DIR`: undo the mounts an older run (or the original droot) left.

A run of this droot leaves none: its mounts live in its own mount namespace. This reads
the host's mount table and unmounts everything strictly below DIR, deepest first.

Which directory that is, is decided once, through descriptors, and never by following a
symlink that droot did not make. DIR itself is opened with O_NOFOLLOW; the one symlink
accepted in its place is the release symlink a deploy makes (`DIR -> DIR.releases/RELEASE`,
relative), followed step by step without following anything else, because that is where a
run of DIR made its mounts. Any other symlink is refused rather than resolved: resolving
it and refusing only `/` would still let whoever can plant a symlink at DIR send the
unmounting to any other tree of host mounts (/home, /var/lib/docker). A DIR whose real
path is `/` is refused: everything would be below it.

Each mount is then reached from that directory's descriptor one component at a time with
O_NOFOLLOW (the app may have turned a directory on the way into a symlink since the table
was read), checked to be the very mount the table listed (its mount ID), and unmounted
through the descriptor: a mount that moved or changed is left alone.
"""

import errno
import os
import stat

from droot.core.errors import DrootError
from droot.core.releasename import release_of_link, releases_dir_name
from droot.core import kernel, mountinfo

_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_step(name: str, dir_fd: int, *, directory: bool) -> int:
    return os.open(name, _STEP | (os.O_DIRECTORY if directory else 0), dir_fd=dir_fd)


def open_root(root: str) -> tuple[int, str]:
    """An O_PATH descriptor of the directory to unmount below, and its real path."""
    path = os.path.abspath(root)
    parent, name = os.path.split(path)
    if not name:
        raise DrootError(f"--root {root} is the filesystem root: unmounting everything below "
                         "it would unmount every host mount; refusing")
    try:
        parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise DrootError(f"root {root} is not a directory ({parent}: {error.strerror})") from None
    try:
        try:
            info = os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            raise DrootError(f"root {root} does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            fd = _open_release(root, name, parent_fd)
        elif stat.S_ISDIR(info.st_mode):
            fd = _open_step(name, parent_fd, directory=True)
        else:
            raise DrootError(f"root {root} is not a directory")
    except OSError as error:  # changed while droot looked at it
        raise DrootError(f"cannot open root {root}: {error.strerror}") from None
    finally:
        os.close(parent_fd)
    real = os.readlink(f"/proc/self/fd/{fd}")
    if real == "/":
        os.close(fd)
        raise DrootError(f"--root {root} resolves to /: unmounting everything below it would "
                         "unmount every host mount; refusing")
    return fd, real


def _open_release(root: str, name: str, parent_fd: int) -> int:
    """The release that the symlink `name` points at, if it is a deploy's release symlink:
    ROOT.releases and the release opened with O_NOFOLLOW, from the parent."""
    target = os.readlink(name, dir_fd=parent_fd)
    release = release_of_link(name, target)
    if release is None:
        raise DrootError(f"root {root} is a symlink to {target}, not a droot release symlink; "
                         "refusing to follow it (give the directory itself)")
    try:
        releases_fd = _open_step(releases_dir_name(name), parent_fd, directory=True)
    except OSError:
        raise DrootError(f"root {root} points at {target}, but {releases_dir_name(name)} is "
                         "not a real directory; refusing to follow it") from None
    try:
        return _open_step(release, releases_fd, directory=True)
    except OSError:
        raise DrootError(f"root {root} points at {target}, which is not a real directory; "
                         "refusing to follow it") from None
    finally:
        os.close(releases_fd)


def _mount_id(fd: int) -> int | None:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return None


def _open_below(root_fd: int, relative: str) -> int | None:
    """The mount point `relative` below the root, component by component, following no
    symlink; None when it is gone or the path now crosses a symlink."""
    fd = os.dup(root_fd)
    try:
        parts = relative.split("/")
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            step = _open_step(part, fd, directory=not last)
            os.close(fd)
            fd = step
        if stat.S_ISLNK(os.fstat(fd).st_mode):  # nothing is mounted on a symlink
            os.close(fd)
            return None
        return fd
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def unmount_below(root: str) -> list[str]:
    """Unmount every mount below `root`, deepest (and latest) first; the paths done."""
    root_fd, real = open_root(root)
    try:
        table = mountinfo.read()
        prefix = real.rstrip("/") + "/"
        below = [(index, mount) for index, mount in enumerate(table)
                 if mount.point.startswith(prefix)]
        # The deepest paths first and, at one path, the latest mount (the one on top).
        below.sort(key=lambda pair: (pair[1].point.count("/"), pair[0]), reverse=True)
        done = []
        for _, mount in below:
            fd = _open_below(root_fd, mount.point[len(prefix):])
            if fd is None:
                continue  # went with a mount above it, or no longer where the table said
            try:
                if _mount_id(fd) != mount.mount_id:
                    continue  # another mount is there now (it went by propagation, or moved)
                # The magic link is the mount itself: no path is resolved again.
                kernel.umount2(f"/proc/self/fd/{fd}", kernel.MNT_DETACH)
            except OSError as error:
                if error.errno in (errno.EINVAL, errno.ENOENT):
                    continue
                raise DrootError(f"cannot unmount {mount.point}: {error.strerror}") from None
            finally:
                os.close(fd)
            done.append(mount.point)
        return done
    finally:
        os.close(root_fd)
