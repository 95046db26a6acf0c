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


@pytest.fixture
def push_joined(push_members, monkeypatch):
    """push(members, dest, joined): as push_members, but the header of the member named
    `joined` is appended to the record before it, whose content stays the only one: one
    record holding two members' headers, which droot's own push never writes."""
    from droot.ship import delta
    add, finish = delta._ManifestWriter.add, delta._ManifestWriter.finish

    def push(members: list[bytes], dest, joined: bytes) -> None:
        pending = []

        def joining_add(self, header, content=None):
            if header[:100].rstrip(b"\0") == joined:
                previous_header, previous_content = pending.pop()
                pending.append((previous_header + header, previous_content))
                return
            if pending:
                add(self, *pending.pop())
            pending.append((header, content))

        def joining_finish(self, head):
            add(self, *pending.pop())
            return finish(self, head)
        monkeypatch.setattr(delta._ManifestWriter, "add", joining_add)
        monkeypatch.setattr(delta._ManifestWriter, "finish", joining_finish)
        push_members(members, dest)
        monkeypatch.setattr(delta._ManifestWriter, "add", add)
        monkeypatch.setattr(delta._ManifestWriter, "finish", finish)
    return push
