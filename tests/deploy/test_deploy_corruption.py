"""Random corruption of valid archives through `droot deploy` (issue 11): every corrupted
archive ends in a correct tree (the one that Python's tarfile reads from the same bytes)
or in one clear line with the current release untouched: never a hang, a traceback or a
switched release."""

import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.deploy.conftest import current, deploy, releases_dir


def base_archive() -> bytes:
    """A small archive with each kind of header: ustar, GNU long names, pax with xattrs
    and fractional times, links, a directory that comes after its contents."""
    members = []

    def add(name, kind=tarfile.REGTYPE, data=b"", **fields):
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mode, info.mtime = kind, len(data), 0o644, 1_700_000_000
        for key, value in fields.items():
            setattr(info, key, value)
        members.append((info, data))
    add("etc", tarfile.DIRTYPE, mode=0o755)
    add("etc/hostname", data=b"host\n")
    add("etc/" + "long" * 40, data=b"long name\n", uid=1000, gid=1000)
    add("bin/tool", data=bytes(range(256)) * 3, mode=0o4755, mtime=1_600_000_000.25,
        pax_headers={"SCHILY.xattr.user.origin": "test"})
    add("bin/sh", tarfile.SYMTYPE, linkname="tool")
    add("bin/again", tarfile.LNKTYPE, linkname="bin/tool")
    add("bin", tarfile.DIRTYPE, mode=0o750)
    add("MARKER", data=b"corrupted\n")
    parts = []
    for number, (info, data) in enumerate(members):
        format_ = tarfile.GNU_FORMAT if number < 3 else tarfile.PAX_FORMAT
        parts += [info.tobuf(format_, "utf-8", "surrogateescape"), data,
                  bytes(-len(data) % 512)]
    return b"".join(parts) + bytes(1024)


BASE = base_archive()
# Mostly header bytes (and pax records, which no checksum covers): corrupting file data
# only changes the content, which is less to learn from.
HEADER_BYTES = [offset for offset in range(len(BASE))
                if BASE[offset - offset % 512: offset - offset % 512 + 512][257:262] == b"ustar"
                or b"=" in BASE[offset - offset % 512: offset - offset % 512 + 512]]
positions = st.one_of(st.sampled_from(HEADER_BYTES), st.integers(0, len(BASE) - 1))
changes = st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=3)


def expected_tree(archive: bytes) -> dict | None:
    """What tarfile reads from the archive: path -> (kind, mode, uid, gid, mtime,
    content or target); None when tarfile cannot read it."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as reader:
            tree = {}
            for info in reader:
                name = info.name.strip("/")
                if info.islnk():
                    tree[name] = tree[info.linkname.strip("/")]
                    continue
                content = reader.extractfile(info).read() if info.isreg() else (
                    info.linkname if info.issym() else None)
                tree[name] = ("file" if info.isreg() else "dir" if info.isdir() else
                              "symlink" if info.issym() else "other",
                              info.mode, info.uid, info.gid, int(info.mtime), content)
    except (tarfile.TarError, KeyError, OSError, ValueError):
        return None
    return tree


def deployed_tree(root: Path, keys) -> dict:
    tree = {}
    for name in keys:
        path = root / name
        info = os.lstat(path)
        kind = ("file" if stat.S_ISREG(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode)
                else "symlink" if stat.S_ISLNK(info.st_mode) else "other")
        content = path.read_bytes() if kind == "file" else (
            os.readlink(path) if kind == "symlink" else None)
        mode = stat.S_IMODE(info.st_mode)
        tree[name] = (kind, mode, info.st_uid, info.st_gid, int(info.st_mtime), content)
    return tree


def all_paths(root: Path) -> set:
    found = set()
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(str((Path(directory) / name).relative_to(root)))
    return found


def test_the_base_archive_deploys_as_tarfile_reads_it(tmp_path):
    root = tmp_path / "app"
    result = deploy(root, BASE)
    assert result.returncode == 0, result.stderr
    expected = expected_tree(BASE)
    assert len(expected) == 8 and all_paths(root) == set(expected)
    assert deployed_tree(root, expected) == {
        name: value if value[0] != "symlink" else (*value[:1], 0o777, *value[2:])
        for name, value in expected.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes)
def test_a_corrupted_archive_is_a_correct_tree_or_one_line(changes):
    archive = bytearray(BASE)
    for position, value in changes:
        archive[position] = value
    archive = bytes(archive)
    work = Path(tempfile.mkdtemp(prefix="droot-corrupt-"))
    try:
        root = work / "app"
        assert deploy(root, BASE).returncode == 0
        good = current(root)
        result = deploy(root, archive, timeout=60)  # a hang fails here
        stderr = result.stderr.decode(errors="replace")
        assert "Traceback" not in stderr and stderr.count("\n") in (1, 2), stderr
        event("refused" if result.returncode else "deployed")
        if result.returncode != 0:
            assert result.returncode == 1 and stderr.startswith("droot: "), stderr
            assert current(root) == good
            assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock", good]
            return
        assert stderr.splitlines()[-1].startswith("droot: deployed "), stderr
        expected = expected_tree(archive)
        assert expected is not None, f"deployed what tarfile cannot read: {stderr}"
        assert all_paths(root) == set(expected) | parents(expected)
        deployed = deployed_tree(root, expected)
        for name, value in expected.items():
            if value[0] == "symlink":  # a symlink's own mode is always 0777 on Linux
                value = (value[0], 0o777, *value[2:])
            assert deployed[name] == value, name
    finally:
        shutil.rmtree(work)


def parents(tree) -> set:
    return {os.path.dirname(name) for name in tree if os.path.dirname(name)} - set(tree)
