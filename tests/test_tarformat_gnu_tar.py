"""droot's tar header codec (droot.core.tarformat) against GNU tar as an oracle: random
files (owners, modes, times, xattrs set as root) archived by GNU tar in each of its
formats must read back exactly as made. (tarfile as the oracle, and the codec's own rules:
tests/unit/test_tarformat.py.)"""

import os
import stat
import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import read_all


@st.composite
def gnu_tar_trees(draw):
    """A format and a few files to make: (name, kind, mode, uid, gid, mtime_ns, extra)."""
    format_name = draw(st.sampled_from(["ustar", "gnu", "posix"]))
    if format_name == "posix":
        mtimes = st.integers(-2 ** 40, 2 ** 40)  # nanoseconds, before 1970 too
    elif format_name == "gnu":
        mtimes = st.integers(-2 ** 31, 2 ** 33).map(lambda s: s * 1_000_000_000)
    else:
        mtimes = st.integers(0, 8 ** 11 - 1).map(lambda s: s * 1_000_000_000)  # 11 octal digits
    max_id = 2 ** 21 - 1 if format_name == "ustar" else 2 ** 32 - 2
    entries = draw(st.lists(st.tuples(
        st.text("abcdefghij-_.é", min_size=1, max_size=60).filter(lambda n: n not in (".", "..")),
        st.sampled_from(["file", "dir", "symlink", "fifo"]),
        st.integers(0, 0o7777), st.integers(0, max_id), st.integers(0, max_id), mtimes,
        st.binary(max_size=700)),
        min_size=1, max_size=6, unique_by=lambda entry: entry[0]))
    return format_name, entries


def make_tree(directory: str, entries) -> dict:
    expected = {}
    for name, kind, mode, uid, gid, mtime_ns, extra in entries:
        path = os.path.join(directory, name)
        if kind == "file":
            with open(path, "wb") as file:
                file.write(extra)
        elif kind == "dir":
            os.mkdir(path)
        elif kind == "symlink":
            os.symlink(extra.hex() or "target", path)
        else:
            os.mkfifo(path)
        os.chown(path, uid, gid, follow_symlinks=False)
        if kind != "symlink":
            os.chmod(path, mode)
            if kind == "file":
                os.setxattr(path, "user.droot-test", extra[:20] or b"x")
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        info = os.lstat(path)
        expected[name.encode()] = (kind, info, os.readlink(path).encode()
                                   if kind == "symlink" else extra)
    return expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gnu_tar_trees())
def test_the_codec_reads_what_gnu_tar_writes(tree):
    format_name, entries = tree
    with tempfile.TemporaryDirectory() as directory:
        expected = make_tree(directory, entries)
        names = sorted(expected)
        archive = subprocess.run(
            ["tar", f"--format={format_name}", "--numeric-owner", "--no-recursion",
             *(["--xattrs", "--xattrs-include=user.*"] if format_name == "posix" else []),
             "-C", directory, "-cf", "-", "--", *(name.decode() for name in names)],
            check=True, capture_output=True).stdout
    read = read_all(archive)
    assert [header.path for header, _ in read] == names
    for header, data in read:
        kind, info, extra = expected[header.path]
        assert header.type == {"file": ord("0"), "dir": ord("5"), "symlink": ord("2"),
                               "fifo": ord("6")}[kind]
        if kind != "symlink":
            assert header.mode == stat.S_IMODE(info.st_mode)
        assert (header.uid, header.gid) == (info.st_uid, info.st_gid)
        assert header.mtime_ns == info.st_mtime_ns
        if kind == "file":
            assert data == extra
            if format_name == "posix":
                assert header.xattrs == [(b"user.droot-test", extra[:20] or b"x")]
        elif kind == "symlink":
            assert header.linkname == extra
