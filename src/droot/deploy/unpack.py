"""Unpack a tar stream into the current root directory, exactly as the archive says:
owners (numeric ids), modes (setuid included), times, xattrs (file capabilities), hard
links, symlinks as written (absolute ones too), device nodes and FIFOs.

This runs in the extraction child that chroot(2)ed into the new release (extract.py), so
the kernel resolves every path inside the release: `..`, absolute names, and symlinks or
hard links aiming elsewhere cannot reach anything outside it. On top of that, each member
replaces whatever the archive planted at its name before (O_EXCL after unlink), so a file
is never written *through* an earlier symlink or device node, and names with `..` are
refused outright: a real root filesystem never has them.

Formats: POSIX ustar and pax (path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*),
GNU long names/links and base-256 numbers, which covers docker export, Go's archive/tar,
GNU tar, bsdtar and Python's tarfile. Paths stay bytes end to end (no decoding).
"""

import os
import stat

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR_TYPES = (b"0", b"\0", b"7")
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ArchiveError(Exception):
    """The archive is malformed, truncated, or asks for something refused."""


class Stats:
    def __init__(self):
        self.files = self.directories = self.symlinks = self.hardlinks = 0
        self.devices = self.skipped_devices = self.bytes = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


class Input:
    """The tar stream, as the chunks of bytes that `next_chunk()` returns (b"" at its end).
    Headers are sliced out of the current chunk and file data is written to disk straight
    from it: one copy per byte, the kernel's, and a few Python calls per member."""

    def __init__(self, next_chunk):
        self._next_chunk = next_chunk
        self._chunk = memoryview(b"")
        self._pos = 0

    def _refill(self):
        chunk = self._next_chunk()
        if not chunk:
            raise ArchiveError("the archive is truncated")
        self._chunk, self._pos = memoryview(chunk), 0

    def read(self, size: int) -> bytes:
        end = self._pos + size
        if end <= len(self._chunk):
            data = self._chunk[self._pos:end].tobytes()
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

    def copy_to(self, fd: int, size: int):
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            n = min(len(self._chunk) - self._pos, size)
            n = os.write(fd, self._chunk[self._pos:self._pos + n])
            self._pos += n
            size -= n

    def drain(self):
        """Read what follows the end of the archive (padding), so the writer finishes."""
        self._chunk, self._pos = memoryview(b""), 0
        while self._next_chunk():
            pass


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the high bit is set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 1)) if field[0] & 0x40 else value
    try:
        return int(field.rstrip(b"\0"), 8)  # the usual "0000644\0"; int() ignores spaces
    except ValueError:
        text = field.split(b"\0", 1)[0]  # text then garbage, or an empty field
    try:
        return int(text, 8)
    except ValueError:
        if not text.strip():
            return 0
        raise ArchiveError(f"bad number {text!r} in a tar header (not a tar archive?)") from None


def _text(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def member_path(name: bytes) -> bytes:
    """The member's path relative to the root: leading `/` and `.` parts dropped (as
    tar does); `..` refused. The root itself is `.`."""
    if name[:1] not in (b".", b"/") and b"/." not in name and b"//" not in name:
        return name.rstrip(b"/")  # the usual name: no `.`, `..` or empty parts to drop
    parts = [part for part in name.split(b"/") if part and part != b"."]
    if b".." in parts:
        raise ArchiveError(f"member {name.decode(errors='replace')!r} has a '..' component; "
                           "refusing the archive")
    return b"/".join(parts) or b"."


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    records = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError("malformed pax header") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise ArchiveError("malformed pax header")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key] = value
        pos += length
    return records


def _pax_time_ns(value: bytes) -> int:
    whole, _, fraction = value.partition(b".")
    negative = whole.startswith(b"-")
    ns = abs(int(whole or b"0")) * 1_000_000_000 + int((fraction + b"000000000")[:9] or b"0")
    return -ns if negative else ns


def _remove(path: bytes):
    """Make room for a member: whatever an earlier member left at `path` goes (a
    directory only when the new member is not one)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        import shutil
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _make_parent(path: bytes):
    parent = path.rpartition(b"/")[0]
    if parent:
        os.makedirs(parent, 0o755, exist_ok=True)


def _create(make, path: bytes):
    """Run make(path), first making its parents, or replacing what is at path."""
    try:
        return make(path)
    except FileNotFoundError:
        _make_parent(path)
    except FileExistsError:
        _remove(path)
    return make(path)


class Member:
    __slots__ = ("path", "type", "mode", "uid", "gid", "size", "mtime_ns", "linkname",
                 "major", "minor", "xattrs")


def _set_xattrs(target, xattrs, follow=True):
    for name, value in xattrs:
        os.setxattr(target, name, value, follow_symlinks=follow)


class Unpacker:
    def __init__(self, source: Input, *, devices: bool = True):
        self.source = source
        self.devices = devices
        self.stats = Stats()
        self._directory_times: list[tuple[bytes, int]] = []
        self._setgid_directories: set[bytes] = set()

    def run(self) -> Stats:
        global_records: dict[bytes, bytes] = {}
        records: dict[bytes, bytes] = {}
        first = True
        while True:
            header = self.source.read(BLOCK)
            if header == ZERO_BLOCK:
                break
            # The checksum tells a tar from anything else: checked on the first header and
            # on any without the ustar magic. Corruption inside is for the compression's
            # own checksum and the archive's SHA-256 to catch.
            if first or header[257:262] != b"ustar":
                self._check(header)
                first = False
            kind = header[156:157]
            size = _number(header[124:136])
            if kind in (b"x", b"g", b"L", b"K"):
                data = self.source.read(size + (-size % BLOCK))[:size]
                if kind == b"x":
                    records.update(_pax_records(data))
                elif kind == b"g":
                    global_records.update(_pax_records(data))
                else:
                    records[b"path" if kind == b"L" else b"linkpath"] = data.split(b"\0", 1)[0]
                continue
            if global_records:
                records = {**global_records, **records}
            member = self._member(header, kind, size, records)
            records = {}
            self._unpack(member)
        # The rest (the second zero block, record padding) is read so the writer finishes.
        self.source.drain()
        # Directory times last, deepest first: creating entries inside changes them.
        for path, mtime_ns in reversed(self._directory_times):
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        return self.stats

    @staticmethod
    def _check(header: bytes):
        expected = _number(header[148:156])
        actual = sum(header) - sum(header[148:156]) + 8 * 32
        if expected != actual:
            raise ArchiveError("bad tar header checksum (not a tar archive, or corrupt)")

    @staticmethod
    def _member(header: bytes, kind: bytes, size: int, records: dict) -> Member:
        member = Member()
        name = _text(header[0:100])
        if header[345] and header[257:263] == b"ustar\0":
            name = _text(header[345:500]) + b"/" + name
        mtime_ns = _number(header[136:148]) * 1_000_000_000
        member.linkname = _text(header[157:257])
        member.uid = _number(header[108:116])
        member.gid = _number(header[116:124])
        member.xattrs = None
        if records:  # pax extended headers override the ustar fields
            name = records.get(b"path", name)
            member.linkname = records.get(b"linkpath", member.linkname)
            member.uid = int(records.get(b"uid", member.uid))
            member.gid = int(records.get(b"gid", member.gid))
            size = int(records.get(b"size", size))
            if b"mtime" in records:
                mtime_ns = _pax_time_ns(records[b"mtime"])
            member.xattrs = [(key[len(b"SCHILY.xattr."):], value)
                             for key, value in records.items()
                             if key.startswith(b"SCHILY.xattr.")]
            if any(key.startswith(b"GNU.sparse.") for key in records):
                kind = b"S"
        if kind in REGULAR_TYPES and name.endswith(b"/"):
            kind = b"5"  # pre-POSIX archives mark directories with a trailing slash
        member.path = member_path(name)
        if kind in (b"S", b"M"):
            raise ArchiveError(f"{member.path.decode(errors='replace')}: sparse and "
                               "multi-volume members are not supported")
        member.type = kind
        member.mode = _number(header[100:108]) & 0o7777
        member.size = size
        member.mtime_ns = mtime_ns
        device = kind in (b"3", b"4")
        member.major = _number(header[329:337]) if device else 0
        member.minor = _number(header[337:345]) if device else 0
        return member

    def _unpack(self, m: Member):
        kind = m.type
        if kind in REGULAR_TYPES:
            self._file(m)
            return
        # Like tarfile and GNU tar, only regular members carry data.
        if kind == b"5":
            self._directory(m)
        elif kind == b"2":
            self._symlink(m)
        elif kind == b"1":
            self._hardlink(m)
        elif kind in (b"3", b"4", b"6"):
            self._node(m)
        else:
            raise ArchiveError(f"{m.path.decode(errors='replace')}: unsupported tar member "
                               f"type {kind!r}")

    def _chown_needed(self, m: Member) -> bool:
        """Whether the new entry's owner differs from what creating it gave it: root's,
        or in a setgid directory the directory's group. (Skipped chowns count: each is a
        journal update on ext4.)"""
        return bool(m.uid or m.gid or (self._setgid_directories and
                                       m.path.rpartition(b"/")[0] in self._setgid_directories))

    def _file(self, m: Member):
        # Created with its permission bits (the umask is 0), owned by root: each further
        # metadata change costs a journal update on ext4, so only the needed ones follow.
        fd = _create(lambda path: os.open(path, CREATE_FLAGS, m.mode & 0o777), m.path)
        try:
            self.source.copy_to(fd, m.size)
            # Owner before mode (chown clears setuid bits) and xattrs after owner (chown
            # clears security.capability); the time last.
            if self._chown_needed(m):
                os.fchown(fd, m.uid, m.gid)
            if m.mode & 0o7000:
                os.fchmod(fd, m.mode)
            if m.xattrs:
                _set_xattrs(fd, m.xattrs)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        finally:
            os.close(fd)
        self.source.skip(-m.size % BLOCK)
        self.stats.files += 1
        self.stats.bytes += m.size

    def _directory(self, m: Member):
        path = m.path
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
            _make_parent(path)
            os.mkdir(path, m.mode & 0o777)
            made = True
        if self._chown_needed(m):
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
            made = False  # a setgid parent's bit may have been inherited
        if not made or m.mode & 0o7000:
            os.chmod(path, m.mode)
        if m.mode & stat.S_ISGID:
            self._setgid_directories.add(b"" if path == b"." else path)
        if m.xattrs:
            _set_xattrs(path, m.xattrs, follow=False)
        self._directory_times.append((path, m.mtime_ns))
        self.stats.directories += 1

    def _symlink(self, m: Member):
        _create(lambda path: os.symlink(m.linkname, path), m.path)
        if self._chown_needed(m):
            os.chown(m.path, m.uid, m.gid, follow_symlinks=False)
        if m.xattrs:
            _set_xattrs(m.path, m.xattrs, follow=False)
        os.utime(m.path, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
        self.stats.symlinks += 1

    def _hardlink(self, m: Member):
        target = member_path(m.linkname)
        if not os.path.lexists(target):
            raise ArchiveError(f"{m.path.decode(errors='replace')}: hard link target "
                               f"{target.decode(errors='replace')!r} is not in the archive")
        if target == m.path:
            return
        # linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        _create(lambda path: os.link(target, path, follow_symlinks=False), m.path)
        self.stats.hardlinks += 1

    def _node(self, m: Member):
        if m.type == b"6":
            file_type = stat.S_IFIFO
        elif not self.devices:
            self.stats.skipped_devices += 1
            return
        else:
            file_type = stat.S_IFCHR if m.type == b"3" else stat.S_IFBLK
        device = os.makedev(m.major, m.minor)
        _create(lambda path: os.mknod(path, 0o600 | file_type, device), m.path)
        os.chown(m.path, m.uid, m.gid, follow_symlinks=False)
        os.chmod(m.path, m.mode)
        if m.xattrs:
            _set_xattrs(m.path, m.xattrs, follow=False)
        os.utime(m.path, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
        self.stats.devices += 1
