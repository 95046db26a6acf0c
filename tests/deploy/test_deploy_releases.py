"""droot deploy from stdin: exact reproduction of a root filesystem, releases with an atomic
switch, pruning by deploy order, rollback, releases, rm, rsync mode, the lock."""

import os
import select
import shutil
import tempfile
from pathlib import Path
import subprocess
import time

import pytest

from tests.conftest import DROOT, END, droot, make_busybox_root, member_bytes
from tests.deploy.conftest import (app_archive, compress, current, deploy, release_names,
                                   releases_dir, tar_of, tree)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_deploy_reproduces_a_root_filesystem_exactly(tmp_path, compression):
    source = make_busybox_root(tmp_path / "source")
    # What a real root has: setuid, a sticky dir, absolute and relative symlinks, hard
    # links, devices, a FIFO, owners, a file capability xattr, odd names.
    (source / "bin" / "su-like").write_bytes(b"#!/bin/sh\n")
    os.chown(source / "bin" / "su-like", 0, 50)
    os.chmod(source / "bin" / "su-like", 0o4755)
    (source / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (source / "usr" / "lib").mkdir(parents=True)
    (source / "lib").symlink_to("usr/lib")
    os.link(source / "bin" / "busybox", source / "bin" / "busybox-hardlink")
    os.mknod(source / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(source / "dev" / "loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.mkfifo(source / "tmp" / "fifo", 0o600)
    (source / "home" / "app" / "name with spaces and ünïcode").write_text("x")
    (source / "home" / "app" / ("long-" * 40)).write_text("long name")
    os.chown(source / "home" / "app" / ("long-" * 40), 1000, 1000)
    (source / "bin" / "pinger").write_bytes(b"\0" * 10)
    subprocess.run(["setcap", "cap_net_raw+ep", str(source / "bin" / "pinger")], check=True)
    os.utime(source / "etc", (1_600_000_000, 1_600_000_000))
    # A setgid directory holding a root:root file (Debian's /var/mail), read-only files.
    (source / "var" / "mail").mkdir(parents=True)
    os.chown(source / "var" / "mail", 0, 8)
    os.chmod(source / "var" / "mail", 0o2775)
    (source / "var" / "mail" / "root").write_text("mail")
    os.chown(source / "var" / "mail" / "root", 0, 0)
    # Made inside it, a directory and a symlink would inherit its group (and the
    # directory its setgid bit): theirs are root:root and 0755.
    (source / "var" / "mail" / "archive").mkdir()
    os.chown(source / "var" / "mail" / "archive", 0, 0)
    os.chmod(source / "var" / "mail" / "archive", 0o755)
    (source / "var" / "mail" / "inbox").symlink_to("root")
    os.chown(source / "var" / "mail" / "inbox", 0, 0, follow_symlinks=False)
    # A read-only directory with files in it, and a sticky one.
    (source / "usr" / "share" / "ro").mkdir(parents=True)
    (source / "usr" / "share" / "ro" / "data").write_text("d")
    os.chmod(source / "usr" / "share" / "ro", 0o555)
    os.chmod(source / "tmp", 0o1777)
    (source / "etc" / "shadow").write_text("root:*:1::::::\n")
    os.chmod(source / "etc" / "shadow", 0o000)
    (source / "etc" / "readonly").write_text("r")
    os.chmod(source / "etc" / "readonly", 0o444)

    root = tmp_path / "app"
    result = deploy(root, tar_of(source, compression), "--devices")
    assert result.returncode == 0, result.stderr
    assert root.is_symlink() and not os.path.isabs(os.readlink(root))
    assert tree(root.resolve()) == tree(source)
    deployed = root.resolve()
    assert os.stat(deployed / "bin" / "su-like").st_mode & 0o7777 == 0o4755
    assert os.stat(deployed / "bin" / "busybox").st_ino == \
        os.stat(deployed / "bin" / "busybox-hardlink").st_ino
    assert os.getxattr(deployed / "bin" / "pinger", "security.capability") == \
        os.getxattr(source / "bin" / "pinger", "security.capability")
    assert f" files, {compression}, sha256 " in result.stderr.decode()


@pytest.mark.parametrize("options", [(), ("--no-devices",)])
def test_device_nodes_are_skipped_by_default(tmp_path, options):
    source = make_busybox_root(tmp_path / "source")
    os.mknod(source / "dev" / "sda", 0o666 | 0o060000, os.makedev(8, 0))
    os.mkfifo(source / "dev" / "fifo")
    root = tmp_path / "app"
    result = deploy(root, tar_of(source), *options)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(root / "dev" / "sda")
    assert (root / "dev" / "fifo").exists()
    assert b"skipped 1 device node(s) (--devices creates them)" in result.stderr


@pytest.fixture
def open_tmp_path():
    """A temporary directory other users may enter (pytest's own are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="droot-test-open-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_only_root_reaches_the_releases(open_tmp_path):
    """A setuid-root program in a release (the image's, or one the app made) must not be
    runnable by the host's other users: ROOT.releases is 0700, and an older 0755 one is
    tightened by the next deploy."""
    source = make_busybox_root(open_tmp_path / "source")
    shutil.copy2("/usr/bin/id", source / "bin" / "suid-id")  # runs on the host, as is
    os.chmod(source / "bin" / "suid-id", 0o4755)
    root = open_tmp_path / "app"
    assert deploy(root, tar_of(source)).returncode == 0
    program = root / "bin" / "suid-id"
    assert program.stat().st_mode & 0o4000  # deployed exactly, setuid bit included

    def run_as_nobody():
        try:
            return subprocess.run(["id", "-u"], executable=program, user=65534, group=65534,
                                  extra_groups=[], capture_output=True, text=True).stdout
        except PermissionError:
            return "refused"
    assert (releases_dir(root).stat().st_mode & 0o777) == 0o700
    assert run_as_nobody() == "refused"
    # the control: a releases directory others may enter, as older deploys made it
    releases_dir(root).chmod(0o755)
    assert run_as_nobody() == "0\n"
    assert deploy(root, tar_of(source)).returncode == 0
    assert (releases_dir(root).stat().st_mode & 0o777) == 0o700
    assert run_as_nobody() == "refused"


def test_each_deploy_is_a_new_release_and_names_never_collide(tmp_path):
    root = tmp_path / "app"
    archive = app_archive(tmp_path, "same")
    for _ in range(3):  # three deploys of the same archive within a second or so
        assert deploy(root, archive, "--keep", "0").returncode == 0
    names = release_names(root)
    assert len(names) == 3 and len(set(names)) == 3
    assert [int(name.split("-")[0]) for name in names] == [1, 2, 3]
    assert current(root) == names[-1]
    assert (root / "MARKER").read_text() == "same"


def test_keep_prunes_by_deploy_order_not_mtime(tmp_path):
    root = tmp_path / "app"
    for n in range(4):
        assert deploy(root, app_archive(tmp_path, f"v{n}"), "--keep", "0").returncode == 0
    names = release_names(root)
    # Make the oldest release look the newest: pruning must not care.
    os.utime(releases_dir(root) / names[0], (time.time() + 3600,) * 2)
    result = deploy(root, app_archive(tmp_path, "v4"), "--keep", "2")
    assert result.returncode == 0, result.stderr
    remaining = release_names(root)
    assert remaining == sorted(remaining) and len(remaining) == 2
    assert remaining[0] == names[-1] and (root / "MARKER").read_text() == "v4"


def test_a_release_of_a_deep_tree_is_pruned(tmp_path):
    """A release holding 1,500 nested directories (an image may): pruning it was an
    internal error (RecursionError in shutil.rmtree) in every deploy that followed."""
    deep = "/".join(["d"] * 1500)
    archive = member_bytes(f"{deep}/f", b"1") + member_bytes("MARKER", b"x") + END
    root = tmp_path / "app"
    try:
        for _ in range(3):
            result = deploy(root, archive, "--keep", "1")
            assert result.returncode == 0, result.stderr
        assert "pruned 1 old release" in result.stderr.decode()
        assert len(release_names(root)) == 2
    finally:  # pytest's clean-up is shutil.rmtree too
        subprocess.run(["rm", "-rf", releases_dir(root)], check=True)


def test_keep_never_prunes_the_current_the_previous_or_one_in_use(tmp_path):
    root = tmp_path / "app"
    for n in range(3):
        assert deploy(root, app_archive(tmp_path, f"v{n}"), "--keep", "0").returncode == 0
    first, second, third = release_names(root)
    # A process chrooted into the first release, as `droot run` leaves its app.
    sleeper = subprocess.Popen(["chroot", str(releases_dir(root) / first), "/bin/sleep", "600"])
    try:
        result = deploy(root, app_archive(tmp_path, "v3"), "--keep", "1")
        assert result.returncode == 0, result.stderr
        names = release_names(root)
        assert first in names, "a release in use was pruned"
        assert f"in use by pid {sleeper.pid}" in result.stderr.decode()
        assert third in names, "the previous release (the rollback target) was pruned"
        assert second not in names
        assert current(root) == names[-1] and len(names) == 3
    finally:
        sleeper.kill()
        sleeper.wait()
    result = deploy(root, app_archive(tmp_path, "v4"), "--keep", "1")
    assert result.returncode == 0
    assert first not in release_names(root)  # no longer in use: pruned now


def test_a_release_bind_mounted_elsewhere_counts_as_in_use(tmp_path):
    root = tmp_path / "app"
    for n in range(3):
        assert deploy(root, app_archive(tmp_path, f"v{n}"), "--keep", "0").returncode == 0
    first = release_names(root)[0]
    mount_point = tmp_path / "elsewhere"
    mount_point.mkdir()
    # In a mount namespace of its own, as a run with private mounts has it.
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount --bind {releases_dir(root) / first / 'etc'} "
                               f"{mount_point} && exec sleep 600"])
    try:
        time.sleep(0.5)
        assert holder.poll() is None
        result = deploy(root, app_archive(tmp_path, "v3"), "--keep", "1")
        assert result.returncode == 0, result.stderr
        assert first in release_names(root)
    finally:
        holder.kill()
        holder.wait()


def test_rollback_releases_and_rm(tmp_path):
    root = tmp_path / "app"
    for n in range(2):
        assert deploy(root, app_archive(tmp_path, f"v{n}")).returncode == 0
    first, second = release_names(root)
    listing = droot("releases", "--root", root)
    assert listing.stdout.splitlines() == [f"  {first}", f"* {second}"]
    result = droot("rollback", "--root", root)
    assert result.returncode == 0 and (root / "MARKER").read_text() == "v0"
    assert droot("releases", "--root", root).stdout.splitlines() == [f"* {first}", f"  {second}"]
    result = droot("rollback", "--root", root)
    assert result.returncode == 1 and "no release older" in result.stderr
    assert droot("rollback", "--root", root, "--to", second[:6]).returncode == 0
    assert (root / "MARKER").read_text() == "v1"

    sleeper = subprocess.Popen(["chroot", str(root), "/bin/sleep", "600"])
    try:
        result = droot("rm", "--root", root)
        assert result.returncode == 1 and f"in use by pid {sleeper.pid}" in result.stderr
        assert (root / "MARKER").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert droot("rm", "--root", root).returncode == 0
    assert not os.path.lexists(root) and not releases_dir(root).exists()


def test_rollback_of_a_root_never_deployed_creates_nothing(tmp_path):
    result = droot("rollback", "--root", tmp_path / "app")
    assert result.returncode == 1 and "nothing to roll back" in result.stderr
    assert os.listdir(tmp_path) == []


def test_rm_refuses_a_directory_droot_did_not_deploy(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    result = droot("rm", "--root", precious)
    assert result.returncode == 1 and "not deployed by droot" in result.stderr
    assert (precious / "data").read_text() == "keep me"
    result = droot("rm", "--root", "/")
    assert result.returncode == 1 and "refusing" in result.stderr


def test_symlink_mode_refuses_a_real_directory(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    (root / "old").write_text("legacy")
    result = deploy(root, app_archive(tmp_path, "v0"))
    assert result.returncode == 1
    assert b"real directory" in result.stderr and b"--mode rsync" in result.stderr
    assert (root / "old").read_text() == "legacy"


def test_rsync_mode_syncs_in_place(tmp_path):
    root = tmp_path / "app"
    source = make_busybox_root(tmp_path / "source")
    (source / "MARKER").write_text("v0")
    (source / "gone-later").write_text("x")
    os.link(source / "MARKER", source / "MARKER-link")
    os.chown(source / "MARKER", 1000, 50)
    assert deploy(root, tar_of(source), "--mode", "rsync").returncode == 0
    assert root.is_dir() and not root.is_symlink()
    assert tree(root) == tree(source)
    (source / "gone-later").unlink()
    (source / "MARKER").write_text("v1")
    result = deploy(root, tar_of(source), "--mode", "rsync")
    assert result.returncode == 0, result.stderr
    assert tree(root) == tree(source)
    assert os.stat(root / "MARKER").st_ino == os.stat(root / "MARKER-link").st_ino
    assert sorted(os.listdir(releases_dir(root))) == [".deployed", ".lock"]  # no release
    result = deploy(tmp_path / "app", app_archive(tmp_path, "v2"))  # symlink mode now
    assert result.returncode == 1 and b"real directory" in result.stderr
    assert droot("rm", "--root", root).returncode == 0 and not root.exists()


def test_concurrent_deploys_are_serialised(tmp_path):
    root = tmp_path / "app"
    archives = [app_archive(tmp_path, f"v{n}", extra_files=300) for n in range(2)]
    command = [DROOT, "deploy", "--root", str(root), "--keep", "0"]
    first = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        # The first deploy holds the lock while it waits for the rest of its archive
        # (its staging directory shows it is in); a second deploy must wait for it.
        first.stdin.write(archives[0][:len(archives[0]) // 2])
        first.stdin.flush()
        deadline = time.monotonic() + 60
        while not (releases_dir(root).is_dir() and any(
                name.startswith(".tmp-") for name in os.listdir(releases_dir(root)))):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        # (Without a lock it would say nothing: it would sit waiting for its archive.)
        assert select.select([second.stderr], [], [], 30)[0], "the second deploy went ahead"
        assert b"waiting for another deploy" in second.stderr.readline()
        assert release_names(root) == []  # nothing switched while the first one runs
        first_stderr = first.communicate(archives[0][len(archives[0]) // 2:], timeout=120)[1]
        second_stderr = second.communicate(archives[1], timeout=120)[1]
    finally:
        for process in (first, second):
            if process and process.poll() is None:
                process.kill()
                process.wait()
    assert [first.returncode, second.returncode] == [0, 0], (first_stderr, second_stderr)
    names = release_names(root)
    assert len(names) == 2
    for name in names:  # each release is one archive, whole
        marker = (releases_dir(root) / name / "MARKER").read_text()
        assert len(os.listdir(releases_dir(root) / name / "data")) == 300
        assert (releases_dir(root) / name / "data" / "f7").read_text().startswith(marker)


def test_lock_timeout_fails_clearly(tmp_path):
    import fcntl
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "v0")).returncode == 0
    with open(releases_dir(root) / ".lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = deploy(root, app_archive(tmp_path, "v1"), "--lock-timeout", "0.3")
    assert result.returncode == 1 and b"is locked by another deploy" in result.stderr
    assert (root / "MARKER").read_text() == "v0"


def test_bad_input_is_one_line(tmp_path):
    root = tmp_path / "app"
    for archive, message in ((b"", b"truncated"), (b"not a tar archive at all" * 40, b"tar"),
                             (compress(b"x" * 10, "gzip"), b"truncated")):
        result = deploy(root, archive)
        assert result.returncode == 1
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("droot: ") and message in result.stderr
        assert not os.path.lexists(root)
    assert droot("deploy", "--root", root, "--keep", "x").returncode == 2


def test_deploy_as_non_root_is_refused_clearly(tmp_path):
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             DROOT, "deploy", "--root", str(tmp_path / "app")],
                            input=app_archive(tmp_path, "v0"), capture_output=True)
    assert result.returncode == 1 and b"deploy needs root" in result.stderr
    assert not os.path.lexists(tmp_path / "app")


def test_releases_of_an_rsync_mode_root(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "v0"), "--mode", "rsync").returncode == 0
    listing = droot("releases", "--root", root)
    assert listing.returncode == 0
    assert listing.stdout == f"* {root} (a real directory: rsync mode)\n"
    result = droot("releases", "--root", tmp_path / "never-deployed")
    assert result.returncode == 1 and "no releases" in result.stderr


# --- release management through symlinks: refuse what droot did not make --------------------

def one_line_refusal(result, *words):
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("droot: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    for word in words:
        assert word in stderr, stderr


def decoy(directory, name="decoy"):
    """A directory of precious data outside any release (with a release-shaped entry)."""
    path = directory / name
    (path / "000001-20200101T000000.000000Z-aaaaaaaaaaaa").mkdir(parents=True)
    (path / "data").write_text("precious")
    return path


def snapshot(directory) -> dict:
    return {str(path.relative_to(directory)): path.is_dir() or path.read_text()
            for path in sorted(directory.rglob("*"))}


def test_a_symlinked_releases_directory_is_refused_by_every_command(tmp_path):
    root = tmp_path / "app"
    for n in range(2):
        assert deploy(root, app_archive(tmp_path, f"v{n}")).returncode == 0
    target = decoy(tmp_path)
    before = snapshot(target)
    # The control: what rm used to do, walking ROOT.releases by path, empties the decoy.
    control = decoy(tmp_path, "control")
    link = tmp_path / "control-link"
    link.symlink_to(control)
    import shutil
    for name in os.listdir(link):
        entry = link / name
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    assert os.listdir(control) == [], "the naive walk did not go through the symlink"

    real = tmp_path / "app.releases.real"
    os.rename(releases_dir(root), real)
    releases_dir(root).symlink_to(target)
    for command in (["rm"], ["rollback"], ["rollback", "--to", "000001"], ["releases"]):
        one_line_refusal(droot(*command, "--root", root),
                         f"{releases_dir(root)} is a symlink to {target}", "refusing")
    one_line_refusal(deploy(root, app_archive(tmp_path, "v2"), "--keep", "1"),
                     "is a symlink to", "refusing")
    assert snapshot(target) == before
    assert releases_dir(root).is_symlink() and os.readlink(root).startswith("app.releases/")
    # It can succeed: with the real directory back, rm removes it all.
    releases_dir(root).unlink()
    os.rename(real, releases_dir(root))
    assert droot("rm", "--root", root).returncode == 0
    assert not os.path.lexists(root) and not os.path.lexists(releases_dir(root))
    assert snapshot(target) == before


def test_rollback_refuses_a_release_entry_that_is_a_symlink(tmp_path):
    root = tmp_path / "app"
    for n in range(2):
        assert deploy(root, app_archive(tmp_path, f"v{n}"), "--keep", "0").returncode == 0
    first, second = release_names(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "MARKER").write_text("not a release")
    planted = releases_dir(root) / "000009-20200101T000000.000000Z-bbbbbbbbbbbb"
    planted.symlink_to(elsewhere)
    # The control: the check by path that rollback relied on takes it for a release.
    assert planted.is_dir()
    one_line_refusal(droot("rollback", "--root", root, "--to", "000009"),
                     f"{planted} is a symlink to {elsewhere}", "not a release droot made")
    assert current(root) == second and (root / "MARKER").read_text() == "v1"
    listing = droot("releases", "--root", root).stdout.splitlines()
    assert listing == [f"  {first}", f"* {second}",
                       f"! {planted.name} (not a directory: not a release droot made)"]
    # As the previous release (the current one deployed after it), it is refused too.
    planted.unlink()
    planted = releases_dir(root) / "000001-20200101T000000.000000Z-cccccccccccc"
    os.rename(releases_dir(root) / first, tmp_path / "moved-away")
    planted.symlink_to(elsewhere)
    one_line_refusal(droot("rollback", "--root", root), "is a symlink to", "refusing")
    assert current(root) == second
    # It can succeed: a real release is switched to.
    planted.unlink()
    os.rename(tmp_path / "moved-away", releases_dir(root) / first)
    assert droot("rollback", "--root", root, "--to", first[:6]).returncode == 0
    assert (root / "MARKER").read_text() == "v0"


def test_pruning_never_follows_or_removes_a_symlinked_entry(tmp_path):
    root = tmp_path / "app"
    target = decoy(tmp_path)
    before = snapshot(target)
    assert deploy(root, app_archive(tmp_path, "v0")).returncode == 0
    planted = releases_dir(root) / "000000-20200101T000000.000000Z-dddddddddddd"
    planted.symlink_to(target)  # the oldest "release": the first one pruning would take
    for n in range(1, 4):
        result = deploy(root, app_archive(tmp_path, f"v{n}"), "--keep", "1")
        assert result.returncode == 0, result.stderr
        assert f"ignoring {planted}: a symlink to {target}" in result.stderr.decode()
    assert planted.is_symlink() and snapshot(target) == before
    names = release_names(root)
    assert len(names) == 3 and names[0] == planted.name  # the current and the previous
    # rm refuses while it is there, and removes nothing.
    one_line_refusal(droot("rm", "--root", root), f"{planted} is a symlink to {target}",
                     f"refusing to remove {root}")
    assert release_names(root) == names and (root / "MARKER").read_text() == "v3"
    planted.unlink()
    assert droot("rm", "--root", root).returncode == 0 and snapshot(target) == before


def test_rm_refuses_anything_in_the_releases_directory_droot_did_not_make(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "v0")).returncode == 0
    notes = releases_dir(root) / "operator-notes"
    notes.write_text("keep me")
    one_line_refusal(droot("rm", "--root", root), f"{notes} is a regular file",
                     "not something droot made")
    assert notes.read_text() == "keep me" and (root / "MARKER").read_text() == "v0"
    notes.unlink()
    assert droot("rm", "--root", root).returncode == 0


def test_a_releases_directory_others_can_write_is_refused(tmp_path):
    root = tmp_path / "app"
    assert deploy(root, app_archive(tmp_path, "v0")).returncode == 0
    os.chmod(releases_dir(root), 0o777)
    one_line_refusal(deploy(root, app_archive(tmp_path, "v1")), "writable by group or others")
    one_line_refusal(droot("rm", "--root", root), "writable by group or others")
    assert (root / "MARKER").read_text() == "v0"
    os.chown(releases_dir(root), 65534, 65534)
    os.chmod(releases_dir(root), 0o755)
    one_line_refusal(droot("rollback", "--root", root), "owned by uid 65534")
    os.chown(releases_dir(root), 0, 0)
    assert deploy(root, app_archive(tmp_path, "v1")).returncode == 0
