"""Deploy an archive stream as the new release of a root, and manage the releases.

Every change happens under the root's lock, in an order that survives a kill at any
moment: leftovers of an interrupted deploy are removed first; the archive is extracted
into a temporary directory and checked (its SHA-256 against the expected one); the
filesystem is synced once; the directory is renamed to its final release name; the root
symlink is switched with rename(2); only then are old releases pruned. All of it goes
through the descriptors the lock holds (releases.py): nothing droot did not make is
followed, switched to or removed.
"""

import os
import sys
from pathlib import Path

from droot.deploy import pipeline
from droot.deploy import inuse
from droot.deploy.releases import (LOCK_NAME, TEMP_PREFIX, Layout, Lock, describe,
                                   remove_tree)
from droot.core import readonly
from droot.core.errors import DrootError, NotRecovered, RolledBack
from droot.core.signatures import shown_time

MODES = ("symlink", "rsync")
DEFAULT_KEEP = 5


def _check_mode(layout: Layout, mode: str, parent_fd: int | None = None):
    state = layout.state(parent_fd)
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
           lock_timeout: float | None = None, progress=None, source: str | None = None,
           signer: str | None = None, pushed: int | None = None,
           allow_downgrade: bool = False, restart_check=None, unpacker=None,
           release_sha256: str | None = None, content_record=None,
           read_only: bool = False, plain_tar: bool = False) -> dict:
    """Make the archive read from `stream` (a readable stream or a file descriptor) the
    new release at `root`. Returns a summary (release name, sha256, compression, counts,
    pruned releases). `source` and `signer` (where the archive came from, the key that
    signed it) go into the `.deployed` record. A signed release (`signer`) is refused
    when its push time `pushed` is older than the newest accepted here, or unknown,
    unless `allow_downgrade` (check_push_time); a newer one becomes the newest, recorded
    before the switch. `restart_check` (a restart.RestartCheck, symlink mode only)
    restarts and checks the app after the switch, still under the lock, and rolls back
    when the new release fails: then it raises, and nothing is pruned.
    A delta release (droot.ship.delta) passes its `unpacker` (members.Unpacker's subclass
    that takes some files' data from older releases) and `release_sha256`, its
    manifest's, which then names the release and is recorded in place of the rebuilt
    stream's, and its `content_record` (reuse.LocalContent), whose write(lock, name)
    records the new release's files before the switch, while no app runs in it, and
    `plain_tar`: its rebuilt stream is never sniffed for a compression (pipeline.extract).
    `read_only` marks the release (droot.core.readonly): droot run keeps it unchanged,
    and the next delta pull may hard-link its files."""
    if mode not in MODES:
        raise DrootError(f"unknown mode {mode!r}: use symlink or rsync")
    if read_only and mode != "symlink":
        raise DrootError("--read-only needs --mode symlink: rsync mode writes into the "
                         "directory the app runs in")
    if os.geteuid() != 0:
        raise DrootError("deploy needs root: it extracts inside a chroot and reproduces "
                         "owners and devices (run it with sudo)")
    layout = Layout(root)
    _check_mode(layout, mode)
    if restart_check:
        if mode != "symlink":
            raise DrootError("--restart and --check need --mode symlink: rsync mode has no "
                             "previous release to roll back to")
        restart_check.preflight(layout)  # a supervisor droot cannot reach: refused before any change
    created = _missing_directories(layout.releases_dir)
    with Lock(layout, lock_timeout) as lock:
        _check_mode(layout, mode, lock.parent_fd)  # again: another deploy may have changed it
        layout.remove_leftovers(lock)
        staging_name = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        # The extraction chroots into it, rsync reads it: by a path through the descriptor,
        # which cannot be redirected by renaming ROOT.releases meanwhile.
        staging = Path(f"/proc/self/fd/{lock.dir_fd}/{staging_name}")
        try:
            newest = None
            if signer:  # again, under the lock: a concurrent pull may have moved it on
                newest = layout.read_newest_push(lock.dir_fd)
                check_push_time(newest, pushed, allow_downgrade, source)
            # Inside the try: a Ctrl-C that lands as mkdir returns must not leave it behind.
            os.mkdir(staging_name, 0o755, dir_fd=lock.dir_fd)
            try:
                result = pipeline.extract(stream, staging, devices=devices,
                                          write_back=(mode == "symlink"), progress=progress,
                                          unpacker=unpacker, plain_tar=plain_tar)
            except pipeline.DeltaManifestGiven:
                raise DrootError(
                    "this is a delta release's manifest (droot push --delta), not an "
                    "archive: deploy it with 'droot pull STORE/NAME --root "
                    f"{layout.root}', STORE/NAME being where it was pushed (its packs are "
                    "there); nothing was switched") from None
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
            digest = release_sha256 or result.sha256
            summary = {"sha256": digest, "compression": result.compression,
                       "size": result.size, "signer": signer, **result.stats}
            record = {"sha256": digest, "source": source, "signer": signer, "pushed": pushed}
            if mode == "symlink":
                if read_only:
                    _mark_read_only(lock, staging_name, layout)
                pipeline.syncfs(staging)
                name = layout.new_release_name(lock.dir_fd, digest)
                os.rename(staging_name, name, src_dir_fd=lock.dir_fd, dst_dir_fd=lock.dir_fd)
                if content_record:
                    content_record.write(lock, name)
                previous = layout.current(lock.parent_fd)
                _record_newest_push(layout, lock, newest, record)
                layout.switch(lock, name)
                layout.write_deployed(lock, {"release": name, **record})
                summary["release"] = name
                if restart_check:
                    try:
                        summary["verified"] = restart_check.after_switch(layout, lock,
                                                                         previous, name)
                    except (RolledBack, NotRecovered) as failure:
                        # Remembered when the root is back on another release (pull
                        # --if-changed skips this one); one that stays current is in
                        # `.deployed`, which the next poll finds unchanged.
                        if layout.current(lock.parent_fd) != name:
                            _record_rollback(layout, lock, {
                                "rolled_back_at": _utc_now(), "release": name,
                                "recovered": isinstance(failure, RolledBack), **record})
                        raise
                layout.write_rolled_back(lock, None)  # it runs: a rollback is history
                summary["pruned"] = prune(layout, keep, lock)
            else:
                _record_newest_push(layout, lock, newest, record)
                layout.write_deployed(lock, None)  # the root is a mix while rsync runs
                _rsync(staging, layout, lock)
                layout.write_deployed(lock, {"release": None, **record})
                layout.write_rolled_back(lock, None)
                summary["release"] = str(layout.root)
                remove_tree(lock.dir_fd, staging_name, layout.releases_dir / staging_name)
        except BaseException:
            remove_tree(lock.dir_fd, staging_name, layout.releases_dir / staging_name)
            _remove_if_unused(layout, created, lock)
            raise
    return summary


def _mark_read_only(lock: Lock, staging_name: str, layout: Layout):
    try:
        directory = os.open(staging_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC, dir_fd=lock.dir_fd)
        try:
            readonly.mark(directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise DrootError(f"cannot mark the release read-only ({error.strerror}): the "
                         f"filesystem of {layout.releases_dir} needs trusted.* extended "
                         "attributes for --read-only; nothing was switched") from None


def check_push_time(newest: dict | None, pushed: int | None, allow_downgrade: bool,
                    source: str | None):
    """Refuse (one line) a signed release pushed before `newest` (the `.newest-push`
    record), or whose signature covers no push time, unless `allow_downgrade`: anyone who
    can write the store could otherwise put back an old release, genuinely signed then,
    with a hole since fixed. The same push time is the same release: a re-pull is fine."""
    if allow_downgrade:
        return
    what = source if source not in (None, "-") else "the release"
    if pushed is None:
        raise DrootError(f"{what}: its signature covers no push time (signed by a droot "
                         "that did not record one): it could be an old release put back; "
                         "refused, nothing was changed (push it again, or pass "
                         "--allow-downgrade to accept it)")
    if newest and pushed < newest["pushed"]:
        raise DrootError(f"{what} was pushed at {shown_time(pushed)}, before the release "
                         f"accepted here (sha256 {str(newest.get('sha256'))[:12]}, pushed at "
                         f"{shown_time(newest['pushed'])}): an old release put back in the "
                         "store? refused, nothing was changed (--allow-downgrade deploys it "
                         "on purpose)")


def _record_newest_push(layout: Layout, lock: Lock, newest: dict | None, record: dict):
    """Move the newest accepted push time on, for a signed release newer than `newest`:
    before the switch, so that a release is never current without it (a newer record
    over a switch that then fails only refuses what is older than a verified release)."""
    pushed = record["pushed"]
    if record["signer"] and pushed is not None and (not newest or pushed > newest["pushed"]):
        try:
            layout.write_newest_push(lock, record)
        except OSError as error:
            raise DrootError(f"cannot record the push time in {layout.releases_dir}: "
                             f"{error.strerror}; nothing was switched") from None


def _record_rollback(layout: Layout, lock: Lock, record: dict):
    try:
        layout.write_rolled_back(lock, record)
    except OSError as error:  # the rollback is the news; this only costs a retry
        print(f"droot: cannot record the rollback in {layout.releases_dir}: "
              f"{error.strerror} (pull --if-changed will deploy this release again)",
              file=sys.stderr)


def _utc_now() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _missing_directories(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first (the lock
    creates them)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_unused(layout: Layout, created: list[Path], lock: Lock):
    """After a failed first deploy, remove the releases directory (and the parents) this
    deploy created, so that nothing is left where there was nothing. Only under the lock,
    and only while the root is absent and the directory holds nothing but the lock file:
    then no release and no other deploy's staging can be in it. As in remove_all, the
    lock file goes before its directory: a deploy waiting for it notices, and starts
    afresh."""
    try:
        if (not created or layout.state(lock.parent_fd) != "absent"
                or os.listdir(lock.dir_fd) != [LOCK_NAME]):
            return
        os.unlink(LOCK_NAME, dir_fd=lock.dir_fd)
        os.rmdir(layout.releases_name, dir_fd=lock.parent_fd)
        for directory in created[1:]:  # the parents: their paths are the operator's
            os.rmdir(directory)
    except OSError:  # a parent not empty (another root's deploy uses it): it stays, and
        pass         # the deploy's own error is the one to report


def _rsync(staging: Path, layout: Layout, lock: Lock):
    """Sync the extracted release into the real directory at the root: owners (numeric),
    modes, hard links, ACLs, xattrs; files gone from the image are deleted. Not atomic: a
    reader can see a mix while it runs. rsync holds the lock too, so if droot is killed
    the next deploy still waits for it to finish."""
    import shutil  # here: symlink mode, the usual one, does without (start-up time)
    import subprocess
    if not shutil.which("rsync"):
        raise DrootError("--mode rsync needs the rsync command (apt-get install rsync)")
    first = layout.state(lock.parent_fd) == "absent"
    if first:
        os.mkdir(layout.root.name, 0o755, dir_fd=lock.parent_fd)
    # The root checked (a real directory, _check_mode) and opened without following a
    # symlink: rsync writes into that directory, through the descriptor.
    root_fd = os.open(layout.root.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                      | os.O_CLOEXEC, dir_fd=lock.parent_fd)
    command = ["rsync", "-aHAX", "--numeric-ids", "--delete", f"{staging}/",
               f"/proc/self/fd/{root_fd}/"]
    try:
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, pass_fds=(lock.fd, lock.dir_fd, root_fd))
        if completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or ["?"])[-1]
            raise DrootError(f"rsync into {layout.root} failed (status "
                             f"{completed.returncode}): {last}")
    except BaseException:
        if first:  # a half-synced first release is no release: leave nothing, as before
            remove_tree(lock.parent_fd, layout.root.name, layout.root)
        raise
    finally:
        os.close(root_fd)
    pipeline.syncfs(layout.root)


def prune(layout: Layout, keep: int, lock: Lock) -> list[str]:
    """Remove releases beyond the `keep` newest (0 keeps all), never the current one, the
    previous one (the rollback target) or one a running process uses. Only real
    directories are releases: an entry of a release's name that is a symlink or a file was
    not made by droot, and is neither followed nor removed (a warning names it)."""
    everything = layout.releases(lock.dir_fd, everything=True)
    for stray in (release for release in everything if not release.directory):
        print(f"droot: ignoring {stray.path}: {describe(None, lock.dir_fd, stray.name)}, "
              "not a release droot made", file=sys.stderr)
    releases = [release for release in everything if release.directory]
    if keep <= 0 or len(releases) <= keep:
        return []
    current = layout.current(lock.parent_fd)
    protected = {current, _previous_name(releases, current)}
    candidates = [release for release in releases[:-keep] if release.name not in protected]
    busy = inuse.in_use([release.path for release in candidates])
    pruned = []
    for release in candidates:
        if release.path in busy:
            print(f"droot: keeping release {release.name}: in use by pid {busy[release.path]}",
                  file=sys.stderr)
            continue
        remove_tree(lock.dir_fd, release.name, release.path)
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
    Returns (from, to). The target must be a real directory in ROOT.releases: an entry of
    a release's name that is a symlink (to a directory elsewhere) or a file is refused,
    whether named by --to or found as the previous one."""
    layout = Layout(root)
    if layout.current() is None:
        raise DrootError(f"{layout.root} is not a release symlink: nothing to roll back")
    with Lock(layout, lock_timeout) as lock:
        # Every entry of a release's name, so that a planted one is refused by name rather
        # than silently skipped over to an older release.
        releases = layout.releases(lock.dir_fd, everything=True)
        current = layout.current(lock.parent_fd)
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
        layout.switch(lock, target)  # refuses a target that is not a real directory
        return current, target


def remove_all(root, *, lock_timeout: float | None = None) -> list[str]:
    """Remove the root and all its releases, unless a process still uses one of them.
    Only what droot made goes, through descriptors: the root symlink (or the rsync-mode
    directory), ROOT.releases (never through a symlink: refused) and in it the release
    and staging directories and the lock file. Anything else in ROOT.releases, a symlink
    of a release's name included, makes rm refuse before it removes anything."""
    layout = Layout(root)
    parent_fd = layout.open_parent()
    try:
        state = layout.state(parent_fd) if parent_fd is not None else "absent"
        releases_fd = layout.open_releases(parent_fd) if parent_fd is not None else None
    finally:
        if parent_fd is not None:
            os.close(parent_fd)
    if releases_fd is not None:
        os.close(releases_fd)
    if state == "foreign" or (state == "directory" and releases_fd is None):
        raise DrootError(f"{layout.root} was not deployed by droot (no {layout.releases_dir}); "
                         "refusing to remove it")
    if state == "absent" and releases_fd is None:
        raise DrootError(f"{layout.root} does not exist")
    with Lock(layout, lock_timeout) as lock:
        strays = layout.strays(lock.dir_fd)
        if strays:
            name = strays[0]
            raise DrootError(f"{layout.releases_dir / name} is "
                             f"{describe(None, lock.dir_fd, name)}, not something droot made; "
                             f"refusing to remove {layout.root} (move it away first)")
        releases = layout.releases(lock.dir_fd)
        paths = [release.path for release in releases]
        state = layout.state(lock.parent_fd)  # again: it may have changed meanwhile
        if state == "foreign":
            raise DrootError(f"{layout.root} is {describe(None, lock.parent_fd, layout.root.name)}"
                             ", not a release symlink or directory droot made; refusing to "
                             "remove it")
        if state == "directory":
            paths.append(layout.root)
        busy = inuse.in_use(paths)
        if busy:
            path, pid = next(iter(busy.items()))
            raise DrootError(f"{path} is in use by pid {pid} (a running app?); stop it first")
        if state == "symlink":
            os.unlink(layout.root.name, dir_fd=lock.parent_fd)
        elif state == "directory":
            remove_tree(lock.parent_fd, layout.root.name, layout.root)
        layout.remove_leftovers(lock)
        for release in releases:
            remove_tree(lock.dir_fd, release.name, release.path)
        removed = [release.name for release in releases]
        layout.write_deployed(lock, None)
        layout.write_rolled_back(lock, None)
        layout.forget_content(lock)
        layout.write_newest_push(lock, None)
        # The lock file goes last (waiting deploys notice it is gone and start afresh).
        os.unlink(LOCK_NAME, dir_fd=lock.dir_fd)
        os.rmdir(layout.releases_name, dir_fd=lock.parent_fd)
    return removed
