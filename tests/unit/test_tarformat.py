"""droot's tar header codec (droot.core.tarformat) against Python's tarfile as an oracle:
random members written by tarfile, in each of its formats, must read back exactly as
written. Plus the codec's own rules, each next to what tarfile does with the same bytes.
(GNU tar as the other oracle: tests/test_tarformat_gnu_tar.py, which needs root.)"""

import io
import tarfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from droot.core.tarformat import (MAX_EXTENSION_SIZE, HeaderReader, TarFormatError, member_path,
                                  number, pax_records)
from tests.conftest import read_all

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
         "blk": tarfile.BLKTYPE}


# --- tarfile as the writer ------------------------------------------------------------------

component = st.text(st.characters(codec="utf-8", exclude_characters="/\0",
                                  exclude_categories=("Cs",)),
                    min_size=1, max_size=40).filter(lambda part: part not in (".", ".."))
names = st.lists(component, min_size=1, max_size=8).map("/".join)
ids = st.one_of(st.integers(0, 2 ** 21 - 1), st.integers(0, 2 ** 32 - 2))
times = st.one_of(st.integers(0, 8 ** 11 - 1), st.integers(-2 ** 40, 2 ** 40))
xattrs = st.dictionaries(st.text("abcxyz._-", min_size=1, max_size=20),
                         st.text(max_size=60).filter(lambda value: "\0" not in value),
                         max_size=3)


@st.composite
def tarfile_members(draw):
    kind = draw(st.sampled_from(sorted(TYPES)))
    info = tarfile.TarInfo(draw(names))
    info.type = TYPES[kind]
    info.mode = draw(st.integers(0, 0o7777))
    info.uid, info.gid = draw(ids), draw(ids)
    info.mtime = draw(times)
    data = b""
    if kind == "file":
        data = draw(st.binary(max_size=1500))
        info.size = len(data)
    elif kind in ("symlink", "hardlink"):
        info.linkname = draw(names if kind == "hardlink" else st.text(
            st.characters(codec="utf-8", exclude_characters="\0", exclude_categories=("Cs",)),
            min_size=1, max_size=300))
    elif kind in ("chr", "blk"):
        info.devmajor, info.devminor = draw(st.integers(0, 4095)), draw(st.integers(0, 2 ** 20))
    info.pax_headers = {f"SCHILY.xattr.user.{key}": value
                        for key, value in draw(xattrs).items()}
    return info, data


def written_by_tarfile(members, format_) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format_, encoding="utf-8") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# Three times the profile's number of examples: 300 by default, fewer for each mutant.
@settings(max_examples=3 * settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FORMATS)), st.lists(tarfile_members(), min_size=1, max_size=5))
def test_the_codec_reads_what_tarfile_writes(format_name, members):
    format_ = FORMATS[format_name]
    if format_ != tarfile.PAX_FORMAT:
        for info, _ in members:
            info.pax_headers = {}
    try:
        archive = written_by_tarfile(members, format_)
    except ValueError:  # a field this format cannot hold (tarfile's own refusal)
        assume(False)
    read = read_all(archive)
    assert len(read) == len(members)
    for (info, data), (header, read_data) in zip(members, read):
        assert header.path == member_path(info.name.encode())
        assert header.type == ord(info.type)
        assert header.mode == info.mode
        assert (header.uid, header.gid) == (info.uid, info.gid)
        assert header.mtime_ns == info.mtime * 1_000_000_000
        assert read_data == data and header.size == len(data)
        if info.issym() or info.islnk():
            assert header.linkname == info.linkname.encode()
        if info.isdev():
            assert (header.major, header.minor) == (info.devmajor, info.devminor)
        expected_xattrs = sorted((key[len("SCHILY.xattr."):].encode(), value.encode())
                                 for key, value in info.pax_headers.items())
        assert sorted(header.xattrs or []) == expected_xattrs


# --- the codec's own rules ------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    (b"0000644\0", 0o644), (b"   644 \0", 0o644), (b"\0" * 8, 0), (b"0000644 ", 0o644),
    (b"\x80\0\0\0\0\0\0\x2a", 42), (b"\xff" * 8, -1), (b"\xff" * 7 + b"\xfe", -2),
    (b"\xff" * 4 + (-315619200).to_bytes(4, "big", signed=True)[0:4], -315619200),
    (b"\x81" + b"\0" * 7, 1 << 56), (b"00000644", 0o644), (b"0000644 ", 0o644),
])
def test_numbers(field, value):
    assert number(field) == value
    if field[0] in (0x80, 0xFF):  # tarfile reads base-256 the same way
        assert tarfile.nti(field) == value


@pytest.mark.parametrize("field", [b"-000644\0", b"0_644\0\0\0", b"06 44\0\0\0", b"0000648\0",
                                   b"\t000644\0", b"000644\n\0"])
def test_numbers_that_are_not(field):
    with pytest.raises(ValueError):
        number(field)


def test_pax_records_parse_and_refuse():
    assert pax_records(b"10 path=a\n11 mtime=1\n\0\0") == {b"path": b"a", b"mtime": b"1"}
    for bad in (b"11 path=a\n", b"x path=a\n", b"10 path a\n", b"99 path=a\n",
                b"-10 path=a\n"):
        with pytest.raises(ValueError):
            pax_records(bad)


def test_a_dotdot_anywhere_is_refused_by_both_stages():
    from droot.image.tarstream import normalise
    assert member_path(b"./a//b/./c/") == b"a/b/c" and member_path(b"/") == b""
    for name in (b"../x", b"a/../b", b"a/.."):
        with pytest.raises(ValueError):
            member_path(name)
        with pytest.raises(TarFormatError):
            normalise(name.decode())


def test_every_header_checksum_is_verified_on_the_export_side_too():
    from droot.image.tarstream import TarReader
    members = [(tarfile.TarInfo(name), b"") for name in ("a", "b")]
    archive = bytearray(written_by_tarfile(members, tarfile.GNU_FORMAT))
    archive[512] = ord("c")  # the second member's name, checksum left as it was
    with pytest.raises(TarFormatError, match="byte 512: bad header checksum"):
        list(TarReader(io.BytesIO(bytes(archive)), "layer"))
    # tarfile takes the corrupt header for the end of the archive and says nothing.
    assert tarfile.open(fileobj=io.BytesIO(bytes(archive))).getnames() == ["a"]


def test_an_extended_header_beyond_the_cap_is_refused_unread():
    info = tarfile.TarInfo("f")
    info.pax_headers = {"comment": "x" * MAX_EXTENSION_SIZE}
    archive = written_by_tarfile([(info, b"")], tarfile.PAX_FORMAT)
    calls = []

    def read(n, stream=io.BytesIO(archive)):
        calls.append(n)
        return stream.read(n)
    with pytest.raises(TarFormatError, match="an extended header of 10485"):
        HeaderReader(read).next()
    assert calls == [512]  # refused from its header alone
    # tarfile reads it whole (and so would any size).
    assert tarfile.open(fileobj=io.BytesIO(archive)).getnames() == ["f"]
