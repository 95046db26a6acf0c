"""The releases of a root: where they live, their names and order, the atomic switch, and
the lock that serialises everything that changes them.

Layout for `--root /srv/app` (symlink mode)::

    /srv/app            -> app.releases/000003-20261128T031502.123456Z-3f2a9c0d1e2b
    /srv/app.releases/  000001-…  000002-…  000003-…   the releases, one directory each
                        .lock                           flock(2) of deploy/rollback/rm
                        .tmp-PID-RANDOM                 an extraction in progress

A release name is `SEQUENCE-UTCTIME-DIGEST`: the sequence number records the deploy order
(so pruning and rollback never trust mtimes or clocks), the time with microseconds is for
people, and the digest is the start of the archive's SHA-256. The switch writes a new
symlink under a temporary name and rename(2)s it over the root: a reader sees the old
release or the new one, never a mix or nothing.
"""

import errno
import fcntl
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from droot.errors import DrootError, UsageError

RELEASE_NAME = re.compile(r"^(\d{6,})-(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{12})$")
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"


class Release:
    def __init__(self, path: Path, sequence: int, deployed: str, digest: str):
        self.path = path
        self.name = path.name
        self.sequence = sequence
        self.deployed = deployed
        self.digest = digest


class Layout:
    """The paths that belong to one root directory."""

    def __init__(self, root):
        if not str(root).strip():
            raise UsageError("--root is empty: give the app's directory")
        root = Path(os.path.abspath(root))
        if root == Path("/") or not root.name:
            raise DrootError(f"--root {root}: refusing to manage the filesystem root")
        self.root = root
        self.releases_dir = root.parent / f"{root.name}.releases"
        self.lock_path = self.releases_dir / LOCK_NAME
        self.switch_path = root.parent / f".{root.name}.switch"

    def releases(self) -> list[Release]:
        """The releases in deploy order, oldest first."""
        found = []
        try:
            names = os.listdir(self.releases_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        for name in names:
            match = RELEASE_NAME.match(name)
            if match:
                found.append(Release(self.releases_dir / name, int(match[1]),
                                     match[2], match[3]))
        return sorted(found, key=lambda release: release.sequence)

    def current(self) -> str | None:
        """The name of the release the root points at, or None when it is not a symlink
        into our releases directory."""
        try:
            target = os.readlink(self.root)
        except (FileNotFoundError, OSError):
            return None
        target_path = Path(target) if os.path.isabs(target) else self.root.parent / target
        if target_path.parent != self.releases_dir or not RELEASE_NAME.match(target_path.name):
            return None
        return target_path.name

    def state(self) -> str:
        """'absent', 'symlink' (ours), 'directory' (a real directory: rsync mode or a
        legacy deploy) or 'foreign' (something else, never touched)."""
        try:
            info = os.lstat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return "absent"
        if os.path.islink(self.root):
            return "symlink" if self.current() else "foreign"
        import stat
        return "directory" if stat.S_ISDIR(info.st_mode) else "foreign"

    def new_release_name(self, digest: str) -> str:
        releases = self.releases()
        sequence = releases[-1].sequence + 1 if releases else 1
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{sequence:06d}-{now}-{digest[:12]}"

    def switch(self, name: str):
        """Point the root at release `name`, atomically, and make that durable."""
        if os.path.lexists(self.switch_path):
            os.unlink(self.switch_path)
        os.symlink(f"{self.releases_dir.name}/{name}", self.switch_path)
        os.rename(self.switch_path, self.root)
        fsync_directory(self.root.parent)

    def leftovers(self) -> list[Path]:
        """What interrupted deploys left behind (only safe to remove under the lock)."""
        found = [self.switch_path] if os.path.lexists(self.switch_path) else []
        try:
            found += [self.releases_dir / name for name in os.listdir(self.releases_dir)
                      if name.startswith(TEMP_PREFIX)]
        except (FileNotFoundError, NotADirectoryError):
            pass
        return found


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Lock:
    """An exclusive flock(2) on DIR.releases/.lock, held while a deploy, rollback or rm
    changes the root. `timeout` None waits as long as it takes; 0 fails at once. The fd
    is inherited by the extraction child, so the lock outlives a killed parent until the
    child is gone too."""

    POLL_SECONDS = 0.05

    def __init__(self, layout: Layout, timeout: float | None = None):
        self.layout = layout
        self.timeout = timeout
        self.fd = -1

    def __enter__(self):
        self._make_directory()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fd = os.open(self.layout.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o644)
            except FileNotFoundError:  # an rm, or a failed first deploy, removed the directory
                self._make_directory()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                if deadline is not None and time.monotonic() >= deadline:
                    raise DrootError(
                        f"{self.layout.root} is locked by another deploy, rollback or rm "
                        f"(pid {holder or '?'}); try again later or raise --lock-timeout")
                if not told:
                    print(f"droot: waiting for another deploy to {self.layout.root} "
                          f"(pid {holder or '?'})", file=sys.stderr)
                    told = True
                time.sleep(self.POLL_SECONDS)
                continue
            # `droot rm` unlinks the lock file last: a lock on a removed file locks nothing.
            try:
                same = os.stat(self.layout.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                self._make_directory()
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return self

    def _make_directory(self):
        try:
            self.layout.releases_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise DrootError(f"cannot create {self.layout.releases_dir}: "
                             f"{error.strerror}") from None

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def remove_tree(path: Path):
    """Remove a release or leftover (never following its symlinks)."""
    import shutil
    try:
        if os.path.islink(path) or not path.is_dir():
            os.unlink(path)
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise DrootError(f"cannot remove {path}: {error.strerror}") from None
