"""Tar streams at the level of their 512-byte header blocks.

An export copies almost every entry through unchanged, so instead of `tarfile` (which
decodes and re-encodes each member) this reads only the fields that decide what happens
to an entry (path, type, size, link target) and keeps the entry's header blocks verbatim,
PAX and GNU extension headers included (xattrs, long names, big ids travel untouched).
Only an entry that must change (a hardlink that becomes a regular file, the config files
droot adds) gets a new header, written by `tarfile` in PAX format.
"""

import posixpath
import tarfile

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
END_OF_ARCHIVE = bytes(2 * BLOCK)
COPY_CHUNK = 1 << 16  # below malloc's mmap threshold: no page-fault churn per chunk

# type flags (as ints: block[156])
REGULAR, OLD_REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO, CONTIGUOUS = (
    ord("0"), 0, ord("1"), ord("2"), ord("3"), ord("4"), ord("5"), ord("6"), ord("7"))
PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK = ord("x"), ord("g"), ord("L"), ord("K")
NO_DATA = frozenset((HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO))
EXTENSIONS = frozenset((PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK))
POSIX_MAGIC = b"ustar\x0000"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class TarFormatError(Exception):
    """The stream is not a (complete, well-formed) tar archive."""


def padded(size: int) -> int:
    return (size + BLOCK - 1) & ~(BLOCK - 1)


def parse_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        # GNU base-256, used for sizes, ids and times beyond the octal range
        if field[0] & 0x40:
            raise TarFormatError("negative number in a tar header")
        return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"bad number {digits!r} in a tar header") from None


def parse_pax(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header (`LENGTH KEY=VALUE\\n` each)."""
    records = {}
    pos = 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= 0:
                raise ValueError
            key, _, value = data[space + 1:pos + length - 1].partition(b"=")
            records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError:
        raise TarFormatError("malformed PAX extended header") from None
    return records


def normalise(name: str) -> str:
    """A member name as a relative path without `./`, `/` or a trailing slash ("" = root)."""
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    name = name.rstrip("/")
    if name == ".":
        return ""
    if "//" in name or "/." in name or name.startswith("."):
        name = posixpath.normpath(name)
        if name == ".":
            return ""
        if name == ".." or name.startswith("../"):
            raise TarFormatError(f"member name {name!r} points outside the archive")
    return name


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class Entry:
    """One archive member: `header` holds its header blocks exactly as read."""

    __slots__ = ("header", "path", "linkname", "type", "size", "pax_records", "index")

    def __init__(self, header, path, linkname, type_, size, pax_records, index):
        self.header = header
        self.path = path          # normalised
        self.linkname = linkname  # as written (hardlinks: a member name; symlinks: any text)
        self.type = type_
        self.size = size
        self.pax_records = pax_records  # the entry's PAX records, unparsed
        self.index = index        # position in its archive (0, 1, 2, ...)

    def tarinfo(self) -> tarfile.TarInfo:
        """All the entry's metadata as a TarInfo (for writing a changed header)."""
        info = tarfile.TarInfo.frombuf(self.header[-BLOCK:], "utf-8", "surrogateescape")
        info.name = self.path
        info.linkname = self.linkname
        info.size = self.size
        pax = parse_pax(self.pax_records) if self.pax_records else {}
        for key in ("uid", "gid", "mtime"):
            if key in pax:
                value = float(pax.pop(key))
                setattr(info, key, value if key == "mtime" else int(value))
        for key in ("uname", "gname"):
            if key in pax:
                setattr(info, key, pax.pop(key))
        for key in ("path", "linkpath", "size", "atime", "ctime"):
            pax.pop(key, None)
        info.pax_headers = pax  # xattrs and whatever else the source recorded
        return info


class TarReader:
    """Reads entries from a binary stream. After next() returns an entry, its data is
    consumed with copy_data() or skip_data() (next() skips what is left)."""

    def __init__(self, stream, what: str):
        self._stream = stream
        self.what = what
        self._remaining = 0  # data bytes (with padding) of the current entry not yet read
        self._index = 0
        try:
            self._seekable = stream.seekable()
        except (AttributeError, ValueError):
            self._seekable = False

    def _read(self, n: int) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise TarFormatError(f"{self.what} is truncated")
        return data

    def __iter__(self):
        while (entry := self.next()) is not None:
            yield entry

    def next(self) -> Entry | None:
        if self._remaining:
            self.skip_data()
        blocks = []
        pax = None
        pax_records = b""
        long_name = long_link = None
        while True:
            block = self._stream.read(BLOCK)
            if not block and not blocks:
                return None  # end of stream without an end-of-archive marker: accepted
            if len(block) != BLOCK:
                raise TarFormatError(f"{self.what} is truncated")
            if block == ZERO_BLOCK:
                if blocks:
                    raise TarFormatError(f"{self.what} is corrupt (an extension header without its entry)")
                return None
            checksum = sum(block) - sum(block[148:156]) + 8 * 32
            try:
                stored = parse_number(block[148:156])
            except TarFormatError:
                stored = None
            if stored != checksum:
                raise TarFormatError(f"{self.what} is corrupt (bad tar header checksum)"
                                     if self._index or blocks else f"{self.what} is not a tar archive")
            type_ = block[156]
            size = parse_number(block[124:136])
            blocks.append(block)
            if type_ not in EXTENSIONS:
                break
            data = self._read(padded(size))
            blocks.append(data)
            if type_ == PAX_LOCAL:
                pax_records += data[:size]
                # most PAX headers only carry times: parse them now only when they say more
                if b"path=" in pax_records or b"size=" in pax_records:
                    pax = parse_pax(pax_records)
            elif type_ == GNU_LONGNAME:
                long_name = _text(data[:size])
            elif type_ == GNU_LONGLINK:
                long_link = _text(data[:size])
            # a PAX global header stays with the entry that follows it
        if pax and "path" in pax:
            name = pax["path"]
        elif long_name is not None:
            name = long_name
        elif block[257:265] == POSIX_MAGIC and block[345]:
            name = _text(block[345:500]) + "/" + _text(block[0:100])
        else:
            name = _text(block[0:100])
        if pax and "linkpath" in pax:
            linkname = pax["linkpath"]
        elif long_link is not None:
            linkname = long_link
        else:
            linkname = _text(block[157:257])
        if pax and "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarFormatError(f"{self.what}: bad size in a PAX header") from None
        if type_ in NO_DATA:
            size = 0  # as tar readers do: these types have no data blocks, whatever size says
        header = block if len(blocks) == 1 else b"".join(blocks)
        entry = Entry(header, normalise(name), linkname, type_, size, pax_records, self._index)
        self._index += 1
        self._remaining = padded(size)
        return entry

    def copy_data(self, write):
        """Pass the current entry's data, padding included, to `write`."""
        remaining, self._remaining = self._remaining, 0
        read = self._stream.read
        while remaining:
            chunk = read(min(remaining, COPY_CHUNK))
            if not chunk:
                raise TarFormatError(f"{self.what} is truncated")
            write(chunk)
            remaining -= len(chunk)

    def copy_rest(self, write):
        """Pass the rest of the archive to `write` as raw bytes, all but its end-of-archive
        marker (the two zero blocks that the engine's tar writer ends with)."""
        read = self._stream.read
        tail = b""
        while chunk := read(COPY_CHUNK):
            tail += chunk
            if len(tail) > len(END_OF_ARCHIVE):
                write(tail[:-len(END_OF_ARCHIVE)])
                tail = tail[-len(END_OF_ARCHIVE):]
        if tail != END_OF_ARCHIVE:
            raise TarFormatError(f"{self.what} is truncated")

    def skip_data(self):
        remaining, self._remaining = self._remaining, 0
        if not remaining:
            return
        if self._seekable:
            self._stream.seek(remaining, 1)
            return
        read = self._stream.read
        while remaining:
            chunk = read(min(remaining, COPY_CHUNK))
            if not chunk:
                raise TarFormatError(f"{self.what} is truncated")
            remaining -= len(chunk)

    def drain(self):
        """Read the stream to its end (after the end-of-archive marker), so a digest over
        the whole stream can be checked."""
        self.skip_data()
        while self._stream.read(COPY_CHUNK):
            pass


def header_for(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def file_member(name: str, data: bytes, mtime: int = 0, mode: int = 0o644) -> bytes:
    """A complete regular-file member: header, data and padding."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = mtime
    info.uname = info.gname = "root"
    return header_for(info) + data + bytes(padded(len(data)) - len(data))
