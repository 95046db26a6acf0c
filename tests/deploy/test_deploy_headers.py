"""Hostile and odd tar headers (issue 11): each is refused in one line that names the
member and the problem, or extracted exactly as GNU tar would; a refusal never hangs,
never switches the release and never leaves a staging directory behind.

Where it shows something, the same input is also given to GNU tar (which must agree that
it is wrong, or extract it the same way)."""

import errno
import os
import stat
import struct
import subprocess
import tarfile

import pytest
import zstandard

from tests.conftest import END, base256, extended_header, member_bytes, pax_record, with_field
from tests.deploy.conftest import compress, current, deploy, release_names, releases_dir

FILLER = member_bytes("filler", b"harmless\n")


@pytest.fixture
def good_root(tmp_path):
    """A root with one good release deployed; yields (root, release name)."""
    root = tmp_path / "app"
    result = deploy(root, member_bytes("MARKER", b"good") + END)
    assert result.returncode == 0, result.stderr
    return root, current(root)


def refused(root, good, archive: bytes, *words: str, timeout: float = 30) -> str:
    """Deploy `archive` over the good release: one line naming the problem, the current
    release untouched, no staging left. Returns the line."""
    result = deploy(root, archive, timeout=timeout)
    line = result.stderr.decode(errors="replace")
    assert result.returncode == 1, line
    assert line.startswith("droot: cannot extract the archive: ") and line.count("\n") == 1, line
    for word in words:
        assert word in line, line
    assert "Traceback" not in line and "Error:" not in line, line
    assert current(root) == good and (root / "MARKER").read_bytes() == b"good"
    assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock", good]
    return line


def gnu_tar_refuses(archive: bytes, words: str = ""):
    result = subprocess.run(["tar", "-tvf", "-"], input=archive, capture_output=True,
                            timeout=30)
    assert result.returncode != 0, "GNU tar accepts it: the test archive is wrong"
    assert words.encode() in result.stderr, result.stderr


# --- 1. negative sizes ------------------------------------------------------------------------

def test_a_negative_base256_size_is_refused_at_once(good_root):
    root, good = good_root
    archive = FILLER + with_field(member_bytes("bad", b"x" * 600), 124, base256(-1, 12)) + END
    gnu_tar_refuses(archive, "out of off_t range")
    refused(root, good, archive, "bad: negative size -1")
    # The lock was let go: the next deploy of that root goes through.
    assert deploy(root, FILLER + END).returncode == 0


def test_a_negative_pax_size_is_refused_at_once(good_root):
    root, good = good_root
    archive = (FILLER + extended_header(b"x", pax_record(b"size", b"-5")) +
               member_bytes("bad", b"data") + END)
    gnu_tar_refuses(archive, "size=-5 is out of range")
    refused(root, good, archive, "bad: ", "pax header")


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"K"])
def test_a_negative_size_of_an_extended_header_is_one_line(good_root, kind):
    root, good = good_root
    archive = FILLER + extended_header(kind, b"", size=-512) + member_bytes("f", b"1") + END
    refused(root, good, archive, "the tar header at byte 1024: negative size -512")


# --- 2. parents that have no entry of their own ------------------------------------------------

def test_made_up_parent_directories_are_not_writable_by_others(tmp_path):
    root = tmp_path / "app"
    # `late` gets its own entry after its contents, as between the layers of an export.
    archive = (member_bytes("a/b/c/file", b"x") + member_bytes("late/inner/f", b"y") +
               member_bytes("late", type=tarfile.DIRTYPE, mode=0o750) + END)
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    for made_up in ("a", "a/b", "a/b/c", "late/inner"):
        assert stat.S_IMODE(os.lstat(root / made_up).st_mode) == 0o755, made_up
    assert stat.S_IMODE(os.lstat(root / "late").st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(root / "a/b/c/file").st_mode) == 0o644


# --- 3. every header's checksum ---------------------------------------------------------------

@pytest.mark.parametrize("field", ["name", "mode"])
def test_a_corrupt_later_header_is_refused(good_root, field):
    root, good = good_root
    second = member_bytes("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
    if field == "name":
        corrupt = with_field(second, 0, b"etc/shadow", fix_checksum=False)
    else:
        corrupt = with_field(second, 100, b"0004777\0", fix_checksum=False)
    archive = FILLER + corrupt + END
    gnu_tar_refuses(archive, "Skipping to next header")
    refused(root, good, archive, "the tar header at byte 1024: bad header checksum")
    # The same change with a right checksum is taken: it is the checksum that was checked.
    assert deploy(root, FILLER + with_field(corrupt, 0, b"etc")[:len(corrupt)] + END
                  ).returncode == 0


# --- 4. GNU base-256 numbers ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_tar_files_dated_before_1970_keep_their_time(tmp_path, fmt):
    source = tmp_path / "src"
    source.mkdir()
    (source / "old").write_text("from 1960\n")
    os.utime(source / "old", ns=(-315_619_200_000_000_000, -315_619_200_000_000_000))
    archive = subprocess.run(["tar", f"--format={fmt}", "-C", source, "-cf", "-", "old"],
                             check=True, capture_output=True).stdout
    if fmt == "gnu":
        assert archive[136] == 0xFF  # GNU tar's own base-256 encoding of a negative time
    root = tmp_path / "app"
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    assert os.lstat(root / "old").st_mtime_ns == -315_619_200_000_000_000


def test_a_negative_uid_is_refused(good_root):
    root, good = good_root
    archive = FILLER + with_field(member_bytes("owned", b"x"), 108, base256(-1, 8)) + END
    refused(root, good, archive, "owned: negative uid -1")


def test_large_base256_ids_and_sizes_are_read_exactly(tmp_path):
    root = tmp_path / "app"
    big = with_field(member_bytes("big", b"x" * 700), 108, base256(3_000_000_000, 8))
    big = with_field(big, 124, base256(700, 12))
    assert deploy(root, big + END).returncode == 0
    assert os.lstat(root / "big").st_uid == 3_000_000_000
    assert (root / "big").read_bytes() == b"x" * 700


# --- 5. extended headers have a size limit ----------------------------------------------------

def test_an_oversized_extended_header_is_refused_before_it_is_read(good_root):
    root, good = good_root
    # 2 GiB announced, nothing behind it: refused from the header alone.
    archive = FILLER + extended_header(b"x", b"", size=2 << 30)[:512]
    refused(root, good, archive, "an extended header of 2147483648 bytes")


def test_a_pax_header_up_to_the_limit_is_read(tmp_path):
    comment = b"c" * ((1 << 20) - 64)  # an unknown keyword: ignored, as tar does
    archive = (extended_header(b"x", pax_record(b"comment", comment) +
                               pax_record(b"mtime", b"1234.5")) +
               member_bytes("f", b"data") + END)
    root = tmp_path / "app"
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    assert os.lstat(root / "f").st_mtime_ns == 1_234_500_000_000


# --- 6. default ACLs do not change modes -----------------------------------------------------

ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER = 0x01, 0x04, 0x20


def minimal_default_acl(user: int, group: int, other: int) -> bytes:
    """The xattr value of `setfacl -d -m u::7,g::5,o::5` (for 7, 5, 5)."""
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
        for tag, perm in ((ACL_USER_OBJ, user), (ACL_GROUP_OBJ, group), (ACL_OTHER, other)))


def default_acl(directory, user: int, group: int, other: int):
    """Set a minimal default ACL on `directory`."""
    value = minimal_default_acl(user, group, other)
    try:
        os.setxattr(directory, "system.posix_acl_default", value)
    except OSError as error:
        if error.errno == errno.EOPNOTSUPP:
            pytest.skip("no POSIX ACLs on the test filesystem")
        raise


def test_a_default_acl_above_the_root_does_not_change_modes(tmp_path):
    area = tmp_path / "area"
    area.mkdir()
    default_acl(area, 7, 5, 5)  # group and others: no write
    # The control: a file created there with 0664 gets 0644.
    fd = os.open(area / "control", os.O_CREAT | os.O_WRONLY, 0o664)
    os.close(fd)
    assert stat.S_IMODE(os.lstat(area / "control").st_mode) == 0o644
    root = area / "app"
    archive = (member_bytes("shared", type=tarfile.DIRTYPE, mode=0o2775) +
               member_bytes("shared/file", b"x", mode=0o664) +
               member_bytes("open", b"y", mode=0o666) + END)
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.lstat(root / "shared").st_mode) == 0o2775
    assert stat.S_IMODE(os.lstat(root / "shared/file").st_mode) == 0o664
    assert stat.S_IMODE(os.lstat(root / "open").st_mode) == 0o666


# --- 7. every error names the member and the problem -----------------------------------------

def test_an_xattr_namespace_linux_lacks_is_a_warning_naming_it(tmp_path):
    archive = (member_bytes("odd", b"data", format=tarfile.PAX_FORMAT,
                            pax_headers={"SCHILY.xattr.5": "v"}) + END)
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    result = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-C", gnu, "-xf", "-"],
                            input=archive, capture_output=True)
    assert result.returncode == 0 and b"Operation not supported" in result.stderr
    root = tmp_path / "app"
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines[0] == ("droot: warning: odd: extended attribute 5 not set: "
                        "Operation not supported")
    assert lines[1].startswith("droot: deployed ")
    assert (root / "odd").read_bytes() == b"data"


@pytest.mark.parametrize("case", ["garbage mtime", "NUL in name", "NUL in link target",
                                  "NUL in xattr name", "empty name", "file at the root",
                                  "written through a planted symlink", "under a file",
                                  "garbage in a number", "dotdot"])
def test_bad_members_are_one_line_naming_them(good_root, case):
    root, good = good_root
    pax = tarfile.PAX_FORMAT
    members, words = {
        "garbage mtime": (member_bytes("etc/motd", b"hi", format=pax,
                                       pax_headers={"mtime": "12:30"}),
                          ["etc/motd: bad mtime value '12:30' in its pax header"]),
        "NUL in name": (extended_header(b"x", pax_record(b"path", b"bin/a\0b")) +
                        member_bytes("x", b"1"), [r"bin/a\x00b", "NUL byte"]),
        "NUL in link target": (extended_header(b"x", pax_record(b"linkpath", b"/a\0b")) +
                               member_bytes("ln", type=tarfile.SYMTYPE, linkname="x"),
                               ["ln: link target", "NUL byte"]),
        "NUL in xattr name": (extended_header(b"x", pax_record(b"SCHILY.xattr.user.a\0b",
                                                                b"v")) +
                              member_bytes("f", b"1"), ["f: extended attribute name"]),
        "empty name": (member_bytes("", b"data"), ["a member with an empty name"]),
        "file at the root": (member_bytes(".", b"data"),
                             [".: a member that is not a directory names the root"]),
        "written through a planted symlink": (
            member_bytes("etc", type=tarfile.SYMTYPE, linkname="/nonexistent") +
            member_bytes("etc/passwd", b"x"),
            ["etc/passwd: its parent etc is a symlink to /nonexistent, which is not a "
             "directory"]),
        "under a file": (member_bytes("bin", b"a file") + member_bytes("bin/sh", b"x"),
                         ["bin/sh: its parent bin is not a directory"]),
        "garbage in a number": (with_field(member_bytes("num", b"x"), 100, b"07x4\0"),
                                ["num: a numeric field of its header is not a number"]),
        "dotdot": (member_bytes("a/../../etc/passwd", b"x"),
                   ["a/../../etc/passwd: has a '..' component"]),
    }[case]
    refused(root, good, FILLER + members + END, *words)


# --- 8. zstd streams that start with a skippable frame --------------------------------------

def test_a_pzstd_archive_deploys(tmp_path):
    plain = FILLER + member_bytes("MARKER", b"pzstd") + END
    compressed = subprocess.run(["pzstd", "-q", "-c"], input=plain, check=True,
                                capture_output=True).stdout
    assert compressed[:4] == b"\x50\x2a\x4d\x18"  # a skippable frame first
    skippable = struct.pack("<II", 0x184D2A5F, 3) + b"abc" + compress(plain, "zstd")
    assert zstandard.ZstdDecompressor().stream_reader(
        skippable, read_across_frames=True).read() == plain  # a valid zstd stream
    for archive in (compressed, skippable):
        root = tmp_path / "app"
        result = deploy(root, archive)
        assert result.returncode == 0, result.stderr
        assert (root / "MARKER").read_bytes() == b"pzstd"
        # The report's compression field (the root's path holds "pzstd" anyway).
        assert b" files, zstd, sha256 " in result.stderr, result.stderr


# --- 9. a file that replaces a directory keeps its own time ----------------------------------

def test_a_file_replacing_a_directory_keeps_its_own_mtime(tmp_path):
    archive = (member_bytes("x", type=tarfile.DIRTYPE, mode=0o755, mtime=1_000_000_000) +
               member_bytes("x/inner", type=tarfile.DIRTYPE, mode=0o755, mtime=1_100_000_000) +
               member_bytes("x", b"a file now", mtime=1_600_000_000) +
               member_bytes("y", type=tarfile.DIRTYPE, mode=0o700, mtime=1_200_000_000) +
               member_bytes("y/f", b"1") +
               member_bytes("y", type=tarfile.DIRTYPE, mode=0o750, mtime=1_300_000_000) + END)
    root = tmp_path / "app"
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    assert os.lstat(root / "x").st_mtime == 1_600_000_000 and (root / "x").is_file()
    # A directory's last entry gives its mode and time, as GNU tar does.
    assert os.lstat(root / "y").st_mtime == 1_300_000_000
    assert stat.S_IMODE(os.lstat(root / "y").st_mode) == 0o750
    assert release_names(root) == [current(root)]
