"""Delta pulls into read-only releases (`--read-only`): a file whose bytes and metadata a
read-only kept release holds is hard-linked, not copied; nothing else is, and no app
can change a shared file, so every rollback target stays as deployed."""

import hashlib
import os
import re
from pathlib import Path

import pytest

from tests.conftest import droot
from tests.delta.conftest import MIB, full_deploy, push, summary, tree


def pull(store: Path, name: str, root: Path, *options) -> tuple[Path, int]:
    """Pull `name`: (the new release's directory, the files hard-linked into it)."""
    result = droot("pull", store / name, "--root", root, *options)
    assert result.returncode == 0, result.stderr
    linked = re.search(r"\((\d+) hard-linked\)", result.stderr)
    return Path(os.path.realpath(root)), int(linked.group(1)) if linked else 0


def same_inode(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino


def shared_files(new: Path, *olds: Path) -> int:
    """How many regular files of release `new` are the same inode in one of `olds`."""
    return sum(1 for path in new.rglob("*") if path.is_file() and not path.is_symlink()
               and any((old / path.relative_to(new)).exists()
                       and same_inode(old / path.relative_to(new), path) for old in olds))


def stores(versions, tmp_path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    push(versions[0], store / "v1")
    push(versions[1], store / "v2")
    return store


def test_unchanged_files_are_hard_links_no_app_can_change(versions, tmp_path):
    kept = versions[3]
    store, root = stores(versions, tmp_path), tmp_path / "app"
    v1, linked = pull(store, "v1", root, "--read-only")
    assert linked == 0  # nothing to link from yet
    v2, linked = pull(store, "v2", root, "--read-only")
    assert linked == shared_files(v2, v1) >= 4  # busybox, passwd, group, keep.bin, ...
    assert same_inode(v1 / "srv/keep.bin", v2 / "srv/keep.bin")
    assert same_inode(v1 / "bin/busybox", v2 / "bin/busybox")
    assert os.lstat(v1 / "bin/sh").st_ino == os.lstat(v2 / "bin/sh").st_ino  # a symlink
    assert not same_inode(v1 / "srv/changes.bin", v2 / "srv/changes.bin")
    # The same bytes with another mode: a file of its own.
    assert not same_inode(v1 / "srv/tool", v2 / "srv/tool")
    assert os.stat(v1 / "srv/tool").st_mode & 0o7777 == 0o755
    full_deploy(versions[1], tmp_path / "full", "--read-only")
    assert tree(root) == tree(tmp_path / "full")

    # The app cannot change a shared file through its release, even as root.
    script = ("(echo x > /srv/keep.bin) 2>&1; (chmod 600 /srv/keep.bin) 2>&1; "
              "(touch -d 2001-01-01 /srv/keep.bin) 2>&1; (rm /srv/keep.bin) 2>&1; true")
    result = droot("run", "--root", root, "--", "/bin/sh", "-c", script)
    assert result.returncode == 0 and result.stdout.count("Read-only file system") == 4, \
        (result.stdout, result.stderr)
    assert (v1 / "srv/keep.bin").read_bytes() == kept["srv/keep.bin"]

    # Back to v1, pulled again: linked from v2 (the recorded one) or from v1: all of it.
    v1_again, linked = pull(store, "v1", root, "--read-only")
    assert linked == shared_files(v1_again, v1, v2) == shared_files(v1_again, v1)
    assert same_inode(v1 / "srv/keep.bin", v1_again / "srv/keep.bin")
    full_deploy(versions[0], tmp_path / "full1", "--read-only")
    assert tree(root) == tree(tmp_path / "full1")
    assert droot("rollback", "--root", root, "--to", v1.name).returncode == 0
    assert tree(root) == tree(tmp_path / "full1")


def test_a_writable_release_is_never_linked(versions, tmp_path):
    """A release deployed without --read-only could have been changed by its app, and
    its app could change a shared inode later (after a rollback): it is copied from."""
    store, root = stores(versions, tmp_path), tmp_path / "app"
    v1, _ = pull(store, "v1", root)
    v2, linked = pull(store, "v2", root, "--read-only")
    assert linked == 0 and not same_inode(v1 / "srv/keep.bin", v2 / "srv/keep.bin")
    # And a read-only release is not linked into a writable one either.
    v1_again, linked = pull(store, "v1", root)
    assert linked == 0 and not same_inode(v2 / "srv/keep.bin", v1_again / "srv/keep.bin")
    assert not same_inode(v2 / "bin/busybox", v1_again / "bin/busybox")
    assert os.lstat(v2 / "bin/sh").st_ino != os.lstat(v1_again / "bin/sh").st_ino


def test_a_read_only_release_changed_behind_droots_back_is_read_again(versions, tmp_path):
    """Files of a read-only release are planned from the record without a look (no app
    can change them): one the host's root replaced or removed makes the extraction fail
    where it takes it, and the pull starts once more, reading each candidate."""
    store, root = stores(versions, tmp_path), tmp_path / "app"
    v1, _ = pull(store, "v1", root, "--read-only")
    replacement = v1 / "srv/keep.bin.new"
    replacement.write_bytes(os.urandom((v1 / "srv/keep.bin").stat().st_size))
    os.rename(replacement, v1 / "srv/keep.bin")  # the same size, other bytes, a new inode
    (v1 / "etc/passwd").unlink()
    result = droot("pull", store / "v2", "--root", root, "--read-only")
    assert result.returncode == 0, result.stderr
    warnings = re.findall(r"warning: a file of a kept release changed: (/\S+): .*: pulling "
                          "again", result.stderr)
    assert warnings in (["/etc/passwd"], ["/srv/keep.bin"]), result.stderr  # the first met
    v2 = Path(os.path.realpath(root))
    assert summary(result.stderr)[2] > 2 * MIB  # keep.bin was downloaded, not reused
    assert same_inode(v1 / "bin/busybox", v2 / "bin/busybox")  # the rest still linked
    full_deploy(versions[1], tmp_path / "full", "--read-only")
    assert tree(root) == tree(tmp_path / "full")


def test_the_record_of_a_linked_release_holds_each_files_inode(versions, tmp_path):
    """The record entries of hard-linked files are written from what the link saw, not
    from a look at each file: they must be what a look would find."""
    store, root = stores(versions, tmp_path), tmp_path / "app"
    pull(store, "v1", root, "--read-only")
    v2, linked = pull(store, "v2", root, "--read-only")
    record = (tmp_path / "app.releases" / ".content").read_bytes()
    header, _, body = record.partition(b"\n")
    assert header == b"droot-content 1 " + v2.name.encode()
    entries = [entry.split(b" ", 4) for entry in body.split(b"\0")[:-1]]
    assert len(entries) == sum(1 for path in v2.rglob("*") if path.is_file()
                               and not path.is_symlink()) > linked >= 4
    for digest, ino, size, ctime, path in entries:
        info = os.lstat(v2 / os.fsdecode(path))
        assert (int(ino), int(size), int(ctime)) == (info.st_ino, info.st_size,
                                                     info.st_ctime_ns), path
        assert hashlib.sha256((v2 / os.fsdecode(path)).read_bytes()).hexdigest() == \
            digest.decode(), path


@pytest.mark.parametrize("planted", ["directory", "file"])
def test_a_symlink_planted_in_a_read_only_release_never_links_a_host_file(
        versions, tmp_path, planted):
    """The plan trusts a read-only release's record without a look; where a file is
    linked, its directory is resolved with no symlink followed and the file's name is
    linked as itself. A directory or a file the host's root swapped for a symlink to the
    recorded inode itself, moved out of the release, is not linked from: a host file
    never becomes a file of a release (and the pull starts again without the record)."""
    store, root = stores(versions, tmp_path), tmp_path / "app"
    v1, _ = pull(store, "v1", root, "--read-only")
    outside = tmp_path / "outside"
    # Relative symlinks: the extraction is chrooted in the new release, the kept one
    # is outside it.
    if planted == "directory":
        os.rename(v1 / "bin", outside)
        os.symlink("../../outside", v1 / "bin")
        names = [name for name in os.listdir(outside) if not (outside / name).is_symlink()]
    else:
        outside.mkdir()
        os.rename(v1 / "srv" / "keep.bin", outside / "keep.bin")
        os.symlink("../../../outside/keep.bin", v1 / "srv" / "keep.bin")
        names = ["keep.bin"]
    result = droot("pull", store / "v2", "--root", root, "--read-only")
    assert result.returncode == 0, result.stderr
    assert "warning: a file of a kept release changed" in result.stderr, result.stderr
    assert names and all(os.stat(outside / name).st_nlink == 1 for name in names), names
    full_deploy(versions[1], tmp_path / "full", "--read-only")
    assert tree(root) == tree(tmp_path / "full")
