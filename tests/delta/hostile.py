"""Delta releases made from hand-written tar streams: what a hostile pusher can put in
a store (droot's own push, with the image export replaced by the given members)."""

import hashlib
import tarfile

import pytest

from tests.conftest import member_bytes

SIZE = 4096
MTIME = 1_700_000_000


def content(letter: bytes) -> bytes:
    return letter * SIZE


def file(name: str, data: bytes, **fields) -> bytes:
    return member_bytes(name, data, mtime=MTIME, **fields)


def symlink(name: str, target: str) -> bytes:
    return member_bytes(name, type=tarfile.SYMTYPE, linkname=target, mtime=MTIME)


def directory(name: str, mtime: int = MTIME) -> bytes:
    return member_bytes(name, type=tarfile.DIRTYPE, mode=0o755, mtime=mtime)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def push_members(monkeypatch):
    """push(members, dest): a delta release of these member bytes at `dest` (a path)."""
    from droot.image import export
    from droot.ship import delta

    def push(members: list[bytes], dest) -> None:
        def fake_export(source, out, **_):
            out.write(b"".join(members) + bytes(1024))
            return {"source": source, "digest": "sha256:" + "0" * 64, "layers": 1,
                    "bytes": 0}
        monkeypatch.setattr(export, "export_image", fake_export)
        delta.push("crafted", str(dest))
    return push
