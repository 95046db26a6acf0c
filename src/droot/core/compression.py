"""Archive compression: gzip, zstd or none on the way out; detected from the first bytes
on the way in, so `droot deploy` takes whatever `aws s3 cp … -` hands it."""

import io

# Imported here, not when first used: the deploy's extraction child decompresses after
# chroot(2), where nothing can be imported any more.
import zstandard
from isal import igzip  # ISA-L: the gzip format, 2-3x faster than zlib

from droot.core.errors import UsageError

KINDS = ("gzip", "zstd", "none")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# How a delta release's manifest (droot push --delta; droot.ship.delta) starts, whatever its
# format version: not an archive, though it may be handed to deploy as one.
DELTA_MANIFEST_PREFIX = b"DROOT-DELTA "
# Fast levels: archives are compressed once per build but on the critical path of a deploy.
# gzip goes through ISA-L, whose level 2 (of 0-3) compresses ~10x faster than zlib's 6
# for archives ~8% larger: a push is no longer bound by gzip.
GZIP_LEVEL = 2
ZSTD_LEVEL = 3
ZSTD_WORKERS = 2


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"unknown compression {kind!r}: use one of {', '.join(KINDS)}")
    return kind


class _Unclosing(io.RawIOBase):
    """A writer over `out` whose close() leaves `out` open (the caller owns it)."""

    def __init__(self, out):
        self._out = out

    def writable(self):
        return True

    def write(self, data):
        return self._out.write(data)


def compressing_writer(out, kind: str):
    """A binary writer that compresses into `out`. Closing it finishes the compressed
    stream (gzip trailer, zstd frame end) but leaves `out` open."""
    check_kind(kind)
    if kind == "gzip":
        return igzip.IGzipFile(fileobj=_Unclosing(out), mode="wb", compresslevel=GZIP_LEVEL,
                               mtime=0)
    if kind == "zstd":
        # Two workers in 1 MiB jobs: as fast here as the default (larger) jobs, and ~55 MB
        # less memory, so push stays under 100 MB with boto3 and its S3 parts. Not one per
        # core: each costs ~4 MB, and a push is bound by the export and the upload (ISA-L's
        # single-threaded gzip keeps up too).
        parameters = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, threads=ZSTD_WORKERS, job_size=1 << 20, write_checksum=1)
        compressor = zstandard.ZstdCompressor(compression_params=parameters)
        return compressor.stream_writer(out, closefd=False)
    return _Unclosing(out)


class _Prefixed(io.RawIOBase):
    """A reader that yields `head` and then the rest of `stream` (the bytes sniffed off it)."""

    def __init__(self, head: bytes, stream):
        self._head = head
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, buffer):
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if hasattr(self._stream, "readinto"):  # no fresh bytes object per read
            return self._stream.readinto(buffer)
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def is_zstd_skippable_frame(head: bytes) -> bool:
    """A zstd skippable frame (magic 0x184D2A50-0x184D2A5F, little-endian), which may
    start a valid zstd stream: pzstd writes one first, with the sizes of its frames."""
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def kind_of(head: bytes) -> str:
    """"gzip", "zstd" or "none": the compression a stream starting with `head` (its first
    4 bytes or fewer) has. The one place droot tells compressions apart."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or is_zstd_skippable_frame(head):
        return "zstd"
    return "none"


def sniff(stream) -> tuple[str, io.BufferedReader]:
    """The compression of `stream` from its magic bytes, and a reader of the whole stream."""
    head = b""
    while len(head) < 4:
        data = stream.read(4 - len(head))
        if not data:
            break
        head += data
    return kind_of(head), io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 20)


def decompressing_reader(stream, plain: bool = False):
    """A binary reader of the decompressed contents of `stream` (gzip, zstd or plain),
    and the kind that was detected; with `plain`, the stream is taken as it is, never
    sniffed."""
    if plain:
        return "none", io.BufferedReader(_Prefixed(b"", stream), buffer_size=1 << 20)
    kind, whole = sniff(stream)
    if kind == "gzip":
        return kind, igzip.IGzipFile(fileobj=whole, mode="rb")
    if kind == "zstd":
        return kind, zstandard.ZstdDecompressor().stream_reader(whole, read_across_frames=True)
    return kind, whole
