"""Archive compression (droot.core.compression): what is written is read back, and the
kind of a stream is told from its first bytes alone, whatever the reads hand over."""

import gzip
import io

import pytest
import zstandard
from hypothesis import assume, given
from hypothesis import strategies as st

from droot.core.compression import (KINDS, check_kind, compressing_writer,
                                    decompressing_reader, kind_of, sniff)
from droot.core.errors import UsageError

GZIP_HEAD = gzip.compress(b"x")[:4]
ZSTD_HEAD = zstandard.ZstdCompressor().compress(b"x")[:4]
SKIPPABLE_FRAME = (0x184D2A5A).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"size"


class Trickle(io.RawIOBase):
    """A stream that hands over at most `step` bytes a read, as a pipe may."""

    def __init__(self, data: bytes, step: int):
        self._data, self._step = data, step

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n], self._data = self._data[:n], self._data[n:]
        return n


def compressed(data: bytes, kind: str) -> bytes:
    out = io.BytesIO()
    with compressing_writer(out, kind) as writer:
        writer.write(data)
    assert not out.closed  # the caller's stream stays open
    return out.getvalue()


@given(st.binary(max_size=3000), st.sampled_from(KINDS), st.integers(1, 5))
def test_what_is_written_is_read_back(data, kind, step):
    assume(kind != "none" or kind_of(data[:4]) == "none")  # plain bytes that look compressed
    archive = compressed(data, kind)
    detected, reader = decompressing_reader(Trickle(archive, step))
    assert reader.read() == data
    assert detected == (kind if data or kind != "none" else "none")


def test_each_kind_writes_its_own_format():
    data = b"droot " * 1000
    assert gzip.decompress(compressed(data, "gzip")) == data
    zstd = zstandard.ZstdDecompressor().decompressobj()
    assert zstd.decompress(compressed(data, "zstd")) == data
    assert compressed(data, "none") == data
    assert compressed(data, "gzip")[:2] == b"\x1f\x8b"  # not the zlib or raw deflate format
    assert compressed(data, "zstd")[:4] == b"\x28\xb5\x2f\xfd"
    assert len(compressed(data, "gzip")) < len(data) // 10  # compressed, not stored


@pytest.mark.parametrize("head, kind", [
    (GZIP_HEAD, "gzip"), (GZIP_HEAD[:2], "gzip"), (ZSTD_HEAD, "zstd"),
    (SKIPPABLE_FRAME[:4], "zstd"), ((0x184D2A50).to_bytes(4, "little"), "zstd"),
    ((0x184D2A5F).to_bytes(4, "little"), "zstd"), ((0x184D2A60).to_bytes(4, "little"), "none"),
    ((0x184D2A4F).to_bytes(4, "little"), "none"), ((0x184C2A50).to_bytes(4, "little"), "none"),
    ((0x184D2B50).to_bytes(4, "little"), "none"), ((0x194D2A50).to_bytes(4, "little"), "none"),
    (b"\x1f", "none"), (b"\x8b\x1f", "none"), (ZSTD_HEAD[:3], "none"), (b"", "none"),
    (b"\x50\x2a\x4d", "none"), (b"ustar", "none"), (b"\x1f\x8c\0\0", "none"),
])
def test_kind_of_the_first_bytes(head, kind):
    assert kind_of(head) == kind


def test_a_stream_that_starts_with_a_skippable_frame_is_zstd():
    """pzstd writes a skippable frame first; the frames after it are the data."""
    archive = SKIPPABLE_FRAME + zstandard.ZstdCompressor().compress(b"data")
    kind, reader = decompressing_reader(Trickle(archive, 1))
    assert (kind, reader.read()) == ("zstd", b"data")


def test_zstd_frames_are_read_across():
    """In the reads of a given size that deploy makes, not only in one read of all."""
    archive = b"".join(zstandard.ZstdCompressor().compress(part) for part in (b"a", b"b", b"c"))
    assert decompressing_reader(io.BytesIO(archive))[1].read() == b"abc"
    assert decompressing_reader(io.BytesIO(archive))[1].read(100) == b"abc"


def test_archives_are_reproducible_and_checked():
    """The same input makes the same bytes (gzip's header time is 0), so a push of the
    same image has the same SHA-256; a zstd frame carries its checksum, which the
    decompressor verifies."""
    data = b"droot " * 1000
    gzipped = compressed(data, "gzip")
    assert gzipped[4:8] == b"\0\0\0\0" and compressed(data, "gzip") == gzipped
    zstd = compressed(data, "zstd")
    assert zstd[4] & 0x04  # Content_Checksum_flag of the frame header descriptor
    corrupt = zstd[:-1] + bytes([zstd[-1] ^ 0xFF])  # the checksum itself
    with pytest.raises(zstandard.ZstdError):
        decompressing_reader(io.BytesIO(corrupt))[1].read()


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde" * 1000])
def test_sniffing_loses_no_byte(data):
    kind, reader = sniff(Trickle(data, 1))
    assert (kind, reader.read()) == ("none", data)


def test_sniffing_reads_the_first_four_bytes_only():
    """Until the caller reads: the kind is known from what a pipe has delivered so far."""
    stream = io.BytesIO(GZIP_HEAD + b"more")
    assert sniff(stream)[0] == "gzip" and stream.tell() == 4


def test_an_unknown_kind_is_a_usage_error():
    assert [check_kind(kind) for kind in KINDS] == list(KINDS)
    for kind in ("bzip2", "GZIP", ""):
        with pytest.raises(UsageError, match=f"unknown compression '{kind}': use one of "
                           "gzip, zstd, none"):
            check_kind(kind)
        with pytest.raises(UsageError):
            compressing_writer(io.BytesIO(), kind)
