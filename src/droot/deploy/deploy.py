"""Deploy an archive stream as the new release of a root, and manage the releases.

Every change happens under the root's lock, in an order that survives a kill at any
moment: leftovers of an interrupted deploy are removed first; the archive is extracted
into a temporary directory and checked (its SHA-256 against the expected one); the
filesystem is synced once; the directory is renamed to its final release name; the root
symlink is switched with rename(2); only then are old releases pruned.
"""

import os
import sys
from pathlib import Path

from droot.deploy import extract as extraction
from droot.deploy import inuse
from droot.deploy.releases import LOCK_NAME, TEMP_PREFIX, Layout, Lock, remove_tree
from droot.errors import DrootError

MODES = ("symlink", "rsync")
DEFAULT_KEEP = 5


def _check_mode(layout: Layout, mode: str):
    state = layout.state()
    if state == "foreign":
        raise DrootError(f"{layout.root} exists and is not a directory or a droot release "
                         "symlink; move it away first")
    if mode == "symlink" and state == "directory":
        raise DrootError(
            f"{layout.root} is a real directory (rsync mode, or deployed by another tool): "
            "symlink mode would have to replace it; move it away first "
            f"(e.g. mv {layout.root} {layout.root}.old), or deploy with --mode rsync")
    if mode == "rsync" and state == "symlink":
        raise DrootError(f"{layout.root} is a release symlink (symlink mode): rsync mode would "
                         "write into a release; use --mode symlink, or 'droot rm' it first")


def deploy(stream, root, *, mode: str = "symlink", keep: int = DEFAULT_KEEP,
           expected_sha256: str | None = None, devices: bool = True,
           lock_timeout: float | None = None, progress=None) -> dict:
    """Make the archive read from `stream` (a readable stream or a file descriptor) the
    new release at `root`. Returns a summary (release name, sha256, compression, counts,
    pruned releases)."""
    if mode not in MODES:
        raise DrootError(f"unknown mode {mode!r}: use symlink or rsync")
    if os.geteuid() != 0:
        raise DrootError("deploy needs root: it extracts inside a chroot and reproduces "
                         "owners and devices (run it with sudo)")
    layout = Layout(root)
    _check_mode(layout, mode)
    created = _missing_directories(layout.releases_dir)
    with Lock(layout, lock_timeout) as lock:
        _check_mode(layout, mode)  # again: another deploy may have changed it meanwhile
        for leftover in layout.leftovers():
            remove_tree(leftover)
        staging = layout.releases_dir / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            # Inside the try: a Ctrl-C that lands as mkdir returns must not leave it behind.
            os.mkdir(staging, 0o755)
            result = extraction.extract(stream, staging, devices=devices,
                                        write_back=(mode == "symlink"), progress=progress)
            if progress:
                progress.close()
            if expected_sha256 and result.sha256 != expected_sha256.lower():
                raise DrootError(
                    f"checksum mismatch: the archive's SHA-256 is {result.sha256}, expected "
                    f"{expected_sha256.lower()} (corrupt download, or the archive was replaced "
                    "while it was read; nothing was switched)")
            if not result.stats["files"]:
                raise DrootError("the archive has no regular files: refusing to make it a "
                                 "release (is it a root filesystem?); nothing was switched")
            summary = {"sha256": result.sha256, "compression": result.compression,
                       "size": result.size, **result.stats}
            if mode == "symlink":
                extraction.syncfs(staging)
                name = layout.new_release_name(result.sha256)
                os.rename(staging, layout.releases_dir / name)
                layout.switch(name)
                summary["release"] = name
                summary["pruned"] = prune(layout, keep)
            else:
                _rsync(staging, layout, lock.fd)
                summary["release"] = str(layout.root)
                remove_tree(staging)
        except BaseException:
            remove_tree(staging)
            _remove_if_unused(layout, created)
            raise
    return summary


def _missing_directories(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first (the lock
    creates them)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_unused(layout: Layout, created: list[Path]):
    """After a failed first deploy, remove the releases directory (and the parents) this
    deploy created, so that nothing is left where there was nothing. Only under the lock,
    and only while the root is absent and the directory holds nothing but the lock file:
    then no release and no other deploy's staging can be in it. As in remove_all, the
    lock file goes before its directory: a deploy waiting for it notices, and starts
    afresh."""
    try:
        if (not created or layout.state() != "absent"
                or os.listdir(layout.releases_dir) != [LOCK_NAME]):
            return
        os.unlink(layout.lock_path)
        for directory in created:
            os.rmdir(directory)
    except OSError:  # a parent not empty (another root's deploy uses it): it stays, and
        pass         # the deploy's own error is the one to report


def _rsync(staging: Path, layout: Layout, lock_fd: int):
    """Sync the extracted release into the real directory at the root: owners (numeric),
    modes, hard links, ACLs, xattrs; files gone from the image are deleted. Not atomic: a
    reader can see a mix while it runs. rsync holds the lock too, so if droot is killed
    the next deploy still waits for it to finish."""
    import shutil  # here: symlink mode, the usual one, does without (start-up time)
    import subprocess
    if not shutil.which("rsync"):
        raise DrootError("--mode rsync needs the rsync command (apt-get install rsync)")
    command = ["rsync", "-aHAX", "--numeric-ids", "--delete", f"{staging}/", f"{layout.root}/"]
    first = not os.path.lexists(layout.root)
    layout.root.mkdir(mode=0o755, exist_ok=True)
    try:
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, pass_fds=(lock_fd,))
        if completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or ["?"])[-1]
            raise DrootError(f"rsync into {layout.root} failed (status "
                             f"{completed.returncode}): {last}")
    except BaseException:
        if first:  # a half-synced first release is no release: leave nothing, as before
            remove_tree(layout.root)
        raise
    extraction.syncfs(layout.root)


def prune(layout: Layout, keep: int) -> list[str]:
    """Remove releases beyond the `keep` newest (0 keeps all), never the current one, the
    previous one (the rollback target) or one a running process uses."""
    releases = layout.releases()
    if keep <= 0 or len(releases) <= keep:
        return []
    current = layout.current()
    protected = {current, _previous_name(releases, current)}
    candidates = [release for release in releases[:-keep] if release.name not in protected]
    busy = inuse.in_use([release.path for release in candidates])
    pruned = []
    for release in candidates:
        if release.path in busy:
            print(f"droot: keeping release {release.name}: in use by pid {busy[release.path]}",
                  file=sys.stderr)
            continue
        remove_tree(release.path)
        pruned.append(release.name)
    return pruned


def _previous_name(releases, current: str | None) -> str | None:
    names = [release.name for release in releases]
    if current not in names:
        return None
    index = names.index(current)
    return names[index - 1] if index > 0 else None


def rollback(root, *, to: str | None = None, lock_timeout: float | None = None) -> tuple:
    """Switch the root back to the release deployed before the current one (or to `to`).
    Returns (from, to)."""
    layout = Layout(root)
    if layout.current() is None:
        raise DrootError(f"{layout.root} is not a release symlink: nothing to roll back")
    with Lock(layout, lock_timeout):
        releases = layout.releases()
        current = layout.current()
        if current is None:
            raise DrootError(f"{layout.root} is not a release symlink: nothing to roll back")
        if to:
            matches = [r.name for r in releases if r.name == to or r.name.startswith(to)]
            if len(matches) != 1:
                raise DrootError(f"no single release matches {to!r} "
                                 f"(see 'droot releases --root {layout.root}')")
            target = matches[0]
        else:
            target = _previous_name(releases, current)
            if target is None:
                raise DrootError(f"{layout.root} has no release older than {current} "
                                 "to roll back to")
        layout.switch(target)
        return current, target


def remove_all(root, *, lock_timeout: float | None = None) -> list[str]:
    """Remove the root and all its releases, unless a process still uses one of them."""
    layout = Layout(root)
    state = layout.state()
    if state == "foreign" or (state == "directory" and not layout.releases_dir.is_dir()):
        raise DrootError(f"{layout.root} was not deployed by droot (no {layout.releases_dir}); "
                         "refusing to remove it")
    if state == "absent" and not layout.releases_dir.is_dir():
        raise DrootError(f"{layout.root} does not exist")
    with Lock(layout, lock_timeout):
        releases = layout.releases()
        paths = [release.path for release in releases]
        if layout.state() == "directory":
            paths.append(layout.root)
        busy = inuse.in_use(paths)
        if busy:
            path, pid = next(iter(busy.items()))
            raise DrootError(f"{path} is in use by pid {pid} (a running app?); stop it first")
        if os.path.islink(layout.root):
            os.unlink(layout.root)
        elif layout.root.is_dir():
            remove_tree(layout.root)
        for leftover in layout.leftovers():
            remove_tree(leftover)
        for release in releases:
            remove_tree(release.path)
        removed = [release.name for release in releases]
        for name in os.listdir(layout.releases_dir):
            if name != ".lock":
                remove_tree(layout.releases_dir / name)
        # The lock file goes last (waiting deploys notice it is gone and start afresh).
        os.unlink(layout.lock_path)
        os.rmdir(layout.releases_dir)
    return removed
