"""Tar streams at the level of their 512-byte header blocks.

An export copies almost every entry through unchanged, so instead of `tarfile` (which
decodes and re-encodes each member) this reads only the fields that decide what happens
to an entry (path, type, size, link target) and keeps the entry's header blocks verbatim,
PAX and GNU extension headers included (xattrs, long names, big ids travel untouched).
Only an entry that must change (a hardlink that becomes a regular file, the config files
droot adds) gets a new header, written by `tarfile` in PAX format. Headers are read by
droot's one tar codec (droot.core.tarformat), as deploy reads them.
"""

import tarfile

from droot.core.tarformat import (BLOCK, HARDLINK, NO_DATA, HeaderReader, TarFormatError,
                                  member_path, number, padded, text)

END_OF_ARCHIVE = bytes(2 * BLOCK)
COPY_CHUNK = 1 << 16  # below malloc's mmap threshold: no page-fault churn per chunk
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# pax keywords that TarInfo holds in fields of its own (or that are the codec's)
_FIELD_KEYWORDS = frozenset((b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime",
                             b"atime", b"ctime", b"uname", b"gname", b"GNU.longname",
                             b"GNU.longlink"))


def _unsafe(name: bytes) -> bool:
    """Whether a tar reader would put a member (or a hard link's target) of this name
    outside the directory it extracts into: an absolute name or a `..` component."""
    return name[:1] == b"/" or b".." in name.split(b"/")


def plain_header(parsed, globals_active: bool) -> bool:
    """Whether the member's header blocks, copied verbatim into the output, say what droot
    read to every tar reader, whatever header fields it prefers, and name nothing outside
    the extraction directory. Otherwise the entry gets a new header (Entry.rewritten).

    Not plain: a global pax header is in effect (in the output, which joins the layers,
    it would also apply to the members of the layers above and to droot's own files, and
    drop with the member it came with); a name or hard link target that is absolute, or
    that a reader of another field than droot's (ustar name and prefix, GNU long name, pax
    path) would take for one with `..`; a pax size other than the ustar size field says;
    a size on a member that has no data."""
    if globals_active:
        return False
    if parsed.size and parsed.type in NO_DATA:  # GNU tar skips that much after a symlink,
        return False                            # a device or a FIFO; droot and tarfile do not
    name = parsed.name
    if name[:1] == b"/":
        return False
    block = parsed.blocks[-1]
    pax = parsed.pax
    if pax:
        if (b"path" in pax and b"GNU.longname" in pax) or \
                (b"linkpath" in pax and b"GNU.longlink" in pax):
            return False
        if pax.get(b"size"):
            try:
                if number(block[124:136]) != parsed.size:
                    return False
            except ValueError:
                return False
    if len(parsed.blocks) > 1:  # an extended header named it: the ustar fields count too
        ustar = text(block[:100])
        if _unsafe(ustar) or (block[257:263] == b"ustar\0" and block[345]
                              and _unsafe(text(block[345:500]) + b"/" + ustar)):
            return False
    if parsed.type == HARDLINK:
        if parsed.linkname[:1] == b"/" or _unsafe(text(block[157:257])):
            return False
    return True


def _str(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def normalise(name: str) -> str:
    """A member name as a relative path without `./`, `/` or a trailing slash ("" = root)."""
    try:
        return _str(member_path(name.encode("utf-8", "surrogateescape")))
    except ValueError:
        raise TarFormatError(f"member name {name!r} has a '..' component") from None


class Entry:
    """One archive member: `header` holds its header blocks exactly as read."""

    __slots__ = ("header", "path", "linkname", "type", "size", "parsed", "index", "plain")

    def __init__(self, parsed, plain: bool = True):
        blocks = parsed.blocks
        self.plain = plain  # `header` may be copied verbatim (plain_header)
        self.header = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        self.path = _str(parsed.path)          # normalised
        self.linkname = _str(parsed.linkname)  # as written (hardlinks: a member name)
        self.type = parsed.type
        self.size = parsed.data_size
        self.parsed = parsed      # everything the codec read (tarformat.Header)
        self.index = parsed.index  # position in its archive (0, 1, 2, ...)

    def tarinfo(self) -> tarfile.TarInfo:
        """All the entry's metadata as a TarInfo (for writing a changed header)."""
        parsed = self.parsed
        try:
            info = tarfile.TarInfo.frombuf(parsed.blocks[-1], "utf-8", "surrogateescape")
        except tarfile.TarError as error:
            raise TarFormatError(f"{self.path}: cannot rewrite its header ({error})") from None
        info.name = self.path
        info.linkname = self.linkname
        info.size = parsed.data_size  # none for a link, a device, ...: whatever the header said
        info.mode = parsed.mode
        info.uid, info.gid = parsed.uid, parsed.gid
        info.mtime = parsed.mtime_ns / 1e9 if parsed.mtime_ns % 1_000_000_000 else \
            parsed.mtime_ns // 1_000_000_000
        pax = parsed.pax or {}
        for key in (b"uname", b"gname"):
            if pax.get(key):
                setattr(info, key.decode(), _str(pax[key]))
        # xattrs and whatever else the source recorded
        info.pax_headers = {_str(key): _str(value) for key, value in pax.items()
                            if key not in _FIELD_KEYWORDS}
        return info

    def rewritten(self, linkname: str | None = None) -> bytes:
        """A new header saying what droot read of this entry (name normalised, hard link
        target `linkname`), with no global pax header behind it."""
        info = self.tarinfo()
        if linkname is not None:
            info.linkname = linkname
        return header_for(info)


class TarReader:
    """Reads entries from a binary stream. After next() returns an entry, its data is
    consumed with copy_data() or skip_data() (next() skips what is left)."""

    def __init__(self, stream, what: str, max_name: int | None = None):
        self._stream = stream
        self.what = what
        self._max_name = max_name  # longest name and link target taken, in bytes
        self._remaining = 0  # data bytes (with padding) of the current entry not yet read
        self._headers = HeaderReader(stream.read)
        try:
            self._seekable = stream.seekable()
        except (AttributeError, ValueError):
            self._seekable = False

    def __iter__(self):
        while (entry := self.next()) is not None:
            yield entry

    def next(self) -> Entry | None:
        if self._remaining:
            self.skip_data()
        try:
            # End of stream without an end-of-archive marker: accepted, as tar does.
            parsed = self._headers.next(end_without_marker=True)
        except TarFormatError as error:
            raise TarFormatError(f"{self.what}: {error}") from None
        if parsed is None:
            return None
        self._remaining = padded(parsed.data_size)
        longest = max(len(parsed.path), len(parsed.linkname))
        if self._max_name is not None and longest > self._max_name:
            raise TarFormatError(f"{self.what}: a member whose name or link target is longer "
                                 f"than {self._max_name} bytes (no file system takes it)")
        return Entry(parsed, plain_header(parsed, self._headers.has_globals()))

    def _truncated(self):
        return TarFormatError(f"{self.what}: the archive is truncated")

    def copy_data(self, write):
        """Pass the current entry's data, padding included, to `write`."""
        remaining, self._remaining = self._remaining, 0
        read = self._stream.read
        while remaining:
            chunk = read(min(remaining, COPY_CHUNK))
            if not chunk:
                raise self._truncated()
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
            raise self._truncated()

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
                raise self._truncated()
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
