"""The plan of a delta pull (droot.ship.delta.plan) on manifests made member by member:
a content the release holds twice is downloaded once and copied (or, in a read-only
release, linked) from its first file, but never from a path a later member replaced."""

import hashlib

import pytest

from droot.core.errors import DrootError
from droot.deploy.reuse import SAME_RELEASE, LocalContent
from droot.ship import delta
from tests.conftest import member_bytes

PACK = "0" * 32 + ".pack"


def manifest(members) -> delta.Manifest:
    """A manifest of (name, data) files; every content in one pack, one frame each."""
    writer = delta._ManifestWriter()
    offset = 0
    for name, data in members:
        header = member_bytes(name, data)[:512]
        digest = hashlib.sha256(data).digest()
        writer.add(header, (digest, len(data), PACK, offset, 10 + len(data)))
        offset += 10 + len(data)
    writer.add(delta.END_OF_ARCHIVE)
    return delta.Manifest(writer.finish({}), "test manifest")


def planned(members, tmp_path) -> tuple[list, LocalContent]:
    local = LocalContent(tmp_path, [])  # no kept release: nothing on this host to reuse
    try:
        runs = delta.plan(manifest(members), local)
    finally:
        local.close()
    return runs, local


def test_a_repeated_content_is_downloaded_once(tmp_path):
    runs, local = planned([("a", b"same"), ("b", b"other"), ("c", b"same")], tmp_path)
    assert [local.planned(index) for index in range(3)] == [0, 0, SAME_RELEASE]
    assert local.earlier == {2: b"a"}
    assert runs == [[PACK, 0, 29]]  # a and b's frames: one ranged GET


def test_a_replaced_first_file_is_not_copied_from(tmp_path):
    """`a` holds the content first, then a later member replaces `a`: the third member,
    with a's first content, must come from the store (or it would get the new a)."""
    runs, local = planned([("a", b"same"), ("a", b"new a"), ("c", b"same")], tmp_path)
    assert [local.planned(index) for index in range(3)] == [0, 0, 0]
    assert local.earlier == {}
    assert runs == [[PACK, 0, 43]]


def test_a_record_longer_than_a_members_headers_is_refused_unread(tmp_path):
    """A record says its length before its bytes: one claiming more than a member's
    headers can hold (extended headers of at most 1 MiB each) is refused before it is
    read, so a hostile manifest cannot make the pull hold tens of MB for it."""
    writer = delta._ManifestWriter()
    writer.add(bytes(9 << 20))
    writer.add(delta.END_OF_ARCHIVE)
    local = LocalContent(tmp_path, [])
    try:
        with pytest.raises(DrootError, match=r"^test manifest: corrupt manifest \(a record\)$"):
            delta.plan(delta.Manifest(writer.finish({}), "test manifest"), local)
    finally:
        local.close()
