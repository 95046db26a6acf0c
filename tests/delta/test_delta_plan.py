"""The plan of a delta pull (droot.ship.delta._Planner) on manifests made member by member:
a content the release holds twice is downloaded once and copied (or, in a read-only
release, linked) from its first file, but never from a path a later member replaced."""

import hashlib
import json
import os
import resource
import struct
import types

import pytest

from droot.core import indextable
from droot.core.errors import DrootError
from droot.deploy.reuse import SAME_RELEASE, LocalContent
from droot.ship import delta
from tests.conftest import droot, member_bytes
from tests.delta.hostile import content, file, push_members  # noqa: F401

PACK = "0" * 32 + ".pack"


def manifest(members) -> delta.Manifest:
    """A manifest of (name, data) files; every content in one pack, one frame each."""
    return delta.Manifest(manifest_bytes(members), "test manifest")


def manifest_bytes(members) -> bytes:
    writer = delta._ManifestWriter()
    offset = 0
    for name, data in members:
        header = member_bytes(name, data)[:512]
        digest = hashlib.sha256(data).digest()
        writer.add(header, (digest, len(data), PACK, offset, 10 + len(data)))
        offset += 10 + len(data)
    writer.add(delta.END_OF_ARCHIVE)
    return writer.finish({})


def plan(manifest: delta.Manifest, local: LocalContent) -> list[list]:
    """Plan every member, as the stream does ahead of each; the downloads."""
    planner = delta._Planner(manifest, local)
    planner.plan_through(manifest.record_count())
    return [list(run) for run in planner.runs]


@pytest.fixture
def planned(tmp_path):
    """Plans (name, data) files with no kept release (nothing on this host to reuse):
    planned(members) is (downloads, LocalContent), closed after the test."""
    made = []

    def planned(members, releases_dir=tmp_path) -> tuple[list, LocalContent]:
        release = manifest(members)
        local = LocalContent(releases_dir, [], release.record_count())
        made.append(local)
        return plan(release, local), local
    yield planned
    for local in made:
        local.close()


def copied_from(local: LocalContent, members: int) -> dict[int, bytes]:
    """The members planned as copies of an earlier member: index -> that member's path."""
    return {index: local.source_path(types.SimpleNamespace(index=index, path=None))
            for index in range(members) if local.planned(index) == SAME_RELEASE}


def test_a_repeated_content_is_downloaded_once(planned):
    runs, local = planned([("a", b"same"), ("b", b"other"), ("c", b"same")])
    assert [local.planned(index) for index in range(3)] == [0, 0, SAME_RELEASE]
    assert copied_from(local, 3) == {2: b"a"}
    assert runs == [[PACK, 0, 29]]  # a and b's frames: one ranged GET


def test_a_replaced_first_file_is_not_copied_from(planned):
    """`a` holds the content first, then a later member replaces `a`: the third member,
    with a's first content, must come from the store (or it would get the new a)."""
    runs, local = planned([("a", b"same"), ("a", b"new a"), ("c", b"same")])
    assert [local.planned(index) for index in range(3)] == [0, 0, 0]
    assert copied_from(local, 3) == {}
    assert runs == [[PACK, 0, 43]]


def test_a_record_longer_than_a_members_headers_is_refused_unread(tmp_path):
    """A record says its length before its bytes: one claiming more than a member's
    headers can hold (extended headers of at most 1 MiB each) is refused before it is
    read, so a hostile manifest cannot make the pull hold tens of MB for it."""
    writer = delta._ManifestWriter()
    writer.add(bytes(9 << 20))
    writer.add(delta.END_OF_ARCHIVE)
    release = delta.Manifest(writer.finish({}), "test manifest")
    local = LocalContent(tmp_path, [], release.record_count())
    try:
        with pytest.raises(DrootError, match=r"^test manifest: corrupt manifest \(a record\)$"):
            plan(release, local)
    finally:
        local.close()


def with_head(data: bytes, change) -> bytes:
    """The manifest `data` with its JSON head changed by `change(head)`."""
    start = len(delta.MAGIC) + 4
    (length,) = struct.unpack_from("<I", data, len(delta.MAGIC))
    head = json.loads(data[start:start + length])
    change(head)
    encoded = json.dumps(head).encode()
    return delta.MAGIC + struct.pack("<I", len(encoded)) + encoded + data[start + length:]


def test_more_records_than_the_head_says_are_refused(tmp_path):
    """The shared plan is sized by the head's record count: a record past it is refused
    before it is planned."""
    writer = delta._ManifestWriter()
    for name in ("a", "b"):
        writer.add(member_bytes(name, b"")[:512])
    writer.add(delta.END_OF_ARCHIVE)
    release = delta.Manifest(with_head(writer.finish({}), lambda head: head.update(records=2)),
                             "test manifest")
    local = LocalContent(tmp_path, [], release.record_count())
    try:
        with pytest.raises(DrootError, match=r"^test manifest: corrupt manifest \(more "
                           r"records than its head says\)$"):
            plan(release, local)
    finally:
        local.close()


def test_a_manifest_without_a_record_count_is_counted(tmp_path):
    """Manifests pushed before the head said how many records they have are counted."""
    data = manifest_bytes([("a", b"same"), ("b", b"other")])
    older = delta.Manifest(with_head(data, lambda head: head.pop("records")), "older")
    assert older.record_count() == 3
    local = LocalContent(tmp_path, [], older.record_count())
    try:
        assert plan(older, local) == [[PACK, 0, 29]]
    finally:
        local.close()


@pytest.mark.parametrize("count", [0, -1, 1 << 30, "3", 3.0, None])
def test_a_record_count_that_cannot_be_is_refused(count):
    data = with_head(manifest_bytes([("a", b"a")]), lambda head: head.update(records=count))
    with pytest.raises(DrootError, match=r"^test manifest: corrupt manifest \(its head\)$"):
        delta.Manifest(data, "test manifest")


def test_a_head_longer_than_the_manifest_is_refused_without_room_for_it(tmp_path):
    """A pull's manifest is read by position from its scratch file: a head length of
    4 GB, in a manifest of a few bytes, is a corrupt head, not 4 GB asked for (a
    MemoryError, "internal error", where memory is limited) to read it into."""
    with open(tmp_path / "manifest", "w+b") as spooled:
        spooled.write(delta.MAGIC + struct.pack("<I", 0xFFFFFFF0) + b'{"packs": []}')
        spooled.flush()
        pid = os.fork()
        if pid == 0:  # a child, whose address space is limited to 1 GB
            try:
                resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
                delta.Manifest(spooled, "test manifest")
            except DrootError as error:
                os._exit(0 if str(error) == "test manifest: corrupt manifest (its head)"
                         else 2)
            except BaseException:
                os._exit(3)
            os._exit(4)
        assert os.waitpid(pid, 0)[1] == 0


def test_a_head_that_overstates_its_records_takes_no_room_for_them(tmp_path, monkeypatch):
    """The shared plan is in a scratch file sized by the head's record count, whose blocks
    must be allocated before they are written (a full disk would be a SIGBUS then): a
    manifest of three records whose head says it has the most a head may say must not
    take ~300 MB of the scratch directory for them (a shared /var/tmp) for the whole pull,
    only room for the members planned so far."""
    from droot.deploy import reuse
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(reuse, "_ALLOCATED_MEMBERS", 2)  # the plan allocates twice
    local = LocalContent(tmp_path, [], delta._RECORDS_LIMIT)
    try:
        assert os.fstat(local._shared_region.fd).st_blocks * 512 < 4 << 20
        release = manifest([("a", b"same"), ("b", b"other"), ("c", b"same")])
        assert plan(release, local) == [[PACK, 0, 29]]
        assert local.planned(2) == SAME_RELEASE and copied_from(local, 3) == {2: b"a"}
        assert os.fstat(local._shared_region.fd).st_blocks * 512 < 4 << 20
    finally:
        local.close()


def test_a_later_copy_takes_over_from_a_replaced_first_file(planned):
    """Once `a` is replaced, the next file with its first content (`c`) is where a
    repeat (`d`) is copied from."""
    runs, local = planned([("a", b"same"), ("a", b"new a"), ("c", b"same"), ("d", b"same")])
    assert [local.planned(index) for index in range(4)] == [0, 0, 0, SAME_RELEASE]
    assert copied_from(local, 4) == {3: b"c"}


def recorded(planned, members, tmp_path) -> dict[bytes, bytes]:
    """The `.content` record a pull of these (name, data) files writes, as path -> digest,
    with the release made as the extraction would (the last member at a path wins)."""
    release = tmp_path / "release"
    for name, data in members:
        (release / name).parent.mkdir(parents=True, exist_ok=True)
        (release / name).write_bytes(data)
    _, local = planned(members, tmp_path)
    releases = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        local.write(types.SimpleNamespace(dir_fd=releases), "release")
    finally:
        os.close(releases)
    header, *entries = (tmp_path / ".content").read_bytes().split(b"\n", 1)[1].split(b"\0")
    record = {}
    for entry in filter(None, [header, *entries]):
        digest, _, _, _, path = entry.split(b" ", 4)
        assert path not in record, f"{path} recorded twice"
        record[path] = bytes.fromhex(digest.decode())
    return record


def test_the_record_holds_the_last_member_at_a_path(planned, tmp_path):
    assert recorded(planned, [("a", b"one"), ("b", b"bee"), ("a", b"two")], tmp_path) == {
        b"a": hashlib.sha256(b"two").digest(), b"b": hashlib.sha256(b"bee").digest()}


@pytest.fixture(params=["in memory", "in scratch files"])
def colliding(monkeypatch, request):
    """Every key of the plan's tables has the same hash, and a table made without a
    size starts with 8 slots (so the digests' grows): only the keys' stored bytes tell
    them apart. The tables' slots are in memory, or in scratch files, as an image's of
    hundreds of thousands of files are (droot.core.scratch)."""
    monkeypatch.setattr(indextable, "hash", lambda key: 7, raising=False)
    monkeypatch.setattr(indextable.IndexTable, "SLOTS", 8)
    if request.param == "in scratch files":
        monkeypatch.setattr(indextable.IndexTable, "MEMORY_SLOTS", 0)


def test_keys_of_one_hash_never_pass_for_each_other(colliding, planned, tmp_path):
    files = [(f"d/{n}", b"%d" % n) for n in range(40)]
    files += [("d/1", b"one again"), ("x", b"5"), ("d/10", b"10"), ("d/1x", b"1")]
    runs, local = planned(files)
    # x repeats d/5's content, and d/1x d/1's first content, whose path was replaced
    assert [local.planned(index) for index in range(44)] == [0] * 41 + [SAME_RELEASE] + [0] * 2
    assert copied_from(local, 44) == {41: b"d/5"}
    expected = {name.encode(): hashlib.sha256(data).digest() for name, data in files}
    assert recorded(planned, files, tmp_path / "record") == expected


@pytest.mark.parametrize("options", [(), ("--read-only",)])
def test_a_copy_source_gone_with_its_directory_is_the_manifests_fault(push_members, tmp_path,
                                                                      options):
    """`a/b/f`, then a file `a` (no member for `a` or `a/b`, which an export would have,
    so the plan does not see a directory replaced), then `g` with f's content: g is
    planned as a copy of a/b/f, which is gone when g is extracted. That is the
    manifest's doing, not a kept release's file changed: one line says so, and the pull
    is not made again."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    x = content(b"X")
    push_members([file("a/b/f", x), file("a", content(b"Q")), file("g", x)], store / "h")
    result = droot("pull", store / "h", "--root", root, *options)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "a/b/f, is gone" in result.stderr, \
        result.stderr
    assert not root.exists()
