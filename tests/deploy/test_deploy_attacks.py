"""Hostile archives: nothing is ever written outside the release.

Each attack targets a victim file outside the release. Every test first proves that its
archive really is hostile: an unprotected extractor (Python's tarfile with the
'fully_trusted' filter, or GNU tar for the two-step attack) does modify the victim. Then
droot deploys the same archive and the victim must be untouched."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.deploy.conftest import app_archive, current, deploy, hostile_tar, release_names

ORIGINAL = b"untouched\n"
EVIL = b"pwned\n"


def attack_tar(members) -> bytes:
    """A hostile tar with one harmless regular file first: deploy refuses an archive with
    no regular file at all, and an attack test must not pass for that reason."""
    return hostile_tar([("filler", "file", b"harmless\n"), *members])


@pytest.fixture
def victim(tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(ORIGINAL)
    return victim


def naive_extract(archive: bytes, tmp_path: Path):
    """What an unprotected extractor does with the archive (into a dir at the same depth
    as a release: tmp_path/naive/dest like tmp_path/app.releases/RELEASE)."""
    import io
    destination = tmp_path / "naive" / "dest"
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(destination, filter="fully_trusted")
        except OSError:
            pass


def prove_hostile(archive: bytes, tmp_path: Path, victim: Path):
    naive_extract(archive, tmp_path)
    assert victim.read_bytes() != ORIGINAL, "the attack archive does not attack: fix the test"
    victim.write_bytes(ORIGINAL)


def deploy_and_check(tmp_path: Path, victim: Path, archive: bytes) -> tuple:
    """Deploy over a good release; the victim and the good release stay as they were."""
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "good")).returncode == 0
    good = current(root)
    before = sorted(os.listdir(victim.parent))
    result = deploy(root, archive)
    assert victim.read_bytes() == ORIGINAL, "the archive wrote outside the release"
    assert sorted(os.listdir(victim.parent)) == before
    if result.returncode != 0:
        assert current(root) == good and (root / "MARKER").read_text() == "good"
        assert release_names(root) == [good]
        assert len(result.stderr.decode().strip().splitlines()) == 1
    return root, result


def test_dotdot_member(tmp_path, victim):
    archive = attack_tar([("../../outside/victim", "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    _, result = deploy_and_check(tmp_path, victim, archive)
    assert result.returncode == 1 and b"'..'" in result.stderr


def test_absolute_member_lands_inside_the_release(tmp_path, victim):
    archive = attack_tar([(str(victim), "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    root, result = deploy_and_check(tmp_path, victim, archive)
    assert result.returncode == 0, result.stderr
    assert (root / str(victim).lstrip("/")).read_bytes() == EVIL  # confined, as tar does


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlinked_directory_then_write_through_it(tmp_path, victim, target):
    link_target = str(victim.parent) if target == "absolute" else "../../outside"
    archive = attack_tar([("escape", "symlink", link_target),
                           ("escape/victim", "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    deploy_and_check(tmp_path, victim, archive)


def test_symlink_planted_at_a_file_name_then_written(tmp_path, victim):
    archive = attack_tar([("etc", "dir", None), ("etc/passwd", "symlink", str(victim)),
                           ("etc/passwd", "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    root, result = deploy_and_check(tmp_path, victim, archive)
    assert result.returncode == 0, result.stderr
    assert (root / "etc" / "passwd").read_bytes() == EVIL
    assert not (root / "etc" / "passwd").is_symlink()


def test_hardlink_to_a_file_outside(tmp_path, victim):
    archive = attack_tar([("grab", "hardlink", str(victim)), ("grab", "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    _, result = deploy_and_check(tmp_path, victim, archive)
    assert result.returncode == 1 and b"hard link target" in result.stderr


def test_hardlink_with_dotdot_to_a_file_outside(tmp_path, victim):
    archive = attack_tar([("grab", "hardlink", "../../outside/victim"),
                           ("grab", "file", EVIL)])
    prove_hostile(archive, tmp_path, victim)
    _, result = deploy_and_check(tmp_path, victim, archive)
    assert result.returncode == 1


@pytest.mark.parametrize("mode", ["symlink", "rsync"])
def test_two_step_symlink_attack_cve_2025_45582(tmp_path, victim, mode):
    """First archive plants `x -> outside`; a later one writes `x/victim`. GNU tar writes
    through the planted link when both are extracted into one directory."""
    first = attack_tar([("x", "symlink", str(victim.parent))])
    second = attack_tar([("x/victim", "file", EVIL)])
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    for archive in (first, second):
        subprocess.run(["tar", "-x", "-C", str(gnu), "-f", "-"], input=archive, check=True)
    assert victim.read_bytes() == EVIL, "GNU tar should fall for the two-step attack"
    victim.write_bytes(ORIGINAL)

    root = tmp_path / "app"
    assert deploy(root, first, "--mode", mode).returncode == 0
    result = deploy(root, second, "--mode", mode)
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == ORIGINAL
    assert (root / "x" / "victim").read_bytes() == EVIL and not (root / "x").is_symlink()


def test_device_nodes_are_skipped_unless_asked_for(tmp_path, victim):
    """A host disk's node in a release would be usable by anyone reaching the release."""
    archive = attack_tar([("disk", "blk", (7, 0)), ("null", "chr", (1, 3))])
    root = tmp_path / "app"
    result = deploy(root, archive)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(root / "disk") and not os.path.lexists(root / "null")
    # With --devices they are reproduced (as a root filesystem with /dev nodes needs).
    result = deploy(root, archive, "--devices")
    assert result.returncode == 0 and (root / "null").is_char_device()
