"""Delta releases end to end: `droot push --delta` to a path store and to a real S3 server
(moto over HTTP), `droot pull` of the manifest reusing what the host already holds, and the
tree it makes compared, entry by entry, with a full deploy of the same image."""

import os
import re
import signal
import stat
import subprocess
import time

import pytest
from pathlib import Path

from tests.conftest import (DROOT, OpenWatch, docker_build, droot, make_busybox_root,
                            small_tmpfs)
from tests.deploy.conftest import leftovers
from tests.delta.hostile import file, push_members  # noqa: F401
from tests.delta.conftest import MIB, full_deploy, push, random_file, s3_size, summary, tree


def test_v2_reuses_local_content_and_equals_a_full_deploy(versions, store, tmp_path):
    v1, v2, changed, kept = versions
    push(v1, f"{store}/v1")
    pushed = push(v2, f"{store}/v2")
    # Only v2's new contents went up: changes.bin, new.bin and the changed .droot.json.
    new_files, _, new_bytes = map(int, re.search(r"(\d+) of (\d+) files new \((\d+) of",
                                                 pushed).groups())
    assert new_files == 3 and changed <= new_bytes < changed + 4096, pushed

    root = tmp_path / "app"
    first = droot("pull", f"{store}/v1", "--root", root)
    assert first.returncode == 0, first.stderr
    assert summary(first.stderr)[0] == 0  # nothing here yet
    second = droot("pull", f"{store}/v2", "--root", root)
    assert second.returncode == 0, second.stderr
    reused_files, reused_bytes, downloaded, requests = summary(second.stderr)
    assert reused_bytes >= len(kept["srv/keep.bin"]) + os.path.getsize(root / "bin/busybox")
    manifest = (Path(store) / "v2").stat().st_size if not store.startswith("s3://") else \
        s3_size(store, "v2")
    assert downloaded <= 2 * changed + manifest, (downloaded, changed, manifest)
    # the manifest, its sidecar, one ranged GET for the adjacent new frames
    assert requests <= 3

    full = tmp_path / "full"
    full_deploy(v2, full)
    assert tree(root) == tree(full)
    assert not (root / "srv" / "gone.bin").exists()
    assert (root / "srv" / "tool").stat().st_mode & 0o7777 == 0o750


def test_first_delta_pull_equals_a_full_deploy(versions, tmp_path):
    v1, _, _, _ = versions
    (tmp_path / "store").mkdir()
    push(v1, tmp_path / "store" / "v1")
    result = droot("pull", tmp_path / "store" / "v1", "--root", tmp_path / "app")
    assert result.returncode == 0, result.stderr
    full_deploy(v1, tmp_path / "full")
    assert tree(tmp_path / "app") == tree(tmp_path / "full")


def v1_pulled(versions, tmp_path):
    """A path store holding v1, and a root running it: (store, root)."""
    store = tmp_path / "store"
    store.mkdir()
    push(versions[0], store / "v1")
    root = tmp_path / "app"
    assert droot("pull", store / "v1", "--root", root).returncode == 0
    return store, root


def both_pushed_v1_pulled(versions, tmp_path):
    """A path store holding v1 and v2, and a root running v1: (store, root)."""
    store, root = v1_pulled(versions, tmp_path)
    push(versions[1], store / "v2")
    return store, root


def test_a_file_changed_in_the_current_release_is_downloaded(versions, tmp_path):
    kept = versions[3]
    store, root = both_pushed_v1_pulled(versions, tmp_path)
    (root / "srv" / "keep.bin").write_bytes(b"written by the app")  # an app at work
    result = droot("pull", store / "v2", "--root", root)
    assert result.returncode == 0, result.stderr
    assert (root / "srv" / "keep.bin").read_bytes() == kept["srv/keep.bin"]
    assert summary(result.stderr)[2] > len(kept["srv/keep.bin"]) // 2  # fetched, not reused


def test_rollback_target_unchanged_when_the_app_writes_reused_files(versions, tmp_path):
    kept = versions[3]
    store, root = both_pushed_v1_pulled(versions, tmp_path)
    first = os.readlink(root)
    result = droot("pull", store / "v2", "--root", root)
    assert summary(result.stderr)[1] >= len(kept["srv/keep.bin"])  # keep.bin was reused
    with open(root / "srv" / "keep.bin", "r+b") as app_file:  # a root app writes in place
        app_file.write(b"X" * 4096)
    os.chmod(root / "srv" / "keep.bin", 0o600)
    old = root.parent / first
    assert (old / "srv" / "keep.bin").read_bytes() == kept["srv/keep.bin"]
    assert (old / "srv" / "keep.bin").stat().st_mode & 0o777 != 0o600
    assert droot("rollback", "--root", root).returncode == 0
    assert (root / "srv" / "keep.bin").read_bytes() == kept["srv/keep.bin"]


def test_a_fifo_or_device_at_a_reused_path_is_never_opened(versions, tmp_path):
    """An app made a FIFO and a character device node in its release where v2 has regular
    files: the pull looks at them without opening them (an open can act: a watchdog arms,
    a tape rewinds), and downloads those files."""
    kept = versions[3]
    store, root = both_pushed_v1_pulled(versions, tmp_path)
    busybox = (root / "bin" / "busybox").read_bytes()
    release = Path(os.path.realpath(root))  # v1's: still there after the pull
    fifo, device = release / "srv" / "keep.bin", release / "bin" / "busybox"
    fifo.unlink()
    os.mkfifo(fifo)
    device.unlink()
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    watch = OpenWatch([fifo, device])
    try:
        result = droot("pull", store / "v2", "--root", root)
        assert result.returncode == 0, result.stderr
        assert watch.opened() == set()
        assert (root / "srv" / "keep.bin").read_bytes() == kept["srv/keep.bin"]
        assert (root / "bin" / "busybox").read_bytes() == busybox
        assert summary(result.stderr)[2] > len(kept["srv/keep.bin"]) // 2  # downloaded
        # The control: the watch does see an open of either node.
        for node in (fifo, device):
            os.close(os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
        assert watch.opened() == {fifo, device}
    finally:
        watch.close()


def _corrupt(path: Path, offset: int):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("what", ["pack", "manifest"])
def test_a_corrupt_store_is_refused_and_the_release_kept(versions, tmp_path, what):
    store, root = v1_pulled(versions, tmp_path)
    before_packs = set((store / ".droot-delta" / "packs").iterdir())
    push(versions[1], store / "v2")
    if what == "pack":
        (pack,) = [p for p in (store / ".droot-delta" / "packs").iterdir()
                   if p not in before_packs and p.suffix == ".pack"]
        _corrupt(pack, pack.stat().st_size // 2)
    else:
        _corrupt(store / "v2", 100)
    current, contents = os.readlink(root), tree(root)
    result = droot("pull", store / "v2", "--root", root)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("droot: "), result.stderr
    assert ("does not hold the content" in lines[0] or "corrupt" in lines[0]
            if what == "pack" else "checksum mismatch" in lines[0]), lines[0]
    assert os.readlink(root) == current and tree(root) == contents
    assert leftovers(root) == []


def test_a_killed_pull_leaves_the_release_as_it_was(versions, docker_client, tmp_path):
    store, root = v1_pulled(versions, tmp_path)
    current, contents = os.readlink(root), tree(root)
    # v3: 40 MiB of new content, so the pull is still writing when it is killed
    context = tmp_path / "v3"
    rootfs = make_busybox_root(context / "rootfs")
    random_file(rootfs / "srv" / "big.bin", 40 * MIB)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    tag = f"droot-test-delta/v3:{os.getpid()}"
    docker_build(docker_client, context, tag)
    try:
        push(tag, store / "v3")
    finally:
        docker_client.images.remove(tag, force=True)
    process = subprocess.Popen([DROOT, "pull", store / "v3", "--root", root],
                               stderr=subprocess.PIPE)
    releases = Path(f"{root}.releases")
    deadline = time.monotonic() + 60
    while not any(name.startswith(".tmp-") for name in os.listdir(releases)):
        assert process.poll() is None and time.monotonic() < deadline, "pull ended first"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert os.readlink(root) == current and tree(root) == contents
    # the next pull clears what the killed one left, and succeeds
    result = droot("pull", store / "v3", "--root", root)
    assert result.returncode == 0, result.stderr
    assert leftovers(root) == []
    assert (root / "srv" / "big.bin").stat().st_size == 40 * MIB


def test_deploy_of_a_manifest_says_to_pull_it(versions, tmp_path):
    """`aws s3 cp s3://b/apps/v2 - | droot deploy --root R` of a delta release: one line
    naming what it is and the pull that deploys it; the release (or the absence of one)
    stays as it was."""
    store, root = v1_pulled(versions, tmp_path)
    push(versions[1], store / "v2")
    manifest = (store / "v2").read_bytes()
    current, contents = os.readlink(root), tree(root)
    fresh = tmp_path / "fresh" / "app"
    for target in (root, fresh):
        result = droot("deploy", "--root", target, input=manifest, text=False)  # a pipe
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 1, lines  # as for any other input that is no archive
        assert len(lines) == 1 and lines[0].startswith("droot: this is a delta release's "
                                                       "manifest"), lines
        assert f"'droot pull STORE/NAME --root {target}'" in lines[0], lines
    assert os.readlink(root) == current and tree(root) == contents
    assert leftovers(root) == []
    assert not (tmp_path / "fresh").exists()


def test_scratch_space_in_memory_or_out_of_room(versions, tmp_path):
    """A pull keeps its manifest and its tables of every member in scratch files, in
    $TMPDIR (droot.core.scratch). Where none can be made, it pulls with them in memory;
    where the room runs out while the manifest is kept, one line says where and what to
    do, and the release stays as it was."""
    store, root = both_pushed_v1_pulled(versions, tmp_path)
    current, contents = os.readlink(root), tree(root)
    with small_tmpfs(tmp_path / "small", "64k") as small:
        (small / "filler").write_bytes(b"x" * (64 << 10))  # full
        pull_without_room(store / "v2", root, small)
    assert os.readlink(root) == current and tree(root) == contents
    result = droot("pull", store / "v2", "--root", root,
                   env={**os.environ, "TMPDIR": str(tmp_path / "missing")})
    assert result.returncode == 0, result.stderr
    full_deploy(versions[1], tmp_path / "full")
    assert tree(root) == tree(tmp_path / "full")


def test_a_manifest_the_room_holds_only_part_of_is_one_clear_error(push_members, tmp_path):
    """Room for the manifest's first bytes but not for all of it: the write into the
    scratch file is short (not an error until the next write), and the manifest must not
    be taken as downloaded whole when it was cut short, to fail its checksum as a
    "corrupt download"."""
    store, root = tmp_path / "store", tmp_path / "app"
    store.mkdir()
    push_members([file(f"f{n}", os.urandom(64)) for n in range(1000)], store / "big")
    manifest_size = (store / "big").stat().st_size
    assert manifest_size > 3 * 4096
    with small_tmpfs(tmp_path / "small", "1m") as small:
        room = 4096 * (manifest_size // 8192)  # about half of it, in whole pages
        (small / "filler").write_bytes(b"x" * ((1 << 20) - room))
        pull_without_room(store / "big", root, small)
    assert not root.exists()


def pull_without_room(source: Path, root: Path, scratch: Path):
    """A pull from `source` with TMPDIR `scratch`, which has no room for the manifest: it
    fails with one line that says where, and what to do."""
    result = droot("pull", source, "--root", root, env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 1
    assert result.stderr == (f"droot: no room for the delta release's manifest in {scratch} "
                             "(No space left on device): set TMPDIR to a directory with "
                             "room\n")
