"""The rebuilt tar stream of a delta pull is plain tar, and the extraction child must take
it as such: its first bytes are the first member's name, which the image chooses. Were
they sniffed for a compression's magic number, a name starting with gzip's would make
the child gunzip the stream and extract another archive than the one the parent planned
and checked, member by member, against the manifest's digests."""

import os
import struct
import zlib
from pathlib import Path

import pytest

from tests.conftest import droot, member_bytes, with_field
from tests.delta.hostile import content, digest, file, push_members  # noqa: F401


@pytest.mark.parametrize("magic", [b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\x50\x2a\x4d\x18",
                                   b"DROOT-DELTA "])
def test_a_first_name_that_spells_a_magic_number_is_a_name(push_members, tmp_path, magic):
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    name = (magic + b"name").decode("utf-8", "surrogateescape")
    push_members([file(name, content(b"A")), file("b", content(b"B"))], store / "v1")
    result = droot("pull", store / "v1", "--root", root)
    assert result.returncode == 0, result.stderr
    assert (root / os.fsdecode(magic + b"name")).read_bytes() == content(b"A")


def _stored(data: bytes) -> bytes:
    """A non-final stored deflate block's header for `data` (byte-aligned)."""
    return b"\x00" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF)


def test_a_gzip_polyglot_cannot_plant_unchecked_bytes(push_members, monkeypatch, tmp_path):
    """A hostile image's manifest whose stream is also a gzip stream: member 0's name is
    a gzip header whose extra field spans the rest of its block, its data the deflate
    stream of another archive (`c` holding Z), and the rest of the stream (the header of
    the manifest's `c`, its content Y) is inside a stored block of that deflate stream,
    which the end-of-archive record's tail closes. A child that gunzips it makes `c` with
    Z, and the `.content` record would say `c` holds Y: the next, benign pull would then
    reuse those bytes for its own `c` without reading them."""
    from droot.ship import delta
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    y, z = content(b"Y"), content(b"Z")
    head_c = member_bytes("c", y)[:512]
    # member 0's header block is a gzip header whose extra field runs to the block's end
    gzip_head = b"\x1f\x8b\x08\x04AAAA\x02\x03" + struct.pack("<H", 500)
    # Its data: the deflate stream of the child's archive's start (`c` with Z, then
    # `junk`, whose data swallows the rest), then a stored block's header: the stream's
    # next bytes (member 0's padding, c's header, Y, the end marker's first block) are
    # the stored block's. junk's size depends on member 0's, which depends on it.
    data0 = b""
    for _ in range(4):
        padding0 = -len(data0) % 512
        junk = with_field(member_bytes("junk", b"")[:512], 124,
                          b"%011o\0" % (padding0 + 512 + len(y)))
        prefix = member_bytes("c", z) + junk
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = compressor.compress(prefix) + compressor.flush(zlib.Z_SYNC_FLUSH)
        stored = bytes(padding0) + head_c + y + bytes(512)
        made, data0 = data0, deflated + _stored(stored)
        if len(made) == len(data0):
            break
    inner = prefix + stored + bytes(1024)  # the child's archive: c, junk, end marker
    final = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = (final.compress(bytes(1024)) + final.flush()
            + struct.pack("<II", zlib.crc32(inner), len(inner) & 0xFFFFFFFF))
    head0 = bytearray(member_bytes("x", data0)[:512])
    head0[:100] = gzip_head + bytes(100 - len(gzip_head))
    head0 = with_field(bytes(head0), 0, bytes(head0[:100]))  # its checksum made right
    members = [head0 + data0 + bytes(-len(data0) % 512), member_bytes("c", y)]
    monkeypatch.setattr(delta, "END_OF_ARCHIVE", bytes(512) + tail)
    push_members(members, store / "hostile")
    monkeypatch.undo()
    push_members([file("c", y), file("other", content(b"o"))], store / "benign")
    result = droot("pull", store / "hostile", "--root", root)
    if result.returncode == 0:  # made: then every file holds what the manifest says
        assert (root / "c").read_bytes() == y, "c holds bytes no digest was checked on"
    result = droot("pull", store / "benign", "--root", root)
    assert result.returncode == 0, result.stderr
    assert digest((Path(os.path.realpath(root)) / "c").read_bytes()) == digest(y), \
        "the benign release's c does not hold the content its manifest names"
