"""The tar codec's rules, header by header (droot.core.tarformat): what each field
becomes, and each refusal with the one line that names the member and the problem.
(Through `droot deploy`, the same archives: tests/deploy/test_deploy_headers.py.)"""

import io
import tarfile

import pytest

from droot.core.tarformat import (MAX_DEVICE_NUMBER, MAX_EXTENSION_SIZE, MAX_ID, HeaderReader,
                                  TarFormatError, _pax_seconds_ns, checksum_ok, member_path, padded,
                                  pax_records, show, text)
from tests.conftest import (END, base256, extended_header, member_bytes, pax_record, read_all,
                            with_field)


def headers(archive: bytes) -> list:
    return [header for header, _ in read_all(archive)]


def only(archive: bytes):
    [header] = headers(archive + END)
    return header


def refusal(archive: bytes) -> str:
    with pytest.raises(TarFormatError) as error:
        read_all(archive)
    return str(error.value)


def pax(records: dict, name="f", data=b"", **fields) -> bytes:
    payload = b"".join(pax_record(key, value) for key, value in records.items())
    return extended_header(b"x", payload) + member_bytes(name, data, **fields)


# --- what each field becomes ----------------------------------------------------------------

def test_the_fields_of_a_member():
    h = only(member_bytes("dir/file", b"hello", mode=0o4755, uid=1000, gid=50,
                          mtime=1_600_000_000))
    assert (h.name, h.path, h.type, h.mode, h.uid, h.gid, h.size, h.data_size) == \
        (b"dir/file", b"dir/file", ord("0"), 0o4755, 1000, 50, 5, 5)
    assert (h.mtime_ns, h.major, h.minor, h.xattrs, h.pax, h.sparse) == \
        (1_600_000_000 * 10 ** 9, 0, 0, None, None, False)
    assert (h.index, h.offset, len(h.blocks), h.linkname) == (0, 0, 1, b"")


def test_positions_in_the_archive():
    archive = member_bytes("a", b"x" * 600) + pax({b"path": b"b"}) + END
    stream = io.BytesIO(archive)
    reader = HeaderReader(stream.read)
    first = reader.next()
    assert (first.index, first.offset, reader.offset) == (0, 0, 512 + 1024)
    stream.read(1024)
    second = reader.next()
    assert (second.index, second.offset, len(second.blocks), second.path) == (1, 1536, 3, b"b")
    assert b"".join(second.blocks) == archive[1536:3072] and reader.offset == 3072
    assert reader.index == 2 and reader.next() is None


def test_types_without_data_have_none_whatever_their_size():
    for kind in (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE,
                 tarfile.CHRTYPE, tarfile.BLKTYPE):
        block = with_field(member_bytes("x", type=kind, linkname="t"), 124, b"%011o\0" % 700)
        h = only(block)
        assert (h.size, h.data_size) == (700, 0), kind
    assert only(member_bytes("x", b"a" * 700, type=tarfile.CONTTYPE)).data_size == 700


def test_a_regular_member_named_with_a_slash_is_a_directory():
    assert only(member_bytes("dir/", type=tarfile.REGTYPE)).type == ord("5")
    assert only(with_field(member_bytes("dir/"), 156, b"\0")).type == ord("5")  # v7
    assert only(member_bytes("dir/x", type=tarfile.REGTYPE)).type == ord("0")
    assert only(member_bytes("lnk/", type=tarfile.SYMTYPE, linkname="t")).type == ord("2")


def test_names_from_ustar_prefix_gnu_long_names_and_pax():
    long = "p/" * 60 + "name"
    assert only(member_bytes(long, format=tarfile.USTAR_FORMAT)).path == long.encode()
    assert only(member_bytes(long, format=tarfile.GNU_FORMAT)).path == long.encode()
    assert only(member_bytes(long, format=tarfile.PAX_FORMAT)).path == long.encode()
    # the prefix field counts in a POSIX header only (GNU's magic is "ustar  \0")
    ustar = member_bytes("name", format=tarfile.USTAR_FORMAT)
    gnu = with_field(ustar, 257, b"ustar  \0")
    assert only(with_field(ustar, 345, b"pre\0")).path == b"pre/name"
    assert only(with_field(ustar, 345, b"p\0")).path == b"p/name"
    assert only(with_field(gnu, 345, b"pre\0")).path == b"name"
    # a 100-byte name or link target has no NUL
    assert only(member_bytes("n" * 100, format=tarfile.USTAR_FORMAT)).path == b"n" * 100
    h = only(member_bytes("l", type=tarfile.SYMTYPE, linkname="t" * 100,
                          format=tarfile.USTAR_FORMAT))
    assert h.linkname == b"t" * 100


def test_the_first_long_name_wins_and_long_links():
    archive = (extended_header(b"L", b"first\0") + extended_header(b"L", b"second\0") +
               extended_header(b"K", b"/long/target\0") +
               member_bytes("short", type=tarfile.SYMTYPE, linkname="x"))
    h = only(archive)
    assert (h.path, h.linkname) == (b"first", b"/long/target")


def test_global_pax_records_hold_until_a_local_one_overrides():
    archive = (extended_header(b"g", pax_record(b"uid", b"7") + pax_record(b"comment", b"c")) +
               member_bytes("a") + pax({b"uid": b"8"}, name="b") + member_bytes("c") + END)
    assert [h.uid for h in headers(archive)] == [7, 8, 7]
    assert headers(archive)[1].pax == {b"uid": b"8", b"comment": b"c"}


def test_pax_numbers_override_the_header():
    h = only(pax({b"size": b"3", b"mtime": b"-1.5", b"uid": b"4294967294", b"gid": b"0"},
                 data=b"abc", uid=5, gid=6))
    assert (h.size, h.data_size, h.mtime_ns, h.uid, h.gid) == \
        (3, 3, -1_500_000_000, MAX_ID, 0)
    # an empty value unsets the keyword: the header's own field counts, and the others
    for empty in (b"size", b"mtime", b"uid", b"gid"):
        values = {b"size": b"0", b"mtime": b"5", b"uid": b"6", b"gid": b"7", empty: b""}
        h = only(pax(values, uid=1, gid=2, mtime=3))
        expected = {b"size": 0, b"mtime": 5 * 10 ** 9, b"uid": 6, b"gid": 7,
                    empty: {b"size": 0, b"mtime": 3 * 10 ** 9, b"uid": 1, b"gid": 2}[empty]}
        assert (h.size, h.mtime_ns, h.uid, h.gid) == tuple(expected.values()), empty


@pytest.mark.parametrize("value, ns", [
    (b"1", 10 ** 9), (b"1.5", 1_500_000_000), (b"-1.25", -1_250_000_000),
    (b"0.123456789123", 123_456_789), (b"12.000000001", 12_000_000_001), (b"-0", 0),
])
def test_pax_times(value, ns):
    assert _pax_seconds_ns(value) == ns


@pytest.mark.parametrize("value", [b"1.", b".5", b"abc", b"+1", b"1.5x", b"--1", b"1e9", b""])
def test_pax_times_that_are_not(value):
    with pytest.raises(ValueError):
        _pax_seconds_ns(value)


def test_xattrs_and_sparse_files():
    h = only(pax({b"SCHILY.xattr.user.a": b"1", b"SCHILY.xattr.user.empty": b"",
                  b"mtime": b"1"}))
    assert h.xattrs == [(b"user.a", b"1"), (b"user.empty", b"")]
    assert only(pax({b"GNU.sparse.size": b"9"})).sparse is True
    assert only(pax({b"comment": b"x"})).sparse is False
    assert only(member_bytes("s", type=b"S")).sparse is True
    assert only(member_bytes("m", type=b"M")).sparse is True


def test_devices():
    h = only(member_bytes("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3))
    assert (h.major, h.minor) == (1, 3)
    block = member_bytes("d", type=tarfile.BLKTYPE)
    h = only(with_field(with_field(block, 329, base256(MAX_DEVICE_NUMBER, 8)), 337,
                        base256(0, 8)))
    assert (h.major, h.minor) == (MAX_DEVICE_NUMBER, 0)
    h = only(with_field(block, 337, base256(MAX_DEVICE_NUMBER, 8)))
    assert (h.major, h.minor) == (0, MAX_DEVICE_NUMBER)


# --- refusals ----------------------------------------------------------------------------

def test_truncated_archives():
    archive = member_bytes("a", b"data") + END
    assert refusal(archive[:100]) == "the archive is truncated"
    assert refusal(extended_header(b"x", pax_record(b"path", b"p"))[:700]) == \
        "the archive is truncated"
    assert refusal(b"") == "the archive is truncated"
    reader = HeaderReader(io.BytesIO(b"").read)
    assert reader.next(end_without_marker=True) is None
    stream = io.BytesIO(member_bytes("a"))
    reader = HeaderReader(stream.read)
    assert reader.next().path == b"a" and reader.next(end_without_marker=True) is None
    with pytest.raises(TarFormatError, match="^the archive is truncated$"):
        HeaderReader(io.BytesIO(member_bytes("a")[:300]).read).next(end_without_marker=True)


def test_bad_checksums_say_where():
    good = member_bytes("a")
    corrupt = with_field(good, 0, b"b", fix_checksum=False)
    assert refusal(corrupt + END) == "not a tar archive (bad header checksum at its start)"
    assert refusal(good + corrupt + END) == \
        "the tar header at byte 512: bad header checksum (the archive is corrupt)"
    # after an extended header, the member's own header is not the archive's start
    assert refusal(extended_header(b"x", pax_record(b"uid", b"1")) + corrupt) == \
        "the tar header at byte 1024: bad header checksum (the archive is corrupt)"


def block_with_checksum(stored: bytes, fill: int = 0) -> bytes:
    """A header with `stored` as its checksum field; with `fill`, its name and prefix
    fields are that byte (0xFF: a sum past Adler-32's modulus, 65521)."""
    block = bytearray(member_bytes("a")[:512])
    if fill:
        block[0:100], block[345:500] = bytes([fill]) * 100, bytes([fill]) * 155
    block[148:156] = stored
    return bytes(block)


def test_checksums_as_every_tar_writes_them():
    for fill in (0, 0xFF):  # small sums, and sums past Adler-32's modulus
        block = block_with_checksum(b" " * 8, fill)
        unsigned = sum(block)
        assert (unsigned > 65521) == (fill == 0xFF)
        signed = unsigned - 256 * sum(1 for byte in block if byte & 0x80)
        for field in (b"%06o\0 " % unsigned, b"%07o\0" % unsigned, b"%07o " % unsigned,
                      b"  %05o\0" % unsigned, base256(unsigned, 8)):
            assert checksum_ok(block_with_checksum(field, fill)), (fill, field)
        for wrong in (unsigned - 1, unsigned + 1, unsigned + 256, unsigned + 65521,
                      unsigned - 65521):  # Adler-32's modulus must not hide a wrong sum
            assert not checksum_ok(block_with_checksum(b"%07o\0" % wrong, fill))
        assert checksum_ok(block_with_checksum(b"%07o\0" % signed, fill)) is True
    assert not checksum_ok(block_with_checksum(b"12x4567\0"))


def test_extended_headers_without_member_or_of_a_bad_size():
    assert refusal(extended_header(b"x", pax_record(b"path", b"p")) + END) == \
        "the tar header at byte 1024: an extended header without its member"
    assert refusal(extended_header(b"x", b"", size=-5) + END) == \
        "the tar header at byte 0: negative size -5 of an extended header"
    assert "malformed pax header (a record whose length is wrong)" in refusal(
        extended_header(b"x", b"99 path=a\n") + member_bytes("a") + END)
    assert refusal(with_field(extended_header(b"x", b""), 124, b"12x45678901\0") + END) == \
        "the tar header at byte 0: bad size field '12x45678901'"


@pytest.mark.parametrize("archive, message", [
    (pax({b"path": b"a\0b"}), "a\\x00b: its name has a NUL byte"),
    (pax({b"linkpath": b"t\0"}, type=tarfile.SYMTYPE), "f: link target 't\\x00' has a NUL byte"),
    (member_bytes("a/../../etc/passwd"),
     "a/../../etc/passwd: has a '..' component; refusing the archive"),
    (member_bytes(".", b"x"), ".: a member that is not a directory names the root directory"),
    (with_field(member_bytes("x"), 0, b"\0"), "the tar header at byte 0: a member with an "
     "empty name"),
    (with_field(member_bytes("x"), 100, b"07z4\0"),
     "x: a numeric field of its header is not a number (the archive is corrupt)"),
    (with_field(member_bytes("x"), 100, b"0000648\0"),  # digits, but not octal ones
     "x: a numeric field of its header is not a number (the archive is corrupt)"),
    (with_field(member_bytes("x"), 136, b"%011d\0" % 9),
     "x: a numeric field of its header is not a number (the archive is corrupt)"),
    (pax({b"mtime": b"soon"}), "f: bad mtime value 'soon' in its pax header"),
    (pax({b"uid": b"-1"}), "f: bad uid value '-1' in its pax header"),
    (pax({b"size": b"9" * 10 + b"x" * 50}), "f: bad size value '" + "9" * 10 + "x" * 30 + "' in"),
    (with_field(member_bytes("x"), 124, base256(-1, 12)), "x: negative size -1 in its header"),
    (pax({b"size": b"%d" % (1 << 63)}), f"f: size {1 << 63} is out of range"),
    (with_field(member_bytes("x"), 108, base256(-2, 8)), "x: negative uid -2 in its header"),
    (with_field(member_bytes("x"), 116, base256(-3, 8)), "x: negative gid -3 in its header"),
    (pax({b"uid": b"%d" % (MAX_ID + 1)}), f"f: uid {MAX_ID + 1} is out of range"),
    (pax({b"gid": b"%d" % (MAX_ID + 1)}), f"f: gid {MAX_ID + 1} is out of range"),
    (pax({b"mtime": b"%d" % (1 << 63)}), "f: modification time is out of range"),
    (pax({b"mtime": b"-%d" % (1 << 63)}), "f: modification time is out of range"),
    (with_field(member_bytes("c", type=tarfile.CHRTYPE), 329, b"0x\0"),
     "c: bad device number in its header"),
    (with_field(member_bytes("c", type=tarfile.BLKTYPE), 337, base256(MAX_DEVICE_NUMBER + 1, 8)),
     "c: device number out of range"),
    (with_field(member_bytes("c", type=tarfile.CHRTYPE), 329, base256(-1, 8)),
     "c: device number out of range"),
    (pax({b"SCHILY.xattr.": b"v"}), "f: extended attribute name '(empty name)' is empty or "),
    (pax({b"SCHILY.xattr.a\0b": b"v"}), "f: extended attribute name 'a\\x00b' is empty"),
])
def test_refusals_name_the_member_and_the_problem(archive, message):
    assert refusal(archive + END).startswith(message)


def test_extended_headers_of_the_sizes_allowed():
    assert only(extended_header(b"x", b"") + member_bytes("a")).path == b"a"
    filler = b"x" * (MAX_EXTENSION_SIZE - len(b"1048576 comment=\n"))
    record = pax_record(b"comment", filler)
    assert len(record) == MAX_EXTENSION_SIZE
    assert only(extended_header(b"x", record) + member_bytes("a")).pax == {b"comment": filler}


def test_the_limits_themselves_are_accepted():
    h = only(pax({b"size": b"%d" % ((1 << 63) - 1), b"uid": b"%d" % MAX_ID,
                  b"mtime": b"%d" % ((1 << 63) - 1)}, type=tarfile.DIRTYPE))
    assert (h.size, h.uid, h.data_size) == ((1 << 63) - 1, MAX_ID, 0)
    assert only(pax({b"mtime": b"-%d" % ((1 << 63) - 1)})).mtime_ns < 0


# --- the small pieces ------------------------------------------------------------------------

def test_pax_records_with_newlines_in_values_and_padding():
    records = pax_record(b"path", b"a\nb") + pax_record(b"comment", b"x=y")
    assert pax_records(records + b"\0" * 20) == {b"path": b"a\nb", b"comment": b"x=y"}
    assert pax_records(records, len(pax_record(b"path", b"a\nb"))) == {b"path": b"a\nb"}
    big = pax_record(b"comment", b"c" * 5000)
    assert pax_records(big + pax_record(b"k", b"v")) == {b"comment": b"c" * 5000, b"k": b"v"}
    for bad, problem in ((b"6 =ab\n", "a record without a keyword"),
                         (b"7 abcd\n7 a=bc\n", "a record without a keyword"),
                         (b"1" * 25 + b" a=b\n", "a record without a length"),
                         (b"5 a=b\n", "a record whose length is wrong"),
                         (b"7 a=b\nx", "a record whose length is wrong"),
                         (b"6 a=b\n" + b"c" * 5000, "a record without a length")):
        with pytest.raises(ValueError, match=f"^{problem}$"):
            pax_records(bad)


def test_padded_sizes():
    assert [padded(size) for size in (0, 1, 511, 512, 513, 1025)] == \
        [0, 512, 512, 512, 1024, 1536]


def test_text_fields():
    assert text(b"abc\0def") == b"abc"
    assert text(b"abcdef") == b"abcdef"
    assert text(b"abcdef", 3) == b"abc"
    assert text(b"ab\0def", 6) == b"ab"
    assert text(b"abcd\0f", 3) == b"abc"


@pytest.mark.parametrize("name, path", [
    (b"a/b", b"a/b"), (b"a/b/", b"a/b"), (b"./a", b"a"), (b"/a", b"a"), (b"a//b", b"a/b"),
    (b"a/./b", b"a/b"), (b".", b""), (b"./", b""), (b"//", b""), (b".a/..b", b".a/..b"),
    (b"a/.b", b"a/.b"), (b"boX", b"boX"),
])
def test_member_paths(name, path):
    assert member_path(name) == path


def test_names_in_messages_are_one_readable_line():
    assert show(b"a\nb\0c") == "a\\nb\\x00c"
    assert show(b"a\\b'\n") == "a\\b'\\n"  # printable characters kept as they are
    assert show(b"caf\xc3\xa9 \xff") == "café \\xff"
    assert show(b"") == "(empty name)"
