"""A delta release's files taken from the releases already on this host.

A delta pull (droot.ship.delta) knows every regular file's SHA-256 from the release's
manifest. Just ahead of the extraction, `LocalContent.find` looks for the same path in the
releases kept here (the current one first) and reads it: only a file whose bytes hash
to the manifest's digest is planned for reuse, so a file an app changed in its release
is downloaded instead. The extraction child then makes each planned file with
`ReusingUnpacker`: the same Unpacker as for an archive (same names, owners, modes,
xattrs, times, device policy), only the data comes from the local file, as a reflink
(FICLONE: shared extents, copy-on-write, on btrfs, XFS, bcachefs) or else a copy
(copy_file_range), and is hashed again from the new file: every reused byte is verified
where it lands.

Reading every candidate twice (to choose it, and where it landed) costs as much as
the copy on a filesystem with reflinks, so a delta pull also leaves a record
(ROOT.releases/.content): each file of the new release with its verified digest and its
inode's number, size and ctime, taken after the release is complete and before the switch
(no app runs in it yet). The next pull trusts a file of that release without reading it
when the inode still has that number, size and ctime: any change to a file's bytes (write,
truncate, a write through a shared mapping, a reflink into it) sets its ctime to the
current time, which no unprivileged call can set back (the app may set mtime, not ctime,
and cannot set the clock), and a replaced file is another inode. The same check after the
reflink or copy shows the source did not change while it was read; if it did, the new
file is read back and hashed as without a record. A file of a read-only release, which
no app can change, is planned from the record alone (a look at each of 15,000 inodes was
40% of planning) and checked only where it is linked or copied; one found gone or with
other bytes there fails the extraction (members.LocalChanged), and the pull starts once
more without the record, reading each candidate.

Hard links only between read-only releases (`--read-only`, droot.core.readonly): a
hard link shares the inode, so an app writing a reused file (or chmod-ing it) would change
the other release too, a rollback target included. `droot run` mounts a read-only
release read-only, so no app can change its files, and a pull that makes one links each
file whose bytes and metadata (mode, owner, times, xattrs) a read-only kept release
already holds: one link(2), nothing copied or read back. Every other reuse is a file of
its own, a reflink or a copy. In a read-only release the record's ctimes would not show
anything (no app can write; later pulls linking and prunes unlinking change the shared
inodes' ctimes): there the inode's number and size are checked.

Sources are found from a descriptor of ROOT.releases with openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW: whatever an app planted in its
release (symlinks), nothing outside the release is read. Only a regular file is ever
opened (LocalContent.open_source): an app may have made a FIFO or a device node at a
file's path, and opening one can act (a watchdog arms, a tape rewinds, a terminal becomes
droot's controlling one).
"""

import errno
import fcntl
import hashlib
import os
import stat
import struct
import sys

from droot.core import kernel, readonly
from droot.core.atomicfile import AtomicFile
from droot.core.indextable import IndexTable
from droot.core.scratch import Scratch
from droot.core.tarformat import show
from droot.deploy import members
from droot.deploy.releases import CONTENT_NAME

_RESOLVE = kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS
_LOCATE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC  # a name resolved, nothing opened
# O_NONBLOCK: a file's owner can hold a lease on it, which would stall an open for reading.
_READ = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
FICLONE = 0x40049409
HASH_CHUNK = 1 << 20
# errnos that mean "no reflink here" (other filesystem, or one without shared extents)
_NO_REFLINK = frozenset((errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY,
                         errno.ENOSYS, errno.EBADF))


def _sha256_of(fd: int, size: int) -> bytes:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(HASH_CHUNK, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.digest() if offset == size and not os.pread(fd, 1, size) else b""


SAME_RELEASE = 255  # in the plan: copied from an earlier member of the new release
# LocalContent.flags, a byte a member
_HAS_DATA = 1  # a file with data: its digest is in the shared plan
_REPLACED = 2  # a later member of the new release has the same path
_IDENTITY = struct.Struct("Qqq")  # an inode number may use all 64 bits (overlayfs xino)
_NUMBER = struct.Struct("q")
# the shared plan, a member's bytes: plan, digest, identity, earlier member, link time,
# where its path starts
_SHARED_SIZE = 1 + 32 + _IDENTITY.size + 3 * _NUMBER.size
_PATHS = 1 << 20  # room for paths to start with (grown as needed)
# members whose part of the shared plan is allocated at once: not every member the head
# says (a manifest may say millions and hold three), only those planned so far
_ALLOCATED_MEMBERS = 1 << 14
_RECORD_HEADER = b"droot-content 1 "
_RECORD_LIMIT = 64 << 20  # ~100 bytes a file: 600,000 files


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    """What shows a file's bytes unchanged since it was recorded (see the module)."""
    return info.st_ino, info.st_size, info.st_ctime_ns


class _Record:
    """The entries of the `.content` record open at `fd`, from offset `start` on, looked
    up by path: get(path) is (digest, identity) or None. The entries stay in the file
    (root's, read under the deploy lock): in memory is only an IndexTable of where each
    one starts, and a lookup reads its entry back (pread, from the page cache) to compare
    the path. Read into memory, they took 13 MB of a pull for an image of 100,000 files
    (as a dict of tuples, 50 MB)."""

    def __init__(self, fd: int, start: int, scratch: Scratch):
        """Checks every entry: ValueError if one is malformed. Its table is in `scratch`."""
        self._fd = fd
        self._last = (-1, b"")  # the entry read last: get() reads the one find() compared
        count = sum(chunk.count(b"\0") for chunk in self._chunks(start))
        self._entries = IndexTable(self._holds, expected=count, scratch=scratch)
        try:
            for number, (at, entry) in enumerate(self._scan(start)):
                if number % Scratch.TRIM_EVERY == 0:
                    scratch.trim()
                self._entries.put(_fields(entry)[4], at)  # a path again: the last wins
        except BaseException:
            self._entries.close()
            raise

    def close(self):
        os.close(self._fd)
        self._entries.close()

    def _chunks(self, start: int):
        while chunk := os.pread(self._fd, HASH_CHUNK, start):
            yield chunk
            start += len(chunk)

    def _scan(self, start: int):
        """Each entry's offset and bytes (without its NUL)."""
        pending = b""
        for chunk in self._chunks(start):
            data = pending + chunk
            begin = 0
            while (end := data.find(b"\0", begin)) >= 0:
                yield start + begin, data[begin:end]
                begin = end + 1
            pending, start = data[begin:], start + begin
        if pending:
            raise ValueError("an entry without its end")

    def _entry(self, at: int) -> bytes:
        """The entry at offset `at`, read back (b"" if the file changed since)."""
        if self._last[0] == at:
            return self._last[1]
        size = 512  # most entries are shorter
        while True:
            data = os.pread(self._fd, size, at)
            if (end := data.find(b"\0")) >= 0:
                entry = data[:end]
                break
            if len(data) < size:
                entry = b""
                break
            size *= 8
        self._last = (at, entry)
        return entry

    def _holds(self, at: int, path: bytes) -> bool:
        return self._path_at(at) == path

    def _path_at(self, at: int) -> bytes | None:
        fields = self._entry(at).split(b" ", 4)
        return fields[4] if len(fields) == 5 else None

    def get(self, path: bytes) -> tuple[bytes, tuple[int, int, int]] | None:
        at = self._entries.find(path)
        if at < 0:
            return None
        try:
            digest, ino, size, ctime, _ = _fields(self._entry(at))
        except ValueError:  # changed since it was checked: no longer trusted
            return None
        return bytes.fromhex(digest.decode()), (int(ino), int(size), int(ctime))


def _fields(entry: bytes) -> list[bytes]:
    """A record entry's fields: digest, inode number, size, ctime, path (ValueError if
    malformed)."""
    fields = entry.split(b" ", 4)
    digest, ino, size, ctime, _ = fields
    if len(digest) != 64:
        raise ValueError("not a SHA-256")
    bytes.fromhex(digest.decode()), int(ino), int(size), int(ctime)
    return fields


def _read_record(releases_fd: int, scratch: Scratch) -> tuple[str | None, _Record | None]:
    """The `.content` record: the release it describes and its entries (_Record, which
    keeps the file open; its table in `scratch`). A record that is missing, not a root-only
    regular file, or malformed is no record."""
    try:
        fd = os.open(CONTENT_NAME, _READ | os.O_NOFOLLOW, dir_fd=releases_fd)
    except OSError:
        return None, None
    try:
        info = os.fstat(fd)
        if (stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022
                and info.st_size <= _RECORD_LIMIT):
            head = os.pread(fd, 4096, 0)
            if head.startswith(_RECORD_HEADER) and b"\n" in head:
                release, _ = head[len(_RECORD_HEADER):].split(b"\n", 1)
                entries = _Record(fd, len(_RECORD_HEADER) + len(release) + 1, scratch)
                return release.decode(errors="replace"), entries
    except (OSError, ValueError):
        pass
    os.close(fd)
    return None, None


class LocalContent:
    """The releases of a root whose files may be reused, newest first, and the plan: for
    each member index of the new release, 0 (data from the stream), 1 + the position of
    the release it is copied from, or SAME_RELEASE: copied from an earlier file of the
    new release with the same content (so a content the release holds twice is
    downloaded once)."""

    def __init__(self, releases_dir, release_names: list[str], members: int,
                 link: bool = False, use_record: bool = True):
        """For a new release of `members` members. `link`: it is read-only, so files of
        read-only kept releases are hard-linked into it. Without `use_record`, every
        candidate is read. Its tables of every member are on the disk (droot.core.scratch):
        the pull's memory does not grow with the image's number of files."""
        self.names = release_names
        self.releases_fd = os.open(releases_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                   | os.O_CLOEXEC) if release_names else -1
        # Inherited by the extraction child, which reopens sources through it after chroot.
        try:
            self.proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # no /proc: nothing is reused, everything is downloaded
            self.names = []
            self.proc_fd = -1
        # The plan, shared with the extraction child: the child is forked before the plan
        # is made (it extracts while the parent plans), and a member's header reaches it
        # only after the parent planned that member. Per member, in parts of `members`
        # entries: the plan (a byte), its content's digest (0s: none), its source's
        # recorded identity (_identity; 0s: none), the earlier member it is copied from
        # (SAME_RELEASE), the ctime of the inode the child hard-linked there (0: none),
        # which write() records without a look, and where its path starts in `_paths`
        # (NUL-terminated: tarformat refuses a NUL in a name), which the plan grows.
        self.members = members
        self.scratch = Scratch()
        self._shared_region = self.scratch.region(members * _SHARED_SIZE, allocated=0)
        self._shared = self._shared_region.map
        self._digests = members
        self._identities = self._digests + 32 * members
        self._earlier = self._identities + _IDENTITY.size * members
        self._link_times = self._earlier + _NUMBER.size * members
        self._path_starts = self._link_times + _NUMBER.size * members
        # (start, bytes a member) of each part; the members whose blocks are allocated
        self._parts = ((0, 1), (self._digests, 32), (self._identities, _IDENTITY.size),
                       (self._earlier, _NUMBER.size), (self._link_times, _NUMBER.size),
                       (self._path_starts, _NUMBER.size))
        self._allocated = 0
        self._paths = self.scratch.region(_PATHS)
        self._paths_end = 0
        self.flags = bytearray()  # the plan's, a byte a member (4 MB at most: _RECORDS_LIMIT)
        # the member now at each path (the last one), and the first of each content
        # that still is at its path (a repeated content is copied from it): begin_plan()
        self.at_path = self.first_holder = None
        self.reused_bytes = 0
        self.reused_files = 0
        self._use_record = use_record and bool(self.names)
        self.recorded_release, self.recorded = None, None  # begin_plan()
        # positions of the kept releases whose files may be linked (read-only ones)
        self.linkable = {position for position, name in enumerate(self.names) if link
                         and readonly.is_marked(f"/proc/self/fd/{self.releases_fd}/{name}")}
        self.link = link
        # the source directory linked from last (_source_directory)
        self._directory_key, self._directory_fd = None, -1
        # A member is named through a symlink of the release, or replaces a directory
        # (ship.delta._Planner): what is at a path may not be its last member's content,
        # so no record is written, and no repeated content is copied from an earlier file.
        self.aliased = False

    def begin_plan(self):
        """Read the newest kept release's `.content` record and make the plan's tables,
        once the extraction child is forked (it would start with a copy: 12 MB for an
        image of 100,000 files)."""
        if self._use_record:
            self.recorded_release, self.recorded = _read_record(self.releases_fd,
                                                                self.scratch)
        # Grown as members come, not sized by the head's record count: a manifest may
        # say it has millions of records and hold three.
        self.at_path = IndexTable(self._has_path, scratch=self.scratch)
        self.first_holder = IndexTable(self._has_digest, scratch=self.scratch)

    def end_plan(self):
        """What only the plan used goes (the plan is complete, or the pull is over)."""
        if self.recorded:
            self.recorded.close()
            self.recorded = None
        for table in (self.at_path, self.first_holder):
            if table:
                table.close()
        self.at_path = self.first_holder = None

    def trim(self):
        """Let the scratch regions' pages go from this process (droot.core.scratch)."""
        self.scratch.trim()

    def close(self):
        for name in ("releases_fd", "proc_fd", "_directory_fd"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)
        self.end_plan()  # a pull that failed mid-plan still holds the record open
        self.scratch.close()

    def open_source(self, position: int, path: bytes) -> int:
        """A descriptor, open for reading, of the regular file `path` of kept release
        `position` (SAME_RELEASE - 1: of the new release), or OSError. The name is
        resolved once, to an O_PATH descriptor, which opens nothing; the type is checked
        on that inode (an inode never changes type); then that same inode is opened
        through /proc/self/fd/N, a magic link that does not resolve the name again. So
        a FIFO or device node swapped in meanwhile is never opened, which opening by name
        and comparing st_dev/st_ino afterwards could not promise."""
        located = self.locate(position, path)
        try:
            if not stat.S_ISREG(os.fstat(located).st_mode):
                raise members.LocalChanged(errno.ESTALE, "not a regular file")
            return os.open(f"self/fd/{located}", _READ, dir_fd=self.proc_fd)
        finally:
            os.close(located)

    def locate(self, position: int, path: bytes, flags: int = _LOCATE) -> int:
        """An O_PATH descriptor of `path` in kept release `position` (SAME_RELEASE - 1: in
        the new release), resolved beneath it without following any symlink (a trailing
        one is the symlink itself); it opens nothing."""
        if position == SAME_RELEASE - 1:  # in the extraction child, chrooted in the release
            directory, name = kernel.AT_FDCWD, path.decode("utf-8", "surrogateescape")
        else:
            directory = self.releases_fd
            name = self.names[position] + "/" + path.decode("utf-8", "surrogateescape")
        return kernel.openat2(directory, name, flags, 0, _RESOLVE)

    def note_member(self, index: int, path: bytes, digest: bytes | None):
        """Member `index` of the new release, the next one, is at `path` and holds
        `digest` (None: no file data)."""
        self.flags.append(_HAS_DATA if digest else 0)
        if digest:
            start = self._digests + 32 * index
            self._shared[start:start + 32] = digest
        if not self.aliased:  # else no record is written, no repeated content copied
            earlier = self.at_path.put(path, index)
            if earlier >= 0:  # not in the record, and no longer a source of its content
                self.flags[earlier] |= _REPLACED

    def note_path(self, index: int, path: bytes):
        """Member `index`, the next one, is at `path` (noted before anything else of it)."""
        if index % Scratch.TRIM_EVERY == 0:
            self.scratch.trim()
        if index >= self._allocated:  # before anything of it is written, here or in the child
            end = min(self.members, self._allocated + _ALLOCATED_MEMBERS)
            for part, size in self._parts:
                self._shared_region.allocate(part + size * self._allocated,
                                             size * (end - self._allocated))
            self._allocated = end
        start, self._paths_end = self._paths_end, self._paths_end + len(path) + 1
        self._paths.grow(self._paths_end)
        self._paths.map[start:start + len(path)] = path  # its NUL: the region's zeros
        _NUMBER.pack_into(self._shared, self._path_starts + _NUMBER.size * index, start)

    def path(self, index: int) -> bytes:
        (start,) = _NUMBER.unpack_from(self._shared, self._path_starts + _NUMBER.size * index)
        paths = self._paths.map
        if (end := paths.find(b"\0", start)) >= 0:
            return paths[start:end]
        # Past the end of the extraction child's mapping: the plan grew the region since.
        path = b""
        while chunk := self._paths.read(4096, start + len(path)):
            if (end := chunk.find(b"\0")) >= 0:
                return path + chunk[:end]
            path += chunk
        raise ValueError(f"no end to the path of member {index}")  # not written yet

    def digest(self, index: int) -> bytes:
        start = self._digests + 32 * index
        return self._shared[start:start + 32]

    def _has_path(self, index: int, path: bytes) -> bool:
        (start,) = _NUMBER.unpack_from(self._shared, self._path_starts + _NUMBER.size * index)
        end = start + len(path)
        return self._paths.map[start:end] == path and self._paths.map[end] == 0

    def _has_digest(self, index: int, digest: bytes) -> bool:
        return self.digest(index) == digest

    def first_with(self, index: int, digest: bytes) -> int:
        """The index of the first member that holds `digest` and is still at its path;
        member `index` (noted last) if none, which is then that first one."""
        first = self.first_holder.put(digest, index, replace=False)
        if first < 0:
            return index
        if self.flags[first] & _REPLACED:  # its path holds something else now
            self.first_holder.put(digest, index)
            return index
        return first

    def find(self, index: int, path: bytes, size: int, digest: bytes) -> bool:
        """Plan member `index` (a regular file) for reuse if a kept release holds `path`
        with exactly these bytes."""
        for position in range(len(self.names)):
            if self.names[position] == self.recorded_release:
                identity = self._unchanged(position, path, size, digest)
                if identity:
                    self._reuse(index, position, size, identity)
                    return True
            try:
                fd = self.open_source(position, path)
            except OSError:
                continue
            try:  # a regular file (open_source): the same size and bytes?
                info = os.fstat(fd)
                if info.st_size != size or _sha256_of(fd, size) != digest:
                    continue
            finally:
                os.close(fd)
            # A read-only release: no app can have changed it since.
            self._reuse(index, position, size,
                        _identity(info) if position in self.linkable else ())
            return True
        return False

    def _reuse(self, index: int, position: int, size: int, identity: tuple):
        self._set(index, position + 1, identity)
        self.reused_bytes += size
        self.reused_files += 1

    def _unchanged(self, position: int, path: bytes, size: int, digest: bytes) -> tuple:
        """The identity of `path` of kept release `position` when the record shows it to
        hold these bytes, else (). Looked at through an O_PATH descriptor: nothing is
        opened or read; in a read-only release, not looked at (see the module)."""
        recorded = self.recorded and self.recorded.get(path)
        if not recorded or recorded[0] != digest or recorded[1][1] != size:
            return ()
        if position in self.linkable:  # checked where it is linked, or copied
            return recorded[1]
        name = self.names[position] + "/" + path.decode("utf-8", "surrogateescape")
        try:
            located = kernel.openat2(self.releases_fd, name, _LOCATE, 0, _RESOLVE)
        except OSError:
            return ()
        try:
            info = os.fstat(located)
        finally:
            os.close(located)
        if stat.S_ISREG(info.st_mode) and _identity(info) == recorded[1]:
            return _identity(info)
        return ()

    def same_as(self, index: int, earlier: int):
        """Plan member `index` as a copy of the earlier member `earlier`."""
        self._set(index, SAME_RELEASE, ())
        _NUMBER.pack_into(self._shared, self._earlier + _NUMBER.size * index, earlier)

    def _set(self, index: int, value: int, identity: tuple):
        self._shared[index] = value
        _IDENTITY.pack_into(self._shared, self._identities + _IDENTITY.size * index,
                            *(identity or (0, 0, 0)))

    def _trusted(self, index: int) -> tuple:
        """The recorded identity of member `index`'s planned source, () if none."""
        identity = _IDENTITY.unpack_from(self._shared, self._identities + _IDENTITY.size * index)
        return identity if identity[0] else ()  # no inode is number 0

    def planned(self, index: int) -> int:
        return self._shared[index] if index < self.members else 0

    def source_path(self, m) -> bytes:
        """The path of member `m`'s planned source: its own in a kept release, or the
        earlier member's it is copied from in the new release."""
        if self.planned(m.index) != SAME_RELEASE:
            return m.path
        (earlier,) = _NUMBER.unpack_from(self._shared, self._earlier + _NUMBER.size * m.index)
        return self.path(earlier)

    def _link_time(self, index: int) -> int:
        return _NUMBER.unpack_from(self._shared, self._link_times + _NUMBER.size * index)[0]

    def link_into(self, m) -> bool:
        """Hard-link file member `m` of the new (read-only) release to its planned source
        when that is in a read-only release (an earlier file of the new one included)
        and has exactly the member's metadata; False when it cannot be linked."""
        position = self.planned(m.index) - 1
        if position not in self.linkable and position != SAME_RELEASE - 1:
            return False
        linked = self._link_if(position, self.source_path(m), m, lambda info: (
            stat.S_ISREG(info.st_mode)
            and (info.st_mode & 0o7777, info.st_size) == (m.mode & 0o7777, m.size)
            and (position == SAME_RELEASE - 1
                 or _identity(info)[:2] == self._trusted(m.index)[:2])))
        if linked and position in self.linkable:  # for write(), in the parent
            _NUMBER.pack_into(self._shared, self._link_times + _NUMBER.size * m.index,
                              linked.st_ctime_ns)
        return linked is not None

    def link_symlink(self, m) -> bool:
        """Hard-link symlink member `m` of the new (read-only) release to the same symlink
        (target, owner, time, extended attributes) of the newest read-only kept release;
        False when it cannot be linked. A symlink is an inode too: linking one costs no
        new inode."""
        return self._link_if(min(self.linkable), m.path, m, lambda info: (
            stat.S_ISLNK(info.st_mode) and os.readlink(m.path) == m.linkname)) is not None

    def _link_if(self, position: int, path: bytes, m, matches) -> os.stat_result | None:
        """Link `path` of kept release `position` at member `m`'s path, and keep the link
        when it has m's owner, time and extended attributes and `matches(stat)` holds of
        it: its stat, else None (the link removed). Checked where it landed, by the name
        just made in the extraction's own staging directory: the inode linked, with no
        second resolution of a name in the kept release."""
        directory, name = path.rpartition(b"/")[::2]
        os.link(name, m.path, src_dir_fd=self._source_directory(position, directory),
                follow_symlinks=False)  # a symlink there is linked as itself, and refused
        info = os.lstat(m.path)
        if ((info.st_uid, info.st_gid, info.st_mtime_ns) == (m.uid, m.gid, m.mtime_ns)
                and matches(info) and _xattrs_equal(m.path, m.xattrs)):
            return info
        os.unlink(m.path)
        return None

    def _source_directory(self, position: int, directory: bytes) -> int:
        """An O_PATH descriptor of `directory` in kept release `position` (SAME_RELEASE -
        1: in the new release), resolved as `locate` resolves a file. The last one is
        kept, since members come directory by directory: a read-only release's
        directories do not change, and a directory of the new release that a later member
        replaced is empty (a name looked up there is not found, and the file is copied)."""
        if self._directory_key == (position, directory):
            return self._directory_fd
        if self._directory_fd >= 0:
            os.close(self._directory_fd)
            self._directory_key, self._directory_fd = None, -1
        self._directory_fd = self.locate(position, directory or b".", _LOCATE | os.O_DIRECTORY)
        self._directory_key = (position, directory)
        return self._directory_fd

    def copy_into(self, fd: int, m):
        """Fill the new file `fd` of member `m` from its planned source, then check it.
        members.LocalChanged, naming the member, when the source is gone or changed
        (members.ArchiveError when that source was a file of the new release)."""
        position = self.planned(m.index) - 1
        try:
            source = self.open_source(position, self.source_path(m))
        except OSError as error:
            if position == SAME_RELEASE - 1:  # nothing of this host: pulling again won't help
                raise members.ArchiveError(
                    f"{show(m.path)}: the file of the same content it is copied from, "
                    f"{show(self.source_path(m))}, is gone: a later member replaced a "
                    "directory above it (a corrupt manifest)") from None
            raise members.LocalChanged(error.errno, f"its local copy is gone ({error.strerror})",
                                       m.path) from None
        try:
            if os.fstat(source).st_size != m.size:  # open_source took only a regular file
                raise _changed(m)
            try:
                fcntl.ioctl(fd, FICLONE, source)
            except OSError as error:
                if error.errno not in _NO_REFLINK:
                    raise
                _copy(source, fd, m)
            if _identity(os.fstat(source)) == self._trusted(m.index):
                return  # the recorded bytes, unchanged while they were copied
        finally:
            os.close(source)
        # Read back through a second descriptor (deploy opens new files write-only), by
        # the name just created in the staging directory: the same inode, or an error.
        written = os.open(m.path, _READ | os.O_NOFOLLOW)
        try:
            landed = os.fstat(written)
            made = os.fstat(fd)
            if ((landed.st_dev, landed.st_ino) != (made.st_dev, made.st_ino)
                    or _sha256_of(written, m.size) != self.digest(m.index)):
                raise _changed(m)
        finally:
            os.close(written)

    def write(self, lock, name: str):
        """Record the files of the new release `name` (see the module), replacing the
        record of an older one. Called by deploy before the switch. A failure only costs
        the next pull its reads: it is a warning."""
        if self.aliased:
            return
        try:
            release = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=lock.dir_fd)
            try:
                with AtomicFile(lock.dir_fd, CONTENT_NAME, 0o600, owner=0, group=0) as out:
                    out.write(_RECORD_HEADER + name.encode() + b"\n")
                    # each path's last member, when a file with data
                    for index, flags in enumerate(self.flags):
                        if index % Scratch.TRIM_EVERY == 0:
                            self.scratch.trim()
                        if flags == _HAS_DATA:
                            out.write(self._entry(release, index))
            finally:
                os.close(release)
        except OSError as error:
            print(f"droot: warning: cannot record the new release's files ({error.strerror}): "
                  "the next delta pull reads them to reuse them", file=sys.stderr)

    def _entry(self, release: int, index: int) -> bytes:
        path, digest = self.path(index), self.digest(index)
        if self.planned(index) - 1 in self.linkable:
            # hard-linked to the inode the plan trusted, checked by number and size
            if ctime := self._link_time(index):
                ino, size, _ = self._trusted(index)
                return b"%s %d %d %d %s\0" % (digest.hex().encode(), ino, size, ctime, path)
        try:
            located = kernel.openat2(release, path.decode("utf-8", "surrogateescape"),
                                     _LOCATE, 0, _RESOLVE)
        except OSError:
            return b""
        try:
            info = os.fstat(located)
        finally:
            os.close(located)
        if not stat.S_ISREG(info.st_mode):
            return b""
        ino, size, ctime = _identity(info)
        return b"%s %d %d %d %s\0" % (digest.hex().encode(), ino, size, ctime, path)


def _xattrs_equal(path: bytes, xattrs: list | None) -> bool:
    """Whether the entry at `path` (itself, not what a symlink names) has exactly the
    extended attributes `xattrs` (a member's (name, value) list, None for none)."""
    xattrs = xattrs or ()
    names = os.listxattr(path, follow_symlinks=False)
    if len(names) != len(xattrs):
        return False
    for name, value in xattrs:
        shown = name.decode("utf-8", "surrogateescape")
        if shown not in names or os.getxattr(path, shown, follow_symlinks=False) != value:
            return False
    return True


def _changed(m) -> OSError:
    return members.LocalChanged(errno.ESTALE, "its local copy changed during the pull", m.path)


def _copy(source: int, target: int, m):
    copied = 0
    while copied < m.size:
        n = os.copy_file_range(source, target, m.size - copied, copied, copied)
        if n == 0:
            raise _changed(m)
        copied += n


class _ReusingInput(members.Input):
    """The rebuilt tar stream: a planned member's data (and its padding) is not in it;
    copy_to fills the file from this host instead."""

    def __init__(self, next_chunk, local: LocalContent):
        super().__init__(next_chunk)
        self.local = local
        self.member = None  # the regular file being unpacked (ReusingUnpacker sets it)

    def copy_to(self, fd: int, size: int, padding: int = 0):
        if self.local.planned(self.member.index):
            self.local.copy_into(fd, self.member)
        else:
            super().copy_to(fd, size, padding)


class ReusingUnpacker(members.Unpacker):
    """members.Unpacker for a delta release, made from the stream's next_chunk (see
    pipeline.extract). The copy hook is in the Input, which sees only file data: a plain
    deploy's Unpacker pays nothing for it. Into a read-only release, a planned file and a
    symlink are first tried as hard links (LocalContent.link_into, link_symlink)."""

    def __init__(self, next_chunk, *, devices: bool = True, local: LocalContent):
        super().__init__(_ReusingInput(next_chunk, local), devices=devices)

    def _unpack(self, m):
        if m.index % Scratch.TRIM_EVERY == 0:
            self.source.local.trim()
        super()._unpack(m)

    def _file(self, m):
        self.source.member = m
        local = self.source.local
        if local.link and local.planned(m.index):
            try:  # _create makes the parents, or removes an earlier member at the path
                linked = self._create(lambda path: local.link_into(m), m.path)
            except OSError:  # the source went meanwhile: the file is made as a copy
                linked = False
            if linked:  # its data and padding are not in the stream (_ReusingInput)
                self.stats.files += 1
                self.stats.linked += 1
                self.stats.bytes += m.size
                return
        super()._file(m)

    def _symlink(self, m):
        local = self.source.local
        if local.linkable:
            try:
                linked = self._create(lambda path: local.link_symlink(m), m.path)
            except OSError:
                linked = False
            if linked:
                self.stats.symlinks += 1
                return
        super()._symlink(m)
