"""The tar header codec: one reading of tar headers for every part of droot.

Export (image/tarstream.py) and deploy (deploy/members.py) read headers through
HeaderReader and differ only in what they do with an entry's data (copied verbatim,
or written to disk). Formats: v7, POSIX ustar and pax (local and global extended
headers), GNU (long names and links, base-256 numbers), as GNU tar, bsdtar, Go's
archive/tar (docker) and Python's tarfile write them.

Every header is checked as GNU tar checks it, and anything a careful reader would not
take is refused with a TarFormatError whose message names the member (or the header's
byte offset when it has no name yet) and the problem, in one line: bad checksums,
negative sizes, numbers that are not numbers, NUL bytes in names, `..` components,
extended headers beyond MAX_EXTENSION_SIZE.

Standard library only, and no import of any stage: both stages build on this.
Paths and names are bytes end to end (never decoded here).
"""

from zlib import adler32

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

# Extended headers (pax `x`/`g`, GNU `L`/`K`) larger than this are refused before they
# are read: Go's archive/tar (what docker writes and reads with) has the same 1 MiB cap.
# Nothing real comes near it: Linux limits paths to 4 KiB and an xattr value to 64 KiB.
MAX_EXTENSION_SIZE = 1 << 20

# Type flags, as ints (block[156]).
REGULAR, OLD_REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO, CONTIGUOUS = (
    ord("0"), 0, ord("1"), ord("2"), ord("3"), ord("4"), ord("5"), ord("6"), ord("7"))
PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK = ord("x"), ord("g"), ord("L"), ord("K")
GNU_SPARSE, GNU_MULTIVOLUME = ord("S"), ord("M")
REGULAR_TYPES = frozenset((REGULAR, OLD_REGULAR, CONTIGUOUS))
# Like tarfile and GNU tar: these have no data blocks, whatever their size field says.
NO_DATA = frozenset((HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO))
EXTENSIONS = frozenset((PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK))
POSIX_MAGIC = b"ustar\0"
XATTR_PREFIX = b"SCHILY.xattr."
# The pax records nearly every member of a docker export has, and none of them an xattr.
_COMMON_PAX_KEYS = frozenset((b"atime", b"ctime", b"mtime", b"path", b"size", b"linkpath"))

MAX_ID = (1 << 32) - 2          # (uid_t)-1 means "leave unchanged" to chown(2)
MAX_SIZE = (1 << 63) - 1        # off_t
MAX_TIME_NS = (1 << 63) * 1_000_000_000  # time_t seconds
MAX_DEVICE_NUMBER = (1 << 32) - 1


class TarFormatError(Exception):
    """The stream is not a well-formed tar archive, or a member asks for something no
    tar reader should do. The message is one line naming the member."""


def padded(size: int) -> int:
    return (size + BLOCK - 1) & ~(BLOCK - 1)


def show(name: bytes) -> str:
    """A member name for a message: readable, one line, no control characters."""
    decoded = bytes(name).decode("utf-8", "backslashreplace")
    if not decoded.isprintable():  # NUL, newlines and other control characters escaped
        decoded = "".join(c if c.isprintable() else repr(c)[1:-1] for c in decoded)
    return decoded or "(empty name)"


def number(field) -> int:
    """A numeric header field: octal text (NUL- or space-terminated, leading spaces
    allowed, empty = 0), or GNU base-256 (high bit of the first byte set; the next bit
    is the sign, in two's complement over the whole field). ValueError if neither."""
    digits = field[:-1]
    if field[-1] == 0 and digits.isdigit():  # the usual "0000644\0": fast path
        return int(digits, 8)
    first = field[0]
    if first & 0x80:
        value = int.from_bytes(field, "big")
        if first & 0x40:  # negative: the whole field is the two's complement
            return value - (1 << (8 * len(field)))
        return value - (0x80 << (8 * (len(field) - 1)))
    end = field.find(b"\0")
    digits = (field if end < 0 else field[:end]).strip(b" ")
    if not digits:
        return 0
    if not digits.isdigit():  # int() would take signs, underscores and inner spaces
        raise ValueError(field)
    return int(digits, 8)


def checksum_ok(block) -> bool:
    """The header's checksum, as GNU tar and tarfile accept it: the sum of its bytes with
    the checksum field as spaces, unsigned, or signed as some old tars computed it.
    (A check against corruption, no signature: whoever writes a hostile archive writes a
    right checksum too.)"""
    field = block[148:156]
    try:
        stored = number(field)
    except ValueError:
        return False
    if block.isascii():
        return stored == _ascii_sum(block) - sum(field) + 8 * 32
    unsigned = sum(block) - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    high = sum(1 for byte in block if byte & 0x80) - sum(1 for byte in field if byte & 0x80)
    return stored == unsigned - 256 * high


def _ascii_sum(block) -> int:
    """The sum of the bytes of a block whose every byte is below 128, from Adler-32 (ten
    times faster than sum()): its low half is 1 + the sum modulo 65521, and 512 such
    bytes sum to at most 65024, below the modulus (signed and unsigned sums agree too)."""
    return (adler32(block) & 0xFFFF) - 1


# The numeric fields as nearly every tar writes them: mode, uid, gid (7 octal digits and
# a NUL each), size, mtime (11 and a NUL each), the checksum (6, a NUL and a space).
_USUAL_DIGITS = 7 + 7 + 7 + 11 + 11 + 6


def usual_numbers(block) -> tuple[int, int, int, int, int] | None:
    """(mode, uid, gid, size, mtime) of a header written the usual way, with a right
    checksum; None for any other (to be read the careful way: `number`, `checksum_ok`).
    All six fields are read as one number, 3 bits a digit, then taken apart with shifts
    and masks (one int() instead of six). Their fixed widths keep every number in range."""
    fields = block[100:156]
    if not (fields[7] == fields[15] == fields[23] == fields[35] == fields[47] == fields[54]
            == 0 and fields[55] == 32 and block.isascii()):
        return None
    digits = fields[:54].replace(b"\0", b"")
    if len(digits) != _USUAL_DIGITS or not digits.isdigit():
        return None
    try:
        value = int(digits, 8)
    except ValueError:  # an 8 or a 9
        return None
    stored = value & 0o777777
    if stored != _ascii_sum(block) - sum(fields[48:56]) + 8 * 32:
        return None
    value >>= 18
    mtime = value & 0o77777777777
    value >>= 33
    size = value & 0o77777777777
    value >>= 33
    gid = value & 0o7777777
    value >>= 21
    return value >> 21, value & 0o7777777, gid, size, mtime


def text(field: bytes, size: int | None = None) -> bytes:
    """A NUL-terminated text field (of the first `size` bytes of `field`)."""
    end = field.find(b"\0", 0, size)
    if end < 0:
        return field if size is None or size == len(field) else field[:size]
    return field[:end]


def pax_records(data: bytes, end: int | None = None) -> dict[bytes, bytes]:
    """The records of a pax extended header (its first `end` bytes of `data`),
    `LENGTH KEY=VALUE\\n` each, with one copy of each key and value and, past a few KiB,
    none of the whole. ValueError if malformed. Records end at `end` or at a NUL where
    the next record would start (padding)."""
    end = len(data) if end is None else end
    if end <= 4096:  # the usual header: a copy costs less than the careful way's calls
        records = _records_one_a_line(data[:end])
        if records is not None:
            return records
    records = {}
    pos = 0
    find = data.find
    while pos < end and data[pos] != 0:
        space = find(b" ", pos, min(end, pos + 21))
        if space < 0:
            raise ValueError("a record without a length")
        length = data[pos:space]
        if not length.isdigit():
            raise ValueError("a record without a length")
        stop = pos + int(length)
        if stop > end or stop <= space + 1 or data[stop - 1] != 0x0A:
            raise ValueError("a record whose length is wrong")
        equals = find(b"=", space + 1, stop - 1)
        if equals <= space + 1:
            raise ValueError("a record without a keyword")
        records[bytes(data[space + 1:equals])] = bytes(data[equals + 1:stop - 1])
        pos = stop
    return records


def _records_one_a_line(header: bytes) -> dict[bytes, bytes] | None:
    """The records of a pax header whose every record is one line (as good as always);
    None when one is not (a value with a newline in it), or is malformed."""
    lines = header.split(b"\n")
    if lines.pop() != b"":
        return None
    records = {}
    for line in lines:
        space = line.find(b" ", 0, 21)
        equals = line.find(b"=", space)
        length = line[:space]
        if space < 1 or equals <= space + 1 or not length.isdigit() or \
                int(length) != len(line) + 1:
            return None
        records[line[space + 1:equals]] = line[equals + 1:]
    return records


def member_path(name: bytes) -> bytes:
    """The member's path relative to the root: leading `/`, `./` and empty or `.`
    components dropped (as tar does); b"" is the root itself. ValueError on a `..`
    component: a real root filesystem never has one, and GNU tar skips such members."""
    if name[:1] not in (b".", b"/") and b"/." not in name and b"//" not in name:
        return name.rstrip(b"/")  # the usual name: nothing to drop
    parts = [part for part in name.split(b"/") if part and part != b"."]
    if b".." in parts:
        raise ValueError("has a '..' component")
    return b"/".join(parts)


def _pax_seconds_ns(value: bytes) -> int:
    """A pax time (decimal seconds, optional sign and fraction) in nanoseconds."""
    negative = value[:1] == b"-"
    whole, dot, fraction = (value[1:] if negative else value).partition(b".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        raise ValueError(value)
    ns = int(whole) * 1_000_000_000 + int((fraction + b"000000000")[:9])
    return -ns if negative else ns


def _pax_decimal(value: bytes) -> int:
    if not value.isdigit():
        raise ValueError(value)
    return int(value)


# pax keyword -> (Header attribute, parser) of the numbers a pax header may override
_PAX_NUMBERS = {b"size": ("size", _pax_decimal), b"mtime": ("mtime_ns", _pax_seconds_ns),
                b"uid": ("uid", _pax_decimal), b"gid": ("gid", _pax_decimal)}


def _careful_numbers(block) -> tuple[int, int, int, int, int] | None:
    """(mode, uid, gid, size, mtime) of a header written any way `number` reads; None
    when one is not a number."""
    fields = block[100:148]
    try:
        return (number(fields[:8]), number(fields[8:16]), number(fields[16:24]),
                number(fields[24:36]), number(fields[36:]))
    except ValueError:
        return None


class Header:
    """One member as its headers describe it. `blocks` are its header blocks as read,
    extended headers included; `data_size` is how many bytes of data (before padding)
    follow them in the archive."""

    __slots__ = ("blocks", "type", "name", "path", "linkname", "mode", "uid", "gid",
                 "size", "data_size", "mtime_ns", "major", "minor", "xattrs", "pax",
                 "sparse", "index", "offset")

    def link_path(self) -> bytes:
        """A hard link's target as a member path (refused like a member's name)."""
        try:
            return member_path(self.linkname)
        except ValueError:
            raise TarFormatError(f"{show(self.path)}: hard link target "
                                 f"'{show(self.linkname)}' has a '..' component") from None


class HeaderReader:
    """Reads member headers with `read(n)`, which returns n bytes, or fewer at the end of
    the stream (or raises for it). After next() returns a Header, the caller consumes its
    data_size bytes plus padding before calling next() again."""

    def __init__(self, read):
        self._read = read
        self._globals: dict[bytes, bytes] = {}
        self.index = 0      # members read so far
        self.offset = 0     # byte offset of the next header in the archive
        self._block_at = 0  # byte offset of the header block being read

    def _where(self) -> str:
        return f"the tar header at byte {self._block_at}"

    def has_globals(self) -> bool:
        """Whether a global pax header (type `g`) is in effect for the members read next."""
        return bool(self._globals)

    def _error(self, problem: str):
        raise TarFormatError(f"{self._where()}: {problem}")

    def _read_exactly(self, n: int):
        data = self._read(n)
        if len(data) != n:
            raise TarFormatError("the archive is truncated")
        self.offset += n
        return data

    def next(self, *, end_without_marker: bool = False) -> Header | None:
        """The next member, or None at the end-of-archive marker (or at the end of the
        stream between members, when `end_without_marker`)."""
        start = self._block_at = self.offset
        block = self._read(BLOCK)
        if len(block) == BLOCK and block[156] not in EXTENSIONS:  # a member of one block
            if block == ZERO_BLOCK:
                return None
            self.offset = start + BLOCK
            header = self._member(block, [block], {})
        else:
            header = self._extended_member(block, end_without_marker)
            if header is None:
                return None
        header.offset = start
        self.index += 1
        self.offset += padded(header.data_size)
        return header

    def _extended_member(self, block, end_without_marker: bool) -> Header | None:
        """The member whose headers start with `block`, an extended header (or a short
        read): extended headers are read up to the member's own block."""
        blocks = []
        local: dict[bytes, bytes] = {}
        while True:
            if len(block) != BLOCK:
                if not block and not blocks and end_without_marker:
                    return None
                raise TarFormatError("the archive is truncated")
            if block == ZERO_BLOCK:
                if blocks:
                    self._error("an extended header without its member")
                return None
            self.offset += BLOCK
            blocks.append(block)
            type_ = block[156]
            if type_ not in EXTENSIONS:
                return self._member(block, blocks, local)
            if not checksum_ok(block):
                self._bad_checksum(blocks)
            size = self._number(block, 124, 136, "size")
            if size < 0:
                self._error(f"negative size {size} of an extended header")
            if size > MAX_EXTENSION_SIZE:
                self._error(f"an extended header of {size} bytes (more than the "
                            f"{MAX_EXTENSION_SIZE} bytes a tar reader accepts)")
            data = self._read_exactly(padded(size))
            blocks.append(data)
            if type_ == PAX_LOCAL or type_ == PAX_GLOBAL:
                try:
                    records = pax_records(data, size)
                except ValueError as error:
                    self._error(f"malformed pax header ({error})")
                (local if type_ == PAX_LOCAL else self._globals).update(records)
            elif type_ == GNU_LONGNAME:
                local.setdefault(b"GNU.longname", text(data, size))
            else:
                local.setdefault(b"GNU.longlink", text(data, size))
            self._block_at = self.offset
            block = self._read(BLOCK)

    def _bad_checksum(self, blocks):
        if self.index == 0 and len(blocks) == 1:
            raise TarFormatError("not a tar archive (bad header checksum at its start)")
        self._error("bad header checksum (the archive is corrupt)")

    @staticmethod
    def _xattrs_and_sparse(h: Header, records: dict[bytes, bytes], where: str) -> None:
        """The SCHILY.xattr.* and GNU.sparse.* records: a pass over the records made only
        when there are others than the usual times and names."""
        for key, value in records.items():
            if key.startswith(XATTR_PREFIX):
                attribute = key[len(XATTR_PREFIX):]
                if not attribute or b"\0" in attribute:
                    raise TarFormatError(f"{where}: extended attribute name "
                                         f"'{show(attribute)}' is empty or has a NUL byte")
                if h.xattrs is None:
                    h.xattrs = []
                h.xattrs.append((attribute, value))  # an empty value is one
            elif key.startswith(b"GNU.sparse."):
                h.sparse = True

    def _number(self, block, start, end, what):
        try:
            return number(block[start:end])
        except ValueError:
            self._error(f"bad {what} field '{show(text(block[start:end]))}'")

    @staticmethod
    def _out_of_range(h: Header, where: str):
        """Refuse the first of h's numbers that is out of range."""
        if h.size < 0:
            raise TarFormatError(f"{where}: negative size {h.size} in its header")
        if h.size > MAX_SIZE:
            raise TarFormatError(f"{where}: size {h.size} is out of range")
        for what, value in (("uid", h.uid), ("gid", h.gid)):
            if value < 0:
                raise TarFormatError(f"{where}: negative {what} {value} in its header")
            if value > MAX_ID:
                raise TarFormatError(f"{where}: {what} {value} is out of range")
        raise TarFormatError(f"{where}: modification time is out of range")

    def _member(self, block, blocks, local) -> Header:
        numbers = usual_numbers(block)  # checksum checked too; each number in range
        in_range = numbers is not None
        if not in_range:
            if not checksum_ok(block):
                self._bad_checksum(blocks)
            numbers = _careful_numbers(block)
        h = Header()
        h.blocks = blocks
        h.index = self.index
        records = {**self._globals, **local} if self._globals else local
        type_ = block[156]
        # The name: pax path, else GNU long name, else ustar prefix/name.
        name = (records.get(b"path") or records.get(b"GNU.longname")) if records else None
        if not name:
            name = block[:100].partition(b"\0")[0]  # faster than find(b"\0", 0, 100)
            if block[345] and block[257:263] == POSIX_MAGIC:
                name = text(block[345:500]) + b"/" + name
        elif b"\0" in name:
            raise TarFormatError(f"{show(name)}: its name has a NUL byte")
        h.name = name
        try:
            h.path = path = member_path(name)
        except ValueError as error:
            raise TarFormatError(f"{show(name)}: {error}; refusing the archive") from None
        if name[-1:] == b"/" and type_ in REGULAR_TYPES:
            type_ = DIRECTORY  # pre-POSIX archives mark directories with a trailing slash
        h.type = type_
        if not path and type_ != DIRECTORY:
            if not name:
                self._error("a member with an empty name")
            raise TarFormatError(f"{show(path or name)}: a member that is not a directory names the "
                                 "root directory")
        linkname = (records.get(b"linkpath") or records.get(b"GNU.longlink")) if records else None
        if not linkname:
            linkname = block[157:257].partition(b"\0")[0]
        elif b"\0" in linkname:
            raise TarFormatError(f"{show(path or name)}: link target '{show(linkname)}' has a NUL byte")
        h.linkname = linkname
        if numbers is None:
            raise TarFormatError(f"{show(path or name)}: a numeric field of its header is not a "
                                 "number (the archive is corrupt)")
        mode, h.uid, h.gid, h.size, mtime = numbers
        h.mode = mode & 0o7777
        h.mtime_ns = mtime * 1_000_000_000
        h.pax = None
        h.xattrs = None
        h.sparse = type_ == GNU_SPARSE or type_ == GNU_MULTIVOLUME
        if records:
            in_range = False
            h.pax = records
            for key in records.keys() & _PAX_NUMBERS.keys():
                value = records[key]
                if not value:
                    continue  # an empty value unsets the keyword: the ustar field counts
                attribute, parse = _PAX_NUMBERS[key]
                try:
                    setattr(h, attribute, parse(value))
                except ValueError:
                    raise TarFormatError(f"{show(path or name)}: bad {show(key)} value "
                                         f"'{show(value[:40])}' in its pax header") from None
            if not records.keys() <= _COMMON_PAX_KEYS:
                self._xattrs_and_sparse(h, records, show(path or name))
        if not in_range and not (0 <= h.size <= MAX_SIZE and 0 <= h.uid <= MAX_ID and
                                 0 <= h.gid <= MAX_ID and -MAX_TIME_NS < h.mtime_ns < MAX_TIME_NS):
            self._out_of_range(h, show(path or name))
        h.data_size = 0 if type_ in NO_DATA else h.size
        if type_ == CHARDEV or type_ == BLOCKDEV:
            try:
                h.major = number(block[329:337])
                h.minor = number(block[337:345])
            except ValueError:
                raise TarFormatError(f"{show(path or name)}: bad device number in its header") from None
            if not (0 <= h.major <= MAX_DEVICE_NUMBER and 0 <= h.minor <= MAX_DEVICE_NUMBER):
                raise TarFormatError(f"{show(path or name)}: device number out of range")
        else:
            h.major = h.minor = 0
        return h
