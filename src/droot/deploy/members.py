"""Unpack a tar stream into the current root directory, exactly as the archive says:
owners (numeric ids), modes (setuid included), times, xattrs (file capabilities), hard
links, symlinks as written (absolute ones too), device nodes and FIFOs.

This runs in the extraction child that chroot(2)ed into the new release (pipeline.py), so
the kernel resolves every path inside the release: `..`, absolute names, and symlinks or
hard links aiming elsewhere cannot reach anything outside it. On top of that, each member
replaces whatever the archive planted at its name before (O_EXCL after unlink), so a file
is never written *through* an earlier symlink or device node, and names with `..` are
refused outright: a real root filesystem never has them.

Headers are read by droot's one tar codec (droot.core.tarformat), as export reads them: POSIX
ustar and pax (path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*), GNU long
names/links and base-256 numbers, which covers docker export, Go's archive/tar, GNU tar,
bsdtar and Python's tarfile. Paths stay bytes end to end (no decoding). Every error is
one line naming the member.
"""

import errno
import os
import stat

from droot.core.removetree import DIRECTORY_FLAGS, remove_tree
from droot.core.tarformat import (BLOCK, BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK,
                             REGULAR_TYPES, SYMLINK, HeaderReader, TarFormatError, show)

CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Set with the directory's time, when the stream leaves it: a default ACL would change the
# modes of all that is created below its directory afterwards.
DEFAULT_ACL = b"system.posix_acl_default"
ACL_XATTRS = (DEFAULT_ACL, b"system.posix_acl_access")
MAX_WARNINGS = 10
PATH_MAX = 4096  # Linux's: a longer path fails with ENAMETOOLONG, whatever it names


class ArchiveError(TarFormatError):
    """The archive is malformed, truncated, or asks for something refused."""


class LocalChanged(OSError):
    """A file of this host that a member's data was to come from (droot.deploy.reuse) is
    gone or no longer holds the planned bytes: the pull can be made again, reading the
    kept releases instead of trusting their record."""


class Stats:
    def __init__(self):
        self.files = self.directories = self.symlinks = self.hardlinks = 0
        self.devices = self.skipped_devices = self.bytes = 0
        self.linked = 0  # files hard-linked into a read-only release (reuse.py)

    def as_dict(self) -> dict:
        return dict(vars(self))


class Input:
    """The tar stream, as the chunks of bytes that `next_chunk()` returns (b"" at its end).
    Headers are sliced out of the current chunk and file data is written to disk straight
    from it: one copy per byte, the kernel's, and a few Python calls per member."""

    def __init__(self, next_chunk):
        self._next_chunk = next_chunk
        self._bytes = b""  # the current chunk, which headers are sliced from
        self._chunk = memoryview(b"")  # the same, which file data is written from
        self._pos = 0

    def _refill(self):
        chunk = self._next_chunk()
        if not chunk:
            raise ArchiveError("the archive is truncated")
        self._bytes, self._chunk, self._pos = chunk, memoryview(chunk), 0

    def read(self, size: int) -> bytes:
        end = self._pos + size
        if end <= len(self._bytes):
            data = self._bytes[self._pos:end]
            self._pos = end
            return data
        parts = []
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            n = min(len(self._chunk) - self._pos, size)
            parts.append(self._chunk[self._pos:self._pos + n])
            self._pos += n
            size -= n
        return b"".join(parts)

    def skip(self, size: int):
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            n = min(len(self._chunk) - self._pos, size)
            self._pos += n
            size -= n

    def copy_to(self, fd: int, size: int, padding: int = 0):
        """Write the next `size` bytes to `fd`, then skip `padding` more."""
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            n = min(len(self._chunk) - self._pos, size)
            n = os.write(fd, self._chunk[self._pos:self._pos + n])
            self._pos += n
            size -= n
        if self._pos + padding <= len(self._chunk):
            self._pos += padding
        else:
            self.skip(padding)

    def drain(self):
        """Read what follows the end of the archive (padding), so the writer finishes."""
        self._bytes, self._chunk, self._pos = b"", memoryview(b""), 0
        while self._next_chunk():
            pass


def _remove(path: bytes):
    """Make room for a member: whatever an earlier member left at `path` goes (a
    directory only when the new member is not one)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        remove_tree(path)
    else:
        os.unlink(path)


def _deepest_existing(path: bytes) -> tuple[bytes, os.stat_result]:
    """The longest leading part of `path` that exists (b"" for the root), as the kernel
    resolves it to make what is below (following symlinks), and its stat. A binary
    search: a part exists only if every shorter one does, and each stat walks the whole
    part, so a walk up a path of thousands of levels would take their square."""
    parts = path.split(b"/") if path else []
    found, info = 0, os.stat(b".")
    missing = len(parts) + 1  # the fewest parts known not to exist
    while missing - found > 1:
        middle = (found + missing) // 2
        try:
            info, found = os.stat(b"/".join(parts[:middle])), middle
        except OSError:
            missing = middle
    return b"/".join(parts[:found]), info


def _make_parents(path: bytes):
    """Create the missing parent directories of `path`, each 0755: they have no entry of
    their own (yet), and nothing droot makes up may be writable by others. Each is made
    in the one above by descriptor, not by its whole path (linear time in the depth)."""
    if len(path) >= PATH_MAX:
        # Made by descriptor, parents could go deeper than any path the kernel takes.
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    parent = path.rpartition(b"/")[0]
    existing, info = _deepest_existing(parent)
    if not stat.S_ISDIR(info.st_mode):
        raise _no_parent(path)
    if existing == parent:
        return
    names = parent[len(existing):].lstrip(b"/").split(b"/")
    # The nearest existing one is opened as the kernel resolves it; those made here
    # follow no symlink.
    fd = os.open(existing or b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:  # a dangling symlink: its target does not exist
                raise _no_parent(path) from None
            below = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
    finally:
        os.close(fd)


def _no_parent(path: bytes) -> ArchiveError:
    problem = _parent_problem(path) or "its parent is not a directory"
    return ArchiveError(f"{show(path)}: {problem}")


def _parent_problem(path: bytes) -> str | None:
    """Why `path` cannot be created: the first of its parents that is not a directory."""
    parts = path.split(b"/")[:-1]
    for end in range(1, len(parts) + 1):
        parent = b"/".join(parts[:end])
        try:
            mode = os.lstat(parent).st_mode
        except OSError:
            break
        if stat.S_ISLNK(mode):
            if not os.path.isdir(parent):
                return (f"its parent {show(parent)} is a symlink to "
                        f"{show(os.readlink(parent))}, which is not a directory")
        elif not stat.S_ISDIR(mode):
            return f"its parent {show(parent)} is not a directory"
    return None


def _describe(error: OSError, path: bytes) -> str:
    problem = None
    if error.errno in (errno.ENOTDIR, errno.ENOENT, errno.ELOOP):
        problem = _parent_problem(path)
    return problem or error.strerror or str(error)


def clear_default_acl(directory: bytes = b"."):
    """Drop the ACLs that `directory` (the new release) inherited from its parent: its
    default ACL would otherwise change the modes of everything extracted below it."""
    for name in ACL_XATTRS:
        try:
            os.removexattr(directory, name, follow_symlinks=False)
        except OSError as error:
            if error.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise


class _OpenDirectory:
    """A directory on the path of the member being unpacked, whose time and default ACL
    are set when the stream leaves it (`mtime_ns` None: nothing to set, for one made as a
    parent with no entry of its own, or for another name of an open directory)."""
    __slots__ = ("path", "prefix", "mtime_ns", "setgid", "default_acl", "identity")

    def __init__(self, path: bytes, mtime_ns: int | None, setgid: bool,
                 default_acl: bytes | None = None):
        self.path, self.mtime_ns, self.setgid = path, mtime_ns, setgid
        self.default_acl = default_acl
        self.prefix = path + b"/" if path else b""
        self.identity = None  # (st_dev, st_ino), looked up when an entry may name it again


class Unpacker:
    def __init__(self, source: Input, *, devices: bool = True):
        self.source = source
        self.devices = devices
        self.stats = Stats()
        # Only the directories on the current member's path wait for their times, not
        # every directory of the image (a pull's memory must not grow with its size):
        # tar writers walk depth first, so a directory is complete once the stream
        # leaves it. _enter keeps the times right when an archive comes back to one.
        self._open: list[_OpenDirectory] = []
        self._parent_setgid = False  # the current member's directory is setgid
        self._restated: _OpenDirectory | None = None  # an open directory's earlier entry
        self._warnings = 0

    def run(self) -> Stats:
        root_setgid = bool(os.stat(b".").st_mode & stat.S_ISGID)
        self._open = [_OpenDirectory(b"", None, root_setgid)]
        headers = HeaderReader(self.source.read)
        while (member := headers.next()) is not None:
            try:
                self._unpack(member)
            except LocalChanged:
                raise  # it names its member; the pull may start again (pipeline)
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):  # the host's disk, not the
                    raise OSError(error.errno, error.strerror,   # archive: pipeline says so
                                  show(member.path or b".")) from None
                raise ArchiveError(f"{show(member.path or b'.')}: "
                                   f"{_describe(error, member.path)}") from None
        # The rest (the second zero block, record padding) is read so the writer finishes.
        self.source.drain()
        self._finish()
        if self._warnings > MAX_WARNINGS:
            self._warn(f"{self._warnings - MAX_WARNINGS} more extended attributes not set "
                       "(see above)", count=False)
        return self.stats

    def _finish(self):
        while self._open:
            self._close(self._open.pop())

    def _close(self, directory: _OpenDirectory):
        """Set the time (and default ACL) of a directory the stream has left: creating
        entries inside changes it. Only on what is still a directory: a member named
        through a symlink (`e -> .`, `e/d`) may have replaced one by a file, which a delta
        pull may have hard-linked from another release (droot.deploy.reuse)."""
        if directory.mtime_ns is None:
            return
        path, mtime_ns = directory.path or b".", directory.mtime_ns
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return
        except (FileNotFoundError, NotADirectoryError):
            return  # removed with a directory that a later member replaced
        if directory.default_acl is not None:
            self._set_xattrs(path, [(DEFAULT_ACL, directory.default_acl)], follow=False)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _enter(self, path: bytes, directory_member: bool = False):
        """Set the times of the open directories that `path` is not in, and say whether
        the member at `path` will be made in the innermost one left. If not, the archive
        came back to a directory it had left (or names one through a symlink): return
        that directory, its stat and its default ACL, lifted meanwhile (the member must
        not inherit it), to put back once the member is made."""
        directories = self._open
        while len(directories) > 1:
            top = directories[-1]
            if path.startswith(top.prefix):
                break
            if path == top.path and directory_member:  # its entry again: the last one
                self._restated = directories.pop()    # gives the time (_directory)
            else:  # left, or a member at its path replaces it (or leaves it as it is:
                self._close(directories.pop())  # a hard link to itself)
        top = directories[-1]
        parent = path.rpartition(b"/")[0]
        if parent == top.path:
            self._parent_setgid = top.setgid
            return None
        if len(parent) >= PATH_MAX:
            return None  # making the member fails (and `below` would take length²)
        # The nearest directory that exists: the member (and any missing parents) will
        # be made in it.
        existing, info = _deepest_existing(parent)
        if not stat.S_ISDIR(info.st_mode):
            return None  # making the member fails, naming the culprit (_describe)
        # The parents to be made are open directories from now on, setgid if it is
        # (mkdir inherits the bit), so the members that follow them take the fast way.
        self._parent_setgid = setgid = bool(info.st_mode & stat.S_ISGID)
        made = parent
        below = []
        while len(made) > len(existing) and len(made) > len(top.path):
            below.append(made)
            made = made.rpartition(b"/")[0]
        directories.extend(_OpenDirectory(p, None, setgid) for p in reversed(below))
        if existing == top.path:
            return None
        try:
            default_acl = os.getxattr(existing or b".", DEFAULT_ACL)
            os.removexattr(existing or b".", DEFAULT_ACL)
        except OSError:  # none (ENODATA), or no ACLs on this filesystem
            default_acl = None
        return existing, info, default_acl

    def _open_as(self, path: bytes) -> _OpenDirectory | None:
        """The open directory that `path` (an existing directory) is, named another way,
        if any: with an entry of its own or made as a parent. Each is looked up once."""
        try:
            info = os.lstat(path)
        except OSError:
            return None
        identity = (info.st_dev, info.st_ino)
        for directory in self._open:
            if directory.identity is None:
                try:
                    found = os.lstat(directory.path or b".")
                    directory.identity = (found.st_dev, found.st_ino)
                except OSError:
                    directory.identity = ()
            if directory.identity == identity:
                return directory
        return None

    def _warn(self, message: str, count: bool = True):
        if count:
            self._warnings += 1
            if self._warnings > MAX_WARNINGS:
                return
        os.write(2, f"droot: warning: {message}\n".encode(errors="replace"))

    def _set_xattrs(self, target, xattrs, follow=True, path=None):
        """Set the member's xattrs; one that the kernel or the filesystem does not know
        (an unknown namespace, no xattrs here) is left out with a warning, as GNU tar
        does."""
        for name, value in xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as error:
                where = show(path if path is not None else target) or "."
                if error.errno == errno.EOPNOTSUPP:
                    self._warn(f"{where}: extended attribute {show(name)} not set: "
                               f"{error.strerror}")
                    continue
                raise ArchiveError(f"{where}: cannot set extended attribute {show(name)}: "
                                   f"{error.strerror}") from None

    @staticmethod
    def _create(make, path: bytes):
        """Run make(path), first making its parents, or replacing what is at path."""
        try:
            return make(path)
        except FileNotFoundError:
            _make_parents(path)
        except FileExistsError:
            _remove(path)
        return make(path)

    def _unpack(self, m):
        kind = m.type
        if m.sparse:
            raise ArchiveError(f"{show(m.path)}: sparse and multi-volume members are not "
                               "supported")
        if kind in (CHARDEV, BLOCKDEV) and not self.devices:
            self.stats.skipped_devices += 1  # nothing made, not even its parents
            return
        revisited = self._enter(m.path, kind == DIRECTORY)
        if kind in REGULAR_TYPES:
            self._file(m)
        # Like tarfile and GNU tar, only regular members carry data.
        elif kind == DIRECTORY:
            self._directory(m)
        elif kind == SYMLINK:
            self._symlink(m)
        elif kind == HARDLINK:
            self._hardlink(m)
        elif kind in (CHARDEV, BLOCKDEV, FIFO):
            self._node(m)
        else:
            raise ArchiveError(f"{show(m.path)}: unsupported tar member type "
                               f"{bytes([kind])!r}")
        if revisited is not None:
            directory, before, default_acl = revisited
            try:
                if default_acl is not None:
                    os.setxattr(directory or b".", DEFAULT_ACL, default_acl)
                os.utime(directory or b".", ns=(before.st_atime_ns, before.st_mtime_ns))
            except (FileNotFoundError, NotADirectoryError):
                pass  # the member replaced it, through a symlink

    def _chown_needed(self, m) -> bool:
        """Whether the new entry's owner differs from what creating it gave it: root's,
        or in a setgid directory the directory's group. (Skipped chowns count: each is a
        journal update on ext4.)"""
        return bool(m.uid or m.gid or self._parent_setgid)

    def _file(self, m):
        # Created with its permission bits (the umask is 0, and no default ACL is
        # inherited: clear_default_acl), owned by root: each further metadata change
        # costs a journal update on ext4, so only the needed ones follow.
        try:
            fd = os.open(m.path, CREATE_FLAGS, m.mode & 0o777)
        except OSError:  # a parent to make, or an earlier member to replace
            fd = self._create(lambda path: os.open(path, CREATE_FLAGS, m.mode & 0o777), m.path)
        try:
            self.source.copy_to(fd, m.size, -m.size % BLOCK)
            # Owner before mode (chown clears setuid bits) and xattrs after owner (chown
            # clears security.capability); the time last.
            if self._chown_needed(m):
                os.fchown(fd, m.uid, m.gid)
            if m.mode & 0o7000:
                os.fchmod(fd, m.mode)
            if m.xattrs:
                self._set_xattrs(fd, m.xattrs, path=m.path)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += m.size

    def _directory(self, m):
        path = m.path or b"."
        try:
            os.mkdir(path, m.mode & 0o777)  # the umask is 0
            made = True
        except FileExistsError:
            made = False
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                _remove(path)
                os.mkdir(path, m.mode & 0o777)
                made = True
        except FileNotFoundError:
            _make_parents(path)
            os.mkdir(path, m.mode & 0o777)
            made = True
        existed = not made
        if existed:  # an earlier entry's owner, or a made parent's setgid group
            info = os.lstat(path)
            wrong_owner = (info.st_uid, info.st_gid) != (m.uid, m.gid)
        else:
            wrong_owner = self._chown_needed(m)
        if wrong_owner:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
            made = False  # a setgid parent's bit may have been inherited
        if not made or m.mode & 0o7000:
            os.chmod(path, m.mode)
        default_acl = None
        if m.xattrs:
            default_acl = next((value for name, value in m.xattrs if name == DEFAULT_ACL),
                               None)
            self._set_xattrs(path, [(name, value) for name, value in m.xattrs
                                    if name != DEFAULT_ACL], follow=False, path=path)
        restated, self._restated = self._restated, None
        if not m.path and self._open[0].mtime_ns is not None:
            restated = self._open[0]
        same = None
        if existed:
            # A directory made before: a default ACL set when the stream left it is
            # lifted until the stream leaves it again (what is made in it now must not
            # inherit it), and kept unless this entry has its own, as an earlier entry's
            # not yet set is.
            try:
                lifted = os.getxattr(path, DEFAULT_ACL, follow_symlinks=False)
                os.removexattr(path, DEFAULT_ACL, follow_symlinks=False)
            except OSError:  # none (ENODATA), or no ACLs on this filesystem
                lifted = None
            if default_acl is None:
                default_acl = restated.default_acl if restated is not None else None
            if default_acl is None:
                default_acl = lifted
            same = self._open_as(path) if m.path else None  # the root replaces its own
        # Its time and default ACL are set when the stream leaves it (_enter), after its
        # contents; the last entry of a directory counts.
        opened = _OpenDirectory(m.path, m.mtime_ns, bool(m.mode & stat.S_ISGID), default_acl)
        if same is not None:
            # The entry names a directory still open through another path (a symlink
            # inside it): that one is left after this one, and must get this entry's.
            # This one sets nothing when left: a default ACL set then would be inherited
            # by what the archive makes in the directory under its other name.
            same.mtime_ns, same.default_acl = m.mtime_ns, default_acl
            opened.mtime_ns = None
        if m.path:
            self._open.append(opened)
        else:
            self._open[0] = opened
        self.stats.directories += 1

    def _symlink(self, m):
        self._create(lambda path: os.symlink(m.linkname, path), m.path)
        if self._chown_needed(m):
            os.chown(m.path, m.uid, m.gid, follow_symlinks=False)
        if m.xattrs:
            self._set_xattrs(m.path, m.xattrs, follow=False, path=m.path)
        os.utime(m.path, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
        self.stats.symlinks += 1

    def _hardlink(self, m):
        target = m.link_path()
        if not target or not os.path.lexists(target):
            raise ArchiveError(f"{show(m.path)}: hard link target {show(target or b'.')!r} "
                               "is not in the archive")
        if target == m.path:
            return
        # linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        self._create(lambda path: os.link(target, path, follow_symlinks=False), m.path)
        self.stats.hardlinks += 1

    def _node(self, m):
        if m.type == FIFO:
            file_type = stat.S_IFIFO
        elif not self.devices:
            self.stats.skipped_devices += 1
            return
        else:
            file_type = stat.S_IFCHR if m.type == CHARDEV else stat.S_IFBLK
        device = os.makedev(m.major, m.minor)
        self._create(lambda path: os.mknod(path, 0o600 | file_type, device), m.path)
        os.chown(m.path, m.uid, m.gid, follow_symlinks=False)
        os.chmod(m.path, m.mode)
        if m.xattrs:
            self._set_xattrs(m.path, m.xattrs, follow=False, path=m.path)
        os.utime(m.path, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
        self.stats.devices += 1
