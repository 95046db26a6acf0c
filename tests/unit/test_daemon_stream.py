"""The engine's export as droot rewrites it (droot.image.daemon.copy_filesystem), on
streams made here the way the engine writes them: the same image gives the same bytes
whichever second its container was created in."""

import io
import tarfile

from droot.image.daemon import copy_filesystem
from droot.image.tarstream import TarReader

CREATED = 1_796_139_234  # the image's creation time, in whole seconds


def engine_header(name: str, kind: bytes, mtime: int, size: int = 0) -> bytes:
    """A ustar header as the engine's Go tar writer makes it: the mode field carries the
    file-type bits (040755 for a directory), which Python's tarfile never writes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, 0o755, mtime, size
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    if kind == tarfile.DIRTYPE:
        block[100:108] = b"0040755\0"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def engine_export(container_created: int) -> bytes:
    """/.dockerenv, /etc (of the init layer, dated when the container was made), a file of
    the image's, and /sys."""
    data = b"root:x:0:0::/root:/bin/sh\n"
    return b"".join((
        engine_header(".dockerenv", tarfile.REGTYPE, container_created),
        engine_header("etc/", tarfile.DIRTYPE, container_created),
        engine_header("etc/passwd", tarfile.REGTYPE, CREATED - 100, len(data)),
        data + bytes(512 - len(data)),
        engine_header("sys/", tarfile.DIRTYPE, container_created),
        bytes(1024)))


def rewritten(stream: bytes) -> bytes:
    out = io.BytesIO()
    copy_filesystem(TarReader(io.BytesIO(stream), "the test export"), out, CREATED)
    return out.getvalue()


def test_the_container_made_in_the_image_s_second_gives_the_same_bytes_as_a_later_one():
    same_second = rewritten(engine_export(CREATED))
    later = rewritten(engine_export(CREATED + 7))
    assert same_second == later
    with tarfile.open(fileobj=io.BytesIO(later)) as archive:
        members = {member.name: member for member in archive}
    assert set(members) == {"etc", "etc/passwd", "sys"}          # .dockerenv left out
    assert members["etc"].mtime == members["sys"].mtime == CREATED  # clamped
    assert members["etc/passwd"].mtime == CREATED - 100           # the image's own: kept


def test_an_init_layer_directory_older_than_the_image_keeps_its_time():
    with tarfile.open(fileobj=io.BytesIO(rewritten(engine_export(CREATED - 50)))) as archive:
        assert archive.getmember("etc").mtime == CREATED - 50
