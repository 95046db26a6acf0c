"""Directory times are set as the stream leaves each directory, so an extraction keeps only
the directories on the current member's path in memory, not one entry per directory of
the image (issue 14: a pull's memory does not grow with the image). Archives that are
not written depth first, name a directory through a symlink or have no directory entries
still get every directory's time from its last entry, as before."""

import errno
import os
import stat
import subprocess
import tarfile

import pytest

from tests.conftest import DROOT, END, droot_peak_rss_mb, member_bytes
from tests.deploy.conftest import deploy
from tests.deploy.test_deploy_headers import minimal_default_acl

T1, T2, T3, T4 = 1_100_000_000, 1_200_000_000, 1_300_000_000, 1_400_000_000


def directory(name: str, mtime: int, **fields) -> bytes:
    return member_bytes(name, type=tarfile.DIRTYPE, mode=fields.pop("mode", 0o755),
                        mtime=mtime, **fields)


def deployed(tmp_path, archive: bytes):
    root = tmp_path / "app"
    result = deploy(root, member_bytes("MARKER", b"x") + archive + END)
    assert result.returncode == 0, result.stderr
    return root


def mtime(path) -> int:
    return int(os.lstat(path).st_mtime)


def with_default_acl(name: str, mtime: int, acl: bytes, **fields) -> bytes:
    return directory(name, mtime, format=tarfile.PAX_FORMAT, pax_headers={
        "SCHILY.xattr.system.posix_acl_default": acl.decode("utf-8", "surrogateescape")},
        **fields)


def default_acl_of(path) -> bytes | None:
    try:
        return os.getxattr(path, "system.posix_acl_default", follow_symlinks=False)
    except OSError as error:
        if error.errno == errno.EOPNOTSUPP:
            pytest.skip("no POSIX ACLs on the test filesystem")
        if error.errno == errno.ENODATA:
            return None
        raise


def test_an_archive_that_comes_back_to_a_directory_keeps_its_time(tmp_path):
    root = deployed(tmp_path, directory("a", T1) + directory("b", T2) +
                    member_bytes("a/late", b"1") +          # back in a, after leaving it
                    directory("a/inner", T3) +              # a directory made there too
                    member_bytes("b/deep/er/file", b"2"))   # parents made in b
    assert (root / "a" / "late").read_bytes() == b"1"
    assert (mtime(root / "a"), mtime(root / "b"), mtime(root / "a" / "inner")) == (T1, T2, T3)
    assert (root / "b" / "deep" / "er" / "file").read_bytes() == b"2"


def test_a_directory_entry_after_its_contents_gives_its_time(tmp_path):
    root = deployed(tmp_path, member_bytes("c/f", b"1") + member_bytes("c/d/g", b"2") +
                    directory("c/d", T1) + directory("c", T2) + member_bytes("c/h", b"3"))
    assert (mtime(root / "c"), mtime(root / "c" / "d")) == (T2, T1)
    assert sorted(os.listdir(root / "c")) == ["d", "f", "h"]


def test_a_directory_named_through_a_symlink_keeps_its_time(tmp_path):
    root = deployed(tmp_path, directory("s", T1) + member_bytes("other", b"1") +
                    member_bytes("alias", type=tarfile.SYMTYPE, linkname="s") +
                    member_bytes("alias/z", b"2") + directory("t", T2) +
                    member_bytes("here", type=tarfile.SYMTYPE, linkname=".") +
                    member_bytes("here/t/y", b"3"))        # back into t, through the root
    assert (root / "s" / "z").read_bytes() == b"2" and (root / "t" / "y").read_bytes() == b"3"
    assert (mtime(root / "s"), mtime(root / "t")) == (T1, T2)


def test_a_file_in_a_made_parent_of_a_setgid_directory_keeps_its_group(tmp_path):
    """mkdir gives a parent made inside a setgid directory the bit and the group: a
    file below it owned by group 0 in the archive must be chowned back to 0."""
    root = deployed(tmp_path, directory("g", T1, mode=0o2775, gid=1234) +
                    member_bytes("g/made/file", b"1") + member_bytes("g/file", b"2"))
    assert os.lstat(root / "g" / "made").st_mode & stat.S_ISGID
    assert os.lstat(root / "g" / "made" / "file").st_gid == 0
    assert os.lstat(root / "g" / "file").st_gid == 0
    assert mtime(root / "g") == T1


def write_directories(path, count: int):
    """An archive of `count` directories with 200-byte names, two levels deep."""
    with open(path, "wb") as out:
        out.write(member_bytes("MARKER", b"x"))
        for top in range(max(1, count // 100)):
            name = f"{top:04d}" + "t" * 200
            out.write(directory(name, T1))
            for inner in range(min(count, 100)):
                out.write(directory(f"{name}/{inner:03d}" + "s" * 200, T2))
        out.write(END)


def test_memory_does_not_grow_with_the_number_of_directories(tmp_path):
    """50,000 directories took 33 MB more than 100 when every directory's time waited
    for the end of the archive; now what grows is only the current path."""
    peaks = {}
    for count in (100, 50_000):
        archive = tmp_path / f"{count}.tar"
        write_directories(archive, count)
        with open(archive, "rb") as stdin:
            peaks[count] = droot_peak_rss_mb("deploy", "--root", tmp_path / f"app{count}",
                                             stdin=stdin)
        archive.unlink()
    assert peaks[50_000] - peaks[100] < 15, peaks
    last = tmp_path / "app50000" / ("0499" + "t" * 200)
    assert mtime(last) == T1 and mtime(last / ("099" + "s" * 200)) == T2


def test_a_default_acl_is_set_after_the_directory_is_complete(tmp_path):
    """A directory's default ACL (set when the stream leaves it) changes the modes of
    nothing made in it, not even of members that come back to it afterwards."""
    acl = minimal_default_acl(7, 5, 5)  # group and others: no write
    root = deployed(tmp_path, with_default_acl("d", T1, acl) +
                    member_bytes("d/f", b"1", mode=0o664) +
                    member_bytes("other", b"2") +                    # d is left here
                    member_bytes("d/late", b"3", mode=0o666) +
                    member_bytes("d/made/g", b"4", mode=0o666))
    assert default_acl_of(root / "d") == acl
    modes = {name: stat.S_IMODE(os.lstat(root / "d" / name).st_mode)
             for name in ("f", "late", "made", "made/g")}
    assert modes == {"f": 0o664, "late": 0o666, "made": 0o755, "made/g": 0o666}
    for name in ("f", "late", "made"):
        assert not os.listxattr(root / "d" / name), name  # nothing inherited
    assert mtime(root / "d") == T1


@pytest.mark.parametrize("same_name", [
    member_bytes("d", type=tarfile.CHRTYPE, devmajor=1, devminor=3),  # skipped: no --devices
    member_bytes("d", type=tarfile.LNKTYPE, linkname="d"),            # a hard link to itself
], ids=["skipped-device", "self-link"])
def test_a_member_that_leaves_a_directory_in_place_keeps_its_time_and_acl(tmp_path,
                                                                          same_name):
    acl = minimal_default_acl(7, 5, 5)
    root = deployed(tmp_path, with_default_acl("d", T1, acl) + member_bytes("d/f", b"1") +
                    same_name)
    assert (root / "d").is_dir() and (mtime(root / "d"), default_acl_of(root / "d")) == (T1, acl)


def test_an_entry_naming_an_open_directory_through_a_symlink_is_its_last(tmp_path):
    """The last entry of a directory counts, whatever name it comes by: `g/up/g` names g
    again (up -> ..) while g is still open."""
    first, last = minimal_default_acl(7, 5, 5), minimal_default_acl(7, 0, 0)
    root = deployed(tmp_path, with_default_acl("g", T1, first) +
                    member_bytes("g/up", type=tarfile.SYMTYPE, linkname="..") +
                    with_default_acl("g/up/g", T2, last, mode=0o700))
    assert (mtime(root / "g"), default_acl_of(root / "g")) == (T2, last)
    assert stat.S_IMODE(os.lstat(root / "g").st_mode) == 0o700


def test_nothing_inherits_a_default_acl_set_before_the_directory_is_complete(tmp_path):
    """A directory left (its default ACL set) and then named again, by its entry or as
    the parent of a skipped device's missing parent: what is made in it afterwards
    inherits nothing."""
    acl = minimal_default_acl(7, 5, 0)  # others: nothing
    root = deployed(tmp_path, with_default_acl("a", T1, acl) + member_bytes("a/f", b"1") +
                    with_default_acl("b", T1, acl) + directory("c", T1) +
                    directory("a", T2) +                          # a's entry again
                    member_bytes("a/g", b"2", mode=0o644) + directory("a/sub", T3) +
                    member_bytes("b/n/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3) +
                    member_bytes("b/n/f", b"3", mode=0o644))
    modes = {name: stat.S_IMODE(os.lstat(root / name).st_mode)
             for name in ("a/g", "a/sub", "b/n", "b/n/f")}
    assert modes == {"a/g": 0o644, "a/sub": 0o755, "b/n": 0o755, "b/n/f": 0o644}
    assert default_acl_of(root / "a/sub") is None and default_acl_of(root / "b/n") is None
    assert (default_acl_of(root / "a"), default_acl_of(root / "b")) == (acl, acl)
    assert (mtime(root / "a"), mtime(root / "b"), mtime(root / "a/sub")) == (T2, T1, T3)


def test_deep_missing_parents_take_a_syscall_or_so_a_level(tmp_path):
    """A member 600 levels below its nearest existing directory: the parents are found
    by a binary search and made by descriptor. A walk up by path (stat and mkdir of each
    level by its whole path) made the kernel resolve ~600 levels per call, which a
    hostile archive of such members multiplies."""
    deep = "/".join(["d"] * 600)
    archive = member_bytes("MARKER", b"x") + member_bytes(f"{deep}/f", b"1") + END
    log = tmp_path / "strace.log"
    try:
        result = subprocess.run(["strace", "-f", "-qq", "-e", "trace=%stat,mkdir,mkdirat",
                                 "-o", log, DROOT, "deploy", "--root", tmp_path / "app"],
                                input=archive, capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "app" / deep / "f").read_bytes() == b"1"
    finally:  # shutil.rmtree (pytest's clean-up) recurses once a level
        subprocess.run(["rm", "-rf", tmp_path / "app.releases"], check=True)
    calls = log.read_text().splitlines()
    deep_stats = [call for call in calls if "stat" in call and "d/d/d/d" in call]
    made = [call for call in calls if "mkdir" in call and '"d"' in call]
    assert len(made) == 600, f"{len(made)} of 600 parents made by descriptor"
    assert len(deep_stats) < 40, f"{len(deep_stats)} stats of deep paths"


@pytest.mark.parametrize("made_as_parent", [False, True], ids=["entry", "made-as-parent"])
def test_nothing_inherits_the_acl_of_an_entry_naming_an_open_directory(tmp_path,
                                                                        made_as_parent):
    """`s/up/s` names s again (up -> ..) while s is still open: its default ACL waits
    until s is left, not until `s/up/s` is, or what the archive makes in s afterwards
    inherits it (its modes cut by the ACL's, an ACL of its own)."""
    acl = minimal_default_acl(7, 0, 0)
    first = member_bytes("s/MADE", b"0") if made_as_parent else directory("s", T1)
    root = deployed(tmp_path, first +
                    member_bytes("s/up", type=tarfile.SYMTYPE, linkname="..") +
                    with_default_acl("s/up/s", T2, acl) + member_bytes("s/up/s/f", b"1") +
                    member_bytes("s/g", b"2", mode=0o666) + directory("s/h", T3))
    assert stat.S_IMODE(os.lstat(root / "s/g").st_mode) == 0o666
    assert stat.S_IMODE(os.lstat(root / "s/h").st_mode) == 0o755
    assert default_acl_of(root / "s/h") is None
    assert (default_acl_of(root / "s"), mtime(root / "s"), mtime(root / "s/h")) == (acl, T2, T3)


@pytest.mark.parametrize("name", ["d", "./"])
def test_a_directory_entry_again_gives_its_owner(tmp_path, name):
    """A directory's last entry gives its owner, root's (0:0) too."""
    root = deployed(tmp_path, directory(name, T1, uid=5, gid=7) + directory(name, T2))
    info = os.stat(root / name)
    assert (info.st_uid, info.st_gid) == (0, 0)


def test_a_file_replaces_a_deep_tree(tmp_path):
    """shutil.rmtree recursed a frame a level: a member replacing a tree 1,500 deep was
    an internal error (RecursionError), not a deploy."""
    deep = "/".join(["d"] * 1500)
    try:
        root = deployed(tmp_path, member_bytes(f"{deep}/f", b"1") + member_bytes("d", b"2"))
        assert (root / "d").read_bytes() == b"2"
    finally:  # pytest's clean-up recurses too, if the deploy left the tree
        subprocess.run(["rm", "-rf", tmp_path / "app.releases"], check=True)
