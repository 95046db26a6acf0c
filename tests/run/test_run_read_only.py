"""`droot run --read-only`, `--tmpfs`, and releases deployed with `--read-only`, which
every run keeps unchanged (their files may be hard links shared with other releases):
the read-only mount, and Landlock as the second layer on its own."""

import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import droot, make_busybox_root
from tests.run.conftest import host_mounts_below

WRITES = ("for f in /etc/passwd /new /tmp/x; do (echo x > $f) 2>&1; done; "
          "(touch /bin/busybox; chmod 777 /etc/group; mkdir /d) 2>&1; echo done")


def sh(root, script, *options):
    return droot("run", "--root", root, *options, "--", "/bin/sh", "-c", script)


def snapshot(root) -> dict:
    """Every entry of `root`: mode, owner, size, mtime, ctime (a write changes ctime)."""
    found = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            info = os.lstat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (info.st_mode, info.st_uid, info.st_size,
                                                   info.st_mtime_ns, info.st_ctime_ns)
    return found


def test_read_only_root_refuses_every_write_but_tmpfs_and_binds(busybox_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (busybox_root / "run").mkdir()
    (busybox_root / "data").mkdir()  # targets are made before the root is read-only
    before = snapshot(busybox_root)
    result = sh(busybox_root, WRITES + "; echo kept > /run/pid && cat /run/pid && "
                "echo there > /data/f && stat -c %a /run", "--read-only", "--tmpfs", "/run",
                "-b", f"{data}:/data")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum("Read-only file system" in line for line in lines) == 6, lines
    assert lines[-3:] == ["done", "kept", "1777"], lines
    assert (data / "f").read_text() == "there\n"
    assert snapshot(busybox_root) == before
    assert host_mounts_below(busybox_root) == []


def test_tmpfs_target_is_made_inside_the_root_and_writable(busybox_root):
    result = sh(busybox_root, "echo a > /var/cache/app/f && cat /var/cache/app/f && "
                "grep ' /var/cache/app ' /proc/self/mountinfo", "--tmpfs", "/var/cache/app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a\n") and "tmpfs" in result.stdout
    assert "nosuid,nodev" in result.stdout
    assert (busybox_root / "var" / "cache" / "app").is_dir()
    assert not (busybox_root / "var" / "cache" / "app" / "f").exists()  # it was the tmpfs


@pytest.mark.parametrize("target", ["tmp", "/", "", "/.", "//", "/up/.."])
def test_a_bad_tmpfs_target_is_one_line(busybox_root, target):
    result = droot("run", "--root", busybox_root, f"--tmpfs={target}", "--", "/bin/true")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "--tmpfs" in result.stderr, \
        result.stderr


def test_a_tmpfs_target_the_image_links_to_the_root_is_refused(busybox_root):
    (busybox_root / "var").mkdir()
    (busybox_root / "var" / "run").symlink_to("/")
    result = droot("run", "--root", busybox_root, "--tmpfs", "/var/run", "--", "/bin/true")
    assert result.returncode == 125
    assert result.stderr == ("droot: --tmpfs /var/run is the root itself inside (a symbolic "
                             "link to /?): a tmpfs there would be out of the app's sight\n")


@pytest.fixture
def read_only_release(tmp_path):
    """A busybox image deployed with --read-only (nested: a second root at /nested),
    and the release directory."""
    source = make_busybox_root(tmp_path / "image")
    make_busybox_root(source / "nested")
    (source / "srv").mkdir()
    (source / "srv" / "state").write_text("deployed\n")
    with tarfile.open(tmp_path / "image.tar", "w") as archive:
        archive.add(source, arcname=".")
    root = tmp_path / "app"
    with open(tmp_path / "image.tar", "rb") as stream:
        result = droot("deploy", "--root", root, "--read-only", stdin=stream)
    assert result.returncode == 0, result.stderr
    release = os.path.realpath(root)
    assert os.getxattr(release, "trusted.droot.read-only") == b"1"
    listed = droot("releases", "--root", root)
    assert listed.stdout == f"* {os.path.basename(release)} (read-only)\n", listed
    return root, release


def test_a_read_only_release_runs_read_only_without_the_option(read_only_release, tmp_path):
    root, release = read_only_release
    before = snapshot(release)
    for where in (root, f"{release}/nested"):  # the release, and a root inside it
        result = sh(where, WRITES)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("Read-only file system") == 6, result.stdout
    # Bound into another, writable root, its files stay read-only too.
    other = make_busybox_root(tmp_path / "other")
    result = sh(other, "(echo x > /srv/state) 2>&1; cat /srv/state", "-b", f"{release}/srv:/srv")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/bin/sh: can't create /srv/state: Read-only file system\ndeployed\n"
    assert snapshot(release) == before


def test_landlock_alone_keeps_a_read_only_root(busybox_root, tmp_path):
    """The second layer by itself: on a mount that is writable, Landlock's rules for a
    read-only root deny writes beneath it (EACCES, not EROFS) and allow them beneath the
    places made writable."""
    (busybox_root / "w").mkdir()
    script = f"""
import os, sys
sys.path[:0] = {sys.path!r}
from droot.run import confinement
os.chroot({str(busybox_root)!r})
writable = os.open("/w", os.O_PATH)
if confinement.confine_to_root(0, [writable]) < 1:
    sys.exit(77)
for path in ("/etc/passwd", "/new"):
    try:
        open(path, "a").close()
        print("written", path)
    except OSError as error:
        print(os.strerror(error.errno))
open("/w/new", "w").write("ok")
print(open("/etc/group").read().split(":")[0])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if result.returncode == 77:
        pytest.skip("this kernel has no Landlock")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Permission denied", "Permission denied", "root"]
    assert (busybox_root / "w" / "new").read_text() == "ok"
    assert not (busybox_root / "new").exists()


def test_read_only_needs_symlink_mode(tmp_path):
    result = droot("deploy", "--root", tmp_path / "app", "--read-only", "--mode", "rsync",
                   stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert result.stderr.strip() == ("droot: --read-only needs --mode symlink: rsync mode "
                                     "writes into the directory the app runs in"), result.stderr
    assert not (tmp_path / "app").exists() and not (tmp_path / "app.releases").exists()


def test_a_bind_source_in_a_read_only_release_stays_inside_it(tmp_path):
    """The release's image chooses its symlinks: `srv -> /host/dir` must not turn the
    operator's bind of the release's /srv into a writable bind of a host directory. The
    source is resolved inside the release, as the image's own paths are, and bound
    read-only."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "f").write_text("host\n")
    source = make_busybox_root(tmp_path / "image")
    (source / "srv").symlink_to(host)  # absolute: on the host, it is that directory
    (source / "data").mkdir()
    (source / "data" / "f").write_text("image\n")
    (source / "ln").symlink_to("/data")
    with tarfile.open(tmp_path / "image.tar", "w") as archive:
        archive.add(source, arcname=".")
    with open(tmp_path / "image.tar", "rb") as stream:
        result = droot("deploy", "--root", tmp_path / "app", "--read-only", stdin=stream)
    assert result.returncode == 0, result.stderr
    release = os.path.realpath(tmp_path / "app")
    other = make_busybox_root(tmp_path / "other")
    result = sh(other, "cat /srv/f; (echo x > /srv/f) 2>&1; true", "-b", f"{release}/srv:/srv")
    assert (host / "f").read_text() == "host\n", "the app wrote a host file"
    assert "host" not in result.stdout, result.stdout
    # Inside the release, /srv leads to the release's own (missing) host path.
    assert result.returncode != 0 and "--bind" in result.stderr, result.stderr
    # A symlink of the image that stays in it (/ln -> /data: no /data on the host).
    result = sh(other, "cat /ln/f; (echo x > /ln/f) 2>&1; true", "-b", f"{tmp_path}/app/ln:/ln")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "image\n/bin/sh: can't create /ln/f: Read-only file system\n", \
        result.stdout


def test_a_root_below_a_read_only_release_stays_inside_it(tmp_path):
    """`--root APP/sub` names a root inside the release; the image's `sub -> /host/dir`
    must not make droot run the app, writable, in a host directory of its choosing."""
    host = make_busybox_root(tmp_path / "host")
    source = make_busybox_root(tmp_path / "image")
    (source / "sub").symlink_to(host)
    (source / "inner").mkdir()
    make_busybox_root(source / "inner" / "root")
    (source / "ln").symlink_to("/inner/root")  # stays in the image
    with tarfile.open(tmp_path / "image.tar", "w") as archive:
        archive.add(source, arcname=".")
    with open(tmp_path / "image.tar", "rb") as stream:
        result = droot("deploy", "--root", tmp_path / "app", "--read-only", stdin=stream)
    assert result.returncode == 0, result.stderr
    result = sh(tmp_path / "app" / "sub", "echo x > /written; true")
    assert not (host / "written").exists(), "the app ran in the host directory"
    assert result.returncode != 0 and "root" in result.stderr, result.stderr
    result = sh(tmp_path / "app" / "ln", "(echo x > /written) 2>&1; ls /")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("/bin/sh: can't create /written: Read-only file system\n")


@pytest.mark.parametrize("options", [("--no-dropcaps",), ("--cap-add", "SYS_ADMIN"),
                                     ("--cap-add", "all"), ("--cap-add", "dac_read_search"),
                                     ("--cap-add", "SYS_CHROOT"), ("--cp",),
                                     ("-b", "{parent}:/host"), ("-b", "/:/host")])
def test_no_privilege_over_a_read_only_release(read_only_release, options):
    """A privileged app could remount the release writable, open its files by handle
    through another mount, or chroot out to the host's writable mount of it; a writable
    bind that holds the release would give that mount to any app, and --cp would have
    droot write into the release: refused before anything runs, in one line."""
    root, release = read_only_release
    options = [option.format(parent=os.path.dirname(release)) for option in options]
    before = snapshot(release)
    result = droot("run", "--root", root, *options, "--", "/bin/true")
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1 and "is a read-only release" in result.stderr, \
        result.stderr
    assert snapshot(release) == before
    # The controls: dropping the capability again, or binding read-only, runs.
    if options[0] == "--cap-add":
        allowed = droot("run", "--root", root, *options, "--cap-drop", "ALL", "--", "/bin/true")
        assert allowed.returncode == 0, allowed.stderr
    if options[0] == "-b":
        allowed = droot("run", "--root", root, "--robind", options[1], "--", "/bin/true")
        assert allowed.returncode == 0, allowed.stderr



@pytest.mark.parametrize("alias", ["parent", "below", "inside", "sibling"])
def test_a_writable_bind_of_another_mount_of_the_release_is_refused(read_only_release, tmp_path,
                                                                  alias):
    """The host may show the release's directories at a second place (`mount --bind /srv
    /mnt/srv`): a writable bind of that place (`parent`), of a directory with such a mount
    below it (`below`: open_tree clones it too), or of another mount of a directory inside
    the release (`inside`; `sibling` when the root is another directory of the release)
    would let the app write the release's files, the read-only mount and Landlock
    notwithstanding (the bind shows the release's own inodes)."""
    root, release = read_only_release
    if alias == "sibling":  # the root is a directory of the release, the bind another one
        root = f"{release}/nested"
    name = os.path.basename(release)
    source = tmp_path / "source"
    mounted = source / "mounted" if alias == "below" else source
    mounted.mkdir(parents=True)
    shown, file = {"parent": (os.path.dirname(release), f"{name}/srv/state"),
                   "below": (os.path.dirname(release), f"mounted/{name}/srv/state"),
                   "inside": (f"{release}/srv", "state"),
                   "sibling": (f"{release}/srv", "state")}[alias]
    subprocess.run(["mount", "--bind", shown, mounted], check=True)
    try:
        before = snapshot(release)
        result = sh(root, f"echo changed > /host/{file}", "-b", f"{source}:/host")
        assert snapshot(release) == before, "the app wrote a file of the read-only release"
        assert result.returncode == 125, result
        assert result.stderr.count("\n") == 1 and "holds the release" in result.stderr, \
            result.stderr
        # The control: bound read-only, the same source runs and shows the release's file.
        allowed = sh(root, f"cat /host/{file}", "--robind", f"{source}:/host")
        assert allowed.returncode == 0 and allowed.stdout == "deployed\n", allowed
    finally:
        subprocess.run(["umount", mounted], check=True)


@pytest.mark.parametrize("source", ["the mount", "above it"])
def test_another_mount_of_a_read_only_release_bound_into_a_writable_root(read_only_release,
                                                                        tmp_path, source):
    """The release's own directory is not on the way to another mount of a directory of
    it, so no mark is found by the path: found by the directory's path in its filesystem
    (readonly.release_behind_mounts), the bind is made read-only, as through the path. A
    bind of a directory above that mount clones it too."""
    root, release = read_only_release
    mounted = tmp_path / "above" / "mounted"
    mounted.mkdir(parents=True)
    other = make_busybox_root(tmp_path / "other")
    bound = mounted if source == "the mount" else mounted.parent
    inside = "/srv" if source == "the mount" else "/srv/mounted"
    subprocess.run(["mount", "--bind", f"{release}/srv", mounted], check=True)
    try:
        result = sh(other, f"echo changed > {inside}/state", "-b", f"{bound}:/srv")
        assert (mounted / "state").read_text() == "deployed\n", "the app wrote the release"
        assert result.returncode != 0 and "Read-only file system" in result.stderr, result
        assert f"shows the read-only release {release} through another mount" in result.stderr
        # The control: a writable bind of the same place without the mount below it.
        if source == "above it":
            subprocess.run(["umount", mounted], check=True)
            allowed = sh(other, "echo mine > /srv/mounted/own", "-b", f"{bound}:/srv")
            assert allowed.returncode == 0, allowed.stderr
            assert (mounted / "own").read_text() == "mine\n"
    finally:
        subprocess.run(["umount", mounted], capture_output=True)


def test_a_root_that_is_another_mount_of_a_read_only_release_is_refused(read_only_release,
                                                                       tmp_path):
    """Run at another mount of a directory of the release, the root would be writable over
    the release's files: refused, in one line naming the release."""
    root, release = read_only_release
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    subprocess.run(["mount", "--bind", f"{release}/nested", mounted], check=True)
    try:
        before = snapshot(release)
        result = sh(mounted, "echo changed > /state")
        assert result.returncode == 125, result
        assert result.stderr.count("\n") == 1 and f"read-only release {release}" in \
            result.stderr, result.stderr
        assert snapshot(release) == before
        # The control: the release's own path runs, read-only.
        allowed = sh(f"{release}/nested", "(echo changed > /state) 2>&1; true")
        assert allowed.returncode == 0 and "Read-only file system" in allowed.stdout, allowed
    finally:
        subprocess.run(["umount", mounted], capture_output=True)


@pytest.mark.parametrize("run_in", ["another root", "the release"])
def test_a_covered_mount_does_not_hide_the_release_behind_a_bind(read_only_release, tmp_path,
                                                                 run_in):
    """A tmpfs at X/bin, then another mount of the release's /nested over X: `-b X/bin`
    resolves into the release, though the longest mount point on its path is the
    covered tmpfs. Mounts are told apart by their IDs (the one the source's descriptor
    is on), not by their mount points: into another root the bind is made read-only,
    into the release itself it is refused."""
    root, release = read_only_release
    covered = tmp_path / "covered"
    (covered / "bin").mkdir(parents=True)
    mounted = []
    try:
        for command in (["mount", "-t", "tmpfs", "tmpfs", covered / "bin"],
                        ["mount", "--bind", f"{release}/nested", covered]):
            subprocess.run(command, check=True)
            mounted.insert(0, covered / "bin" if len(mounted) == 0 else covered)
        other = make_busybox_root(tmp_path / "other") if run_in == "another root" else root
        result = sh(other, "echo changed > /srv/planted", "-b", f"{covered}/bin:/srv")
        assert not os.path.exists(f"{release}/nested/bin/planted"), "the app wrote the release"
        if run_in == "another root":
            assert result.returncode != 0 and "Read-only file system" in result.stderr, result
        else:
            assert result.returncode == 125 and "holds the release" in result.stderr, result
    finally:
        for path in mounted:
            subprocess.run(["umount", path], capture_output=True)


def test_a_bind_source_swapped_after_it_was_opened_binds_what_was_checked(read_only_release,
                                                                          tmp_path, capsys):
    """A host user who owns the bind's source swaps it for a symlink into a read-only
    release between droot's checks and its clone (the race of a path looked up twice):
    the clone is made from the descriptor opened before the checks, so it shows the
    directory that was checked, writable, and never the release."""
    from droot.core import mountinfo
    from droot.run import mounts
    _, release = read_only_release
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine").write_text("mine\n")
    bind = mounts.BindMount(str(data), "/data", False, "--bind")
    data.rename(tmp_path / "data-before")
    data.symlink_to(os.path.join(release, "srv"))  # the swap, after droot opened it
    mounts.bind_releases_read_only([bind], mountinfo.read())
    bind.clone()
    try:
        assert os.listdir(f"/proc/self/fd/{bind.tree}") == ["mine"]
        assert not bind.read_only and capsys.readouterr().err == ""
    finally:
        os.close(bind.tree)


@pytest.mark.parametrize("entry", ["srv", "srv/state"])
def test_a_bind_source_opened_in_a_release_is_bound_read_only(read_only_release, entry,
                                                              monkeypatch, capsys):
    """The other order: the source's path led elsewhere when droot looked for a release
    on it, and into one by the time droot opened it. What was opened is looked at again,
    by walking up from its descriptor, and bound read-only (a directory, or a file whose
    inode a rollback target shares)."""
    from droot.core import readonly
    from droot.run import mounts
    _, release = read_only_release
    monkeypatch.setattr(readonly, "split_at_release", lambda path: None)  # looked before
    bind = mounts.BindMount(os.path.join(release, entry), "/data", False, "--bind")
    os.close(bind.pinned)
    assert bind.read_only
    assert capsys.readouterr().err == (
        f"droot: warning: --bind {release}/{entry} now leads into the read-only release "
        f"{release}: bound read-only\n")


def test_a_root_swapped_after_its_checks_is_refused(read_only_release, tmp_path):
    """The same race for --root: checked through a descriptor, entered only if the path
    still names that directory in droot's namespace (a swap for a symlink into a
    read-only release would otherwise run the release writable)."""
    from droot.core import mountinfo
    from droot.core.errors import RunError
    from droot.run import runner
    _, release = read_only_release
    root = make_busybox_root(tmp_path / "mine")
    checked, release_found = runner.opened_root(str(root))
    real = runner.checked_root(str(root), checked, release_found, mountinfo.read())
    assert (real, release_found) == (str(root), None)
    root.rename(tmp_path / "mine-before")
    root.symlink_to(release)  # the swap, after the checks
    with pytest.raises(RunError, match=r"changed while droot was starting"):
        runner.reopened_root(real, checked)
    os.close(os.open(tmp_path / "mine-before", os.O_PATH))  # still there, untouched


def test_a_root_swapped_for_a_magic_link_to_itself_in_another_namespace_is_refused(
        read_only_release, tmp_path):
    """The same directory on a mount of another mount namespace (a host user's, in a user
    namespace of theirs), with that namespace's mounts below it: reached through
    /proc/PID/root, it has the inode checked, and droot would write (--cp, bind and tmpfs
    targets) into whatever that namespace mounted there, the release's /etc among them."""
    from droot.core import mountinfo
    from droot.core.errors import RunError
    from droot.run import runner
    _, release = read_only_release
    root = make_busybox_root(tmp_path / "mine")
    shown = tmp_path / "shown"
    shown.mkdir()
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount --bind {root} {shown} && mount --bind {release}/etc "
                               f"{shown}/etc && echo ready && exec sleep 60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        checked, release_found = runner.opened_root(str(root))
        real = runner.checked_root(str(root), checked, release_found, mountinfo.read())
        root.rename(tmp_path / "mine-before")
        root.symlink_to(f"/proc/{holder.pid}/root{shown}")  # the swap, after the checks
        with pytest.raises(RunError, match=r"changed while droot was starting"):
            runner.reopened_root(real, checked)
    finally:
        holder.kill()
        holder.wait()


def test_a_root_opened_in_a_release_its_path_did_not_lead_to_is_refused(read_only_release,
                                                                        monkeypatch):
    from droot.core import mountinfo, readonly
    from droot.core.errors import RunError
    from droot.run import runner
    _, release = read_only_release
    monkeypatch.setattr(readonly, "split_at_release", lambda path: None)  # looked before
    path = os.path.join(release, "nested")
    descriptor, release_found = runner.opened_root(path)
    try:
        with pytest.raises(RunError, match=rf"now leads into the read-only release {release}"):
            runner.checked_root(path, descriptor, release_found, mountinfo.read())
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("what", ["--bind", "--root"])
def test_a_source_on_a_detached_mount_tree_is_refused(read_only_release, busybox_root, what):
    """A release's directory mounted in a detached mount tree that another process holds
    (open_tree; an unprivileged user can make one in a user namespace from any other
    mount of the release it can reach), reached through /proc/PID/fd/N: walking up with
    ".." stops at the tree's root and mountinfo does not list it, so no check would find
    the release. Refused, as a bind source and as the root."""
    from droot.core import kernel
    _, release = read_only_release
    tree = kernel.new_mount("tmpfs", {}, 0)
    try:
        os.mkdir(f"/proc/self/fd/{tree}/zz")
        shown = kernel.open_tree(release if what == "--root" else os.path.join(release, "srv"),
                                 kernel.OPEN_TREE_CLONE | kernel.AT_RECURSIVE)
        target = os.open(f"/proc/self/fd/{tree}/zz", os.O_PATH | os.O_CLOEXEC)
        try:
            kernel.move_mount_to(shown, target)
        finally:
            os.close(target)
            os.close(shown)
        reached = f"/proc/{os.getpid()}/fd/{tree}/zz"
        if what == "--bind":
            result = sh(busybox_root, "echo changed > /data/state", "-b", f"{reached}:/data")
        else:
            result = sh(reached, "echo changed > /srv/state")
    finally:
        os.close(tree)
    assert result.returncode == 125, result
    assert "outside droot's mount namespace" in result.stderr and \
        len(result.stderr.splitlines()) == 1, result.stderr
    assert open(os.path.join(release, "srv", "state")).read() == "deployed\n"
