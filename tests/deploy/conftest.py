"""Helpers of the deploy tests: archives made here (tarfile, GNU tar), and views of a root."""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import zstandard

from droot.core.releasename import RELEASE_NAME
from droot.deploy.releases import LOCK_NAME, RECORDS
from tests.conftest import DROOT, make_busybox_root


def tar_of(directory: Path, compression: str = "gzip") -> bytes:
    """GNU tar of a directory (numeric owners, xattrs), compressed like a pushed archive."""
    plain = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                            "-C", str(directory), "-cf", "-", "."],
                           check=True, capture_output=True).stdout
    return compress(plain, compression)


def compress(plain: bytes, compression: str) -> bytes:
    if compression == "gzip":
        import gzip
        return gzip.compress(plain, 1)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(plain)
    return plain


def hostile_tar(members) -> bytes:
    """A tar built member by member: (name, type, payload) with type "file", "dir",
    "symlink", "hardlink", "chr", "blk"; payload is the data, the link target or (major,
    minor)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size = len(payload)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind in ("chr", "blk"):
                info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                info.devmajor, info.devminor = payload
                info.mode = 0o666
            archive.addfile(info)
    return buffer.getvalue()


def app_archive(tmp_path: Path, marker: str, compression="gzip", extra_files=0) -> bytes:
    """A busybox root with /MARKER holding `marker`, and `extra_files` more small files."""
    root = make_busybox_root(tmp_path / f"src-{marker}")
    (root / "MARKER").write_text(marker)
    if extra_files:
        (root / "data").mkdir()
        for i in range(extra_files):
            (root / "data" / f"f{i}").write_text(f"{marker} {i}\n" * 20)
    return tar_of(root, compression)


def deploy(root: Path, archive: bytes, *args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 120)
    return subprocess.run([DROOT, "deploy", "--root", str(root), *map(str, args)],
                          input=archive, capture_output=True, **kwargs)


def releases_dir(root: Path) -> Path:
    return root.parent / f"{root.name}.releases"


def release_names(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(releases_dir(root)) if not name.startswith("."))


def leftovers(root: Path) -> list[str]:
    """What ROOT.releases holds besides releases and droot's own files (the lock, the
    record of the last deploy): nothing after a failed or interrupted deploy, whatever
    its temporary entries are called."""
    return sorted(name for name in os.listdir(releases_dir(root))
                  if name not in (LOCK_NAME, *RECORDS)
                  and not RELEASE_NAME.match(name))


def current(root: Path) -> str:
    return os.path.basename(os.readlink(root))


def tree(directory: Path) -> dict:
    """path -> (type, mode, uid, gid, size, mtime, link target or device) of everything."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            extra = os.readlink(path) if path.is_symlink() else info.st_rdev
            result[str(path.relative_to(directory))] = (
                info.st_mode, info.st_uid, info.st_gid,
                info.st_size if not path.is_dir() else 0, int(info.st_mtime), extra)
    return result
