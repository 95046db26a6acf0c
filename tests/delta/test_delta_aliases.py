"""A hostile delta manifest names a file twice: once by its path, once through a
symlink it planted (`e -> .`, then `e/b`). Whatever droot trusts per path (the
`.content` record, a repeated content's first file, a directory's deferred time) must
not be fooled by the second name."""

import os
from pathlib import Path

import pytest

from tests.conftest import droot
from tests.delta.hostile import (content, digest, directory, file, push_members,  # noqa: F401
                                 symlink)


def pull(store: Path, name: str, root: Path, *options) -> Path:
    result = droot("pull", store / name, "--root", root, *options)
    assert result.returncode == 0, result.stderr
    return Path(os.path.realpath(root))


@pytest.mark.parametrize("options", [(), ("--read-only",)])
def test_record_is_not_poisoned_through_a_symlinked_path(push_members, tmp_path, options):
    """Release 1 (hostile) holds `b` as D, then rewrites it as Y through `e/b`; its record
    must not say `b` is D, or release 2 (benign: `b` is D) gets Y without a read."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    d, y = content(b"D"), content(b"Y")
    push_members([file("b", d), symlink("e", "."), file("e/b", y)], store / "hostile")
    push_members([file("b", d), file("other", content(b"o"))], store / "benign")
    hostile = pull(store, "hostile", root, *options)
    assert (hostile / "b").read_bytes() == y  # the hostile release holds what it said last
    benign = pull(store, "benign", root, *options)
    assert digest((benign / "b").read_bytes()) == digest(d), \
        "the benign release's b does not hold the content its manifest names"


def test_a_repeated_content_is_not_linked_from_a_file_replaced_by_another_name(
        push_members, tmp_path):
    """`d/a` holds D, `e -> d`, `e/a` replaces it with Y (same size, mode, owner, time),
    then `b` holds D: copied or linked from `d/a`, it would hold Y."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    d, y = content(b"D"), content(b"Y")
    push_members([file("d/a", d), symlink("e", "d"), file("e/a", y), file("b", d)],
                 store / "hostile")
    release = pull(store, "hostile", root, "--read-only")
    assert (release / "d" / "a").read_bytes() == y
    assert (release / "b").read_bytes() == d


def test_a_directory_time_does_not_land_on_a_linked_file(push_members, tmp_path):
    """A read-only release K holds `e/d`. The next (hostile) one has a directory `d`, then
    `e -> .` and `e/d`, K's file: linked at `d` in place of the directory. Its time, set
    last for directories, must not be set on K's file (the same inode)."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    d = content(b"D")
    push_members([directory("e"), file("e/d", d)], store / "kept")
    push_members([directory("d", mtime=1_000_000_000), symlink("e", "."), file("e/d", d)],
                 store / "hostile")
    kept = pull(store, "kept", root, "--read-only")
    before = os.stat(kept / "e" / "d")
    pull(store, "hostile", root, "--read-only")
    after = os.stat(kept / "e" / "d")
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


@pytest.mark.parametrize("options", [(), ("--read-only",)])
def test_a_repeated_content_whose_first_file_went_with_its_directory_is_an_archive_error(
        push_members, tmp_path, options):
    """`d/a` holds D, then a file `d` replaces the directory (and `d/a` with it), then `b`
    holds D: planned as a copy of `d/a`, which the release itself removed. That is the
    archive's doing, not a change on this host: one error naming it, with no warning that
    a kept release changed and no second download."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    d = content(b"D")
    push_members([file("d/a", d), file("d", content(b"x")), file("b", d)], store / "hostile")
    result = droot("pull", store / "hostile", "--root", root, *options)
    assert "kept release changed" not in result.stderr, result.stderr
    assert "pulling again" not in result.stderr, result.stderr
    if result.returncode == 0:  # or downloaded: either way, b holds what the manifest says
        assert (Path(os.path.realpath(root)) / "b").read_bytes() == d
    else:
        assert result.stderr.count("\n") == 1 and "/b" in result.stderr, result.stderr


def test_the_record_does_not_claim_a_linked_file_that_went_with_its_directory(
        push_members, tmp_path):
    """Read-only releases: K holds `d/a` (D). The next one links `d/a` from K, then a file
    `d` replaces the directory, and `d/a` with it; its record must not claim `d/a`, or the
    pull after it (`d/a` D again) plans from that claim, finds nothing, warns that a kept
    release changed and starts once more."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    d = content(b"D")
    push_members([file("d/a", d)], store / "kept")
    push_members([file("d/a", d), file("d", content(b"x"))], store / "hostile")
    push_members([file("d/a", d), file("other", content(b"o"))], store / "benign")
    pull(store, "kept", root, "--read-only")
    pull(store, "hostile", root, "--read-only")
    result = droot("pull", store / "benign", "--root", root, "--read-only")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    assert (Path(os.path.realpath(root)) / "d" / "a").read_bytes() == d
