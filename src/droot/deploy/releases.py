"""The releases of a root: where they live, their names and order, the atomic switch, and
the lock that serialises everything that changes them.

Layout for `--root /srv/app` (symlink mode)::

    /srv/app            -> app.releases/000003-20261128T031502.123456Z-3f2a9c0d1e2b
    /srv/app.releases/  000001-…  000002-…  000003-…   the releases, one directory each
                        .lock                           flock(2) of deploy/rollback/rm
                        .tmp-PID-RANDOM                 an extraction in progress
                        .deployed                       what the current release came from
                        .rolled-back                    the release a --check rolled back
                        .content                        the files of the newest delta release
                        .newest-push                    the newest signed push accepted

A release name is `SEQUENCE-UTCTIME-DIGEST`: the sequence number records the deploy order
(so pruning and rollback never trust mtimes or clocks), the time with microseconds is for
people, and the digest is the start of the archive's SHA-256. The switch writes a new
symlink under a temporary name and rename(2)s it over the root: a reader sees the old
release or the new one, never a mix or nothing.

Everything that changes the releases works through directory descriptors, never by
re-resolving paths: the root's parent is opened once (its path is the operator's, and may
go through symlinks), `ROOT.releases` is opened from it with O_NOFOLLOW, and every entry is
looked at, removed or switched to relative to that descriptor. droot only uses what it
could have made itself: `ROOT.releases` must be a real directory owned by root (or the
caller) and writable by nobody else (so nobody else can swap an entry between a check and
its use), a release must be a real directory in it, and anything else there (a symlink, a
file, a stray name) is refused by rollback and rm and left alone by pruning.

`.deployed` records, in JSON, the archive the current state was deployed from: the
release's name (null in rsync mode), the archive's full SHA-256, where it came from and
the key that signed it. `pull --if-changed` compares it with the store's checksum. It is
only a hint: a record that is missing, unreadable or of another release (after a
rollback) means "unknown", and the pull goes ahead.

`.rolled-back` records, in JSON, the release that `--restart`/`--check` last rolled back
(its SHA-256, name, source and when), so that `pull --if-changed` does not deploy the same
failing release at every poll; a successful deploy removes it. Replaced atomically
(AtomicFile), mode 0600, in the root-only ROOT.releases.

`.content` lists, for the newest release a delta pull made, each file's verified digest
and its inode's identity and ctime when it was made (droot.deploy.reuse), so that the next
delta pull can reuse an unchanged file without reading it. Same care as `.rolled-back`.

`.newest-push` records, in JSON, the newest push time (and that release's SHA-256,
source and signer) of the signed releases deployed with --trusted-keys, so that an
older signed release put back in the store is refused (droot.deploy.deploy). Written
the same way; not a hint: one that cannot be read is an error, not "no record", since
that would drop the protection silently. `droot rm` removes it with the root.
"""

import errno
import fcntl
import json
import os
import stat
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from droot.core import removetree
from droot.core.atomicfile import AtomicFile
from droot.core.errors import DrootError, UsageError
from droot.core.releasename import RELEASE_NAME, releases_dir_name
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
DEPLOYED_NAME = ".deployed"
ROLLED_BACK_NAME = ".rolled-back"
CONTENT_NAME = ".content"
NEWEST_PUSH_NAME = ".newest-push"
RECORDS = (DEPLOYED_NAME, ROLLED_BACK_NAME, CONTENT_NAME, NEWEST_PUSH_NAME)
RECORD_LIMIT = 64 << 10

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_FOLLOW = _DIRECTORY | os.O_NOFOLLOW


class Release:
    """An entry of the releases directory whose name has a release's shape. `directory`
    is False when it is not a real directory (a symlink, a file): droot never made it."""

    def __init__(self, path: Path, sequence: int, deployed: str, digest: str,
                 directory: bool = True):
        self.path = path
        self.name = path.name
        self.sequence = sequence
        self.deployed = deployed
        self.digest = digest
        self.directory = directory


def describe(path, dir_fd: int | None = None, name: str | None = None) -> str:
    """What an entry that is not what droot made is ("a symlink to /etc", "a regular
    file", ...), looked at without following it."""
    name = name if name is not None else str(path)
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return "gone"
    if stat.S_ISLNK(info.st_mode):
        return f"a symlink to {os.readlink(name, dir_fd=dir_fd)}"
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(info.st_mode) else "a special file"


def _is_directory(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return False


class Layout:
    """The paths that belong to one root directory, and their descriptors."""

    def __init__(self, root):
        if not str(root).strip():
            raise UsageError("--root is empty: give the app's directory")
        root = Path(os.path.abspath(root))
        if root == Path("/") or not root.name:
            raise DrootError(f"--root {root}: refusing to manage the filesystem root")
        self.root = root
        self.releases_name = releases_dir_name(root.name)
        self.releases_dir = root.parent / self.releases_name
        self.lock_path = self.releases_dir / LOCK_NAME
        self.switch_name = f".{root.name}.switch"
        self.switch_path = root.parent / self.switch_name

    def open_parent(self) -> int | None:
        """The directory holding the root (its path is the operator's: it may go through
        symlinks), or None when it does not exist."""
        try:
            return os.open(self.root.parent, _DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_releases(self, parent_fd: int) -> int | None:
        """ROOT.releases opened from its parent without following a symlink, or None when
        absent. Refused unless it is a real directory that only its owner, root or the
        caller, can change: anyone else who can write in it could swap a release for a
        symlink between droot's check and its use."""
        try:
            fd = os.open(self.releases_name, _NO_FOLLOW, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        except (NotADirectoryError, OSError) as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise DrootError(f"cannot open {self.releases_dir}: {error.strerror}") from None
            raise DrootError(
                f"{self.releases_dir} is {describe(None, parent_fd, self.releases_name)}, "
                "not the directory droot made; refusing to use it (move it away)") from None
        info = os.fstat(fd)
        if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
            os.close(fd)
            whose = (f"owned by uid {info.st_uid}" if info.st_uid not in (0, os.geteuid())
                     else "writable by group or others")
            raise DrootError(f"{self.releases_dir} is {whose}: someone else could swap its "
                             "releases; refusing to use it (chown root and chmod go-w it)")
        return fd

    def through_releases(self, use, absent):
        """use(a descriptor of ROOT.releases, opened for the call), or `absent` when there
        is no such directory."""
        parent_fd = self.open_parent()
        if parent_fd is None:
            return absent
        try:
            releases_fd = self.open_releases(parent_fd)
        finally:
            os.close(parent_fd)
        if releases_fd is None:
            return absent
        try:
            return use(releases_fd)
        finally:
            os.close(releases_fd)

    def releases(self, dir_fd: int | None = None, *, everything: bool = False) -> list[Release]:
        """The releases in deploy order, oldest first: the real directories of
        ROOT.releases with a release's name (with `everything`, also the entries of that
        name that are not: symlinks, files). Without `dir_fd` it opens the directory."""
        if dir_fd is None:
            return self.through_releases(
                lambda own_fd: self.releases(own_fd, everything=everything), [])
        found = []
        for name in os.listdir(dir_fd):
            match = RELEASE_NAME.match(name)
            if match:
                directory = _is_directory(name, dir_fd)
                if directory or everything:
                    found.append(Release(self.releases_dir / name, int(match[1]),
                                         match[2], match[3], directory))
        return sorted(found, key=lambda release: release.sequence)

    def current(self, parent_fd: int | None = None) -> str | None:
        """The name of the release the root points at, or None when it is not a symlink
        into our releases directory."""
        try:
            if parent_fd is None:
                target = os.readlink(self.root)
            else:
                target = os.readlink(self.root.name, dir_fd=parent_fd)
        except OSError:
            return None
        target_path = Path(target) if os.path.isabs(target) else self.root.parent / target
        if target_path.parent != self.releases_dir or not RELEASE_NAME.match(target_path.name):
            return None
        return target_path.name

    def state(self, parent_fd: int | None = None) -> str:
        """'absent', 'symlink' (ours), 'directory' (a real directory: rsync mode or a
        legacy deploy) or 'foreign' (something else, never touched)."""
        try:
            if parent_fd is None:
                info = os.lstat(self.root)
            else:
                info = os.lstat(self.root.name, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError):
            return "absent"
        if stat.S_ISLNK(info.st_mode):
            return "symlink" if self.current(parent_fd) else "foreign"
        return "directory" if stat.S_ISDIR(info.st_mode) else "foreign"

    def new_release_name(self, dir_fd: int, digest: str) -> str:
        # Numbered after every entry of a release's shape, a planted symlink too: the new
        # release never lands on (or beside, in the same place of the order) one of them.
        releases = self.releases(dir_fd, everything=True)
        sequence = releases[-1].sequence + 1 if releases else 1
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{sequence:06d}-{now}-{digest[:12]}"

    def check_release(self, dir_fd: int, name: str):
        """Refuse to use `name` unless it is a real directory in ROOT.releases."""
        if not _is_directory(name, dir_fd):
            raise DrootError(f"{self.releases_dir / name} is {describe(None, dir_fd, name)}, "
                             "not a release droot made; refusing to switch to it "
                             "(remove it, or choose another release)")

    def switch(self, lock: "Lock", name: str):
        """Point the root at release `name` (a real directory in ROOT.releases, checked
        here), atomically, and make that durable."""
        self.check_release(lock.dir_fd, name)
        self._remove_switch_link(lock.parent_fd)
        os.symlink(f"{self.releases_name}/{name}", self.switch_name, dir_fd=lock.parent_fd)
        os.rename(self.switch_name, self.root.name, src_dir_fd=lock.parent_fd,
                  dst_dir_fd=lock.parent_fd)
        os.fsync(lock.parent_fd)

    def _remove_switch_link(self, parent_fd: int):
        try:
            info = os.lstat(self.switch_name, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        if not stat.S_ISLNK(info.st_mode):
            raise DrootError(f"{self.switch_path} is {describe(None, parent_fd, self.switch_name)}"
                             ", not the link droot makes to switch; refusing to remove it "
                             "(move it away)")
        os.unlink(self.switch_name, dir_fd=parent_fd)

    def read_deployed(self) -> dict | None:
        """The `.deployed` record, if it describes the root as it is now (else None)."""
        record, now = self._read_record(DEPLOYED_NAME)
        return record if record and record.get("release") == now else None

    def read_rolled_back(self) -> dict | None:
        """The `.rolled-back` record (None when there is none, or it cannot be read)."""
        return self._read_record(ROLLED_BACK_NAME)[0]

    def _read_record(self, name: str) -> tuple[dict | None, str | None]:
        """The JSON record `name` of ROOT.releases if it holds a "sha256" (else None), and
        the current release; (None, None) unless the root is one droot deployed."""
        parent_fd = self.open_parent()
        if parent_fd is None:
            return None, None
        try:
            state = self.state(parent_fd)
            if state not in ("symlink", "directory"):
                return None, None
            now = self.current(parent_fd) if state == "symlink" else None
            releases_fd = self.open_releases(parent_fd)
            if releases_fd is None:
                return None, None
            try:
                record = _load_record(releases_fd, name)
            finally:
                os.close(releases_fd)
        except (ValueError, OSError):
            return None, None
        finally:
            os.close(parent_fd)
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return None, now
        return record, now

    def write_deployed(self, lock: "Lock", record: dict | None):
        """Write the `.deployed` record (None: remove it) under the lock. Not synced: a
        record lost in a crash only costs the next --if-changed pull a download."""
        _remove(lock.dir_fd, DEPLOYED_NAME)
        if record is not None:
            fd = os.open(DEPLOYED_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=lock.dir_fd)
            with open(fd, "w") as out:
                json.dump(record, out)

    def write_rolled_back(self, lock: "Lock", record: dict | None):
        """Replace the `.rolled-back` record (None: remove it) under the lock: atomically and
        durably, since it is what keeps a poller from redeploying a failing release."""
        _replace_record(lock, ROLLED_BACK_NAME, record)

    def read_newest_push(self, dir_fd: int | None = None) -> dict | None:
        """The `.newest-push` record ({"pushed": NS, "sha256": ..., ...}), None when there is
        none; one that cannot be read is a DrootError. Without `dir_fd` (ROOT.releases,
        under the lock) it opens the directory."""
        if dir_fd is None:
            return self.through_releases(self.read_newest_push, None)
        shown = self.releases_dir / NEWEST_PUSH_NAME
        record = None
        try:
            record = _load_record(dir_fd, NEWEST_PUSH_NAME)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if not isinstance(record, dict) or type(record.get("pushed")) is not int:
            raise DrootError(f"{shown} is not a record droot wrote (it holds the newest push "
                             "time accepted here, which --trusted-keys refuses to go below); "
                             "remove it to accept a signed release of any age")
        return record

    def write_newest_push(self, lock: "Lock", record: dict | None):
        """Replace the `.newest-push` record (None: remove it) under the lock, atomically
        and durably: it is what refuses an old release put back in the store."""
        _replace_record(lock, NEWEST_PUSH_NAME, record)

    def forget_content(self, lock: "Lock"):
        """Remove the `.content` record (droot.deploy.reuse writes it)."""
        _remove(lock.dir_fd, CONTENT_NAME)

    def strays(self, dir_fd: int) -> list[str]:
        """The entries of ROOT.releases droot did not make: anything but the lock file,
        the records, release directories and staging directories."""
        found = []
        for name in sorted(os.listdir(dir_fd)):
            if name in (LOCK_NAME, *RECORDS) or _record_leftover(name):
                if not stat.S_ISREG(os.lstat(name, dir_fd=dir_fd).st_mode):
                    found.append(name)
            elif not ((RELEASE_NAME.match(name) or name.startswith(TEMP_PREFIX))
                      and _is_directory(name, dir_fd)):
                found.append(name)
        return found

    def remove_leftovers(self, lock: "Lock"):
        """Remove what interrupted deploys left behind (only under the lock): the switch
        link, staging directories and a record's temporary file. A leftover's name on
        something droot does not make there (a file, a symlink) is refused, not removed."""
        self._remove_switch_link(lock.parent_fd)
        for name in os.listdir(lock.dir_fd):
            if _record_leftover(name) and stat.S_ISREG(os.lstat(name, dir_fd=lock.dir_fd)
                                                       .st_mode):
                _remove(lock.dir_fd, name)
            if name.startswith(TEMP_PREFIX):
                if not _is_directory(name, lock.dir_fd):
                    raise DrootError(
                        f"{self.releases_dir / name} is {describe(None, lock.dir_fd, name)}, "
                        "not a directory droot made; refusing to remove it (move it away)")
                remove_tree(lock.dir_fd, name, self.releases_dir / name)


class Lock:
    """An exclusive flock(2) on DIR.releases/.lock, held while a deploy, rollback or rm
    changes the root. `timeout` None waits as long as it takes; 0 fails at once. The fd
    is inherited by the extraction child, so the lock outlives a killed parent until the
    child is gone too. While held, `parent_fd` is the root's parent directory and `dir_fd`
    ROOT.releases (opened without following a symlink, see Layout.open_releases): all the
    work under the lock goes through them."""

    POLL_SECONDS = 0.05

    def __init__(self, layout: Layout, timeout: float | None = None):
        self.layout = layout
        self.timeout = timeout
        self.fd = self.dir_fd = self.parent_fd = -1

    def __enter__(self):
        try:
            return self._lock()
        except BaseException:
            self.__exit__()
            raise

    def _lock(self):
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        told = False
        while True:
            self._close()
            self._open_directories()
            try:
                fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                             | os.O_NONBLOCK, 0o644, dir_fd=self.dir_fd)
            except FileNotFoundError:  # an rm, or a failed first deploy, removed the directory
                continue
            except OSError as error:
                raise DrootError(f"{self.layout.lock_path} is "
                                 f"{describe(None, self.dir_fd, LOCK_NAME)}, not droot's lock "
                                 f"file ({error.strerror}); refusing to use it") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise DrootError(f"{self.layout.lock_path} is not a regular file, not droot's "
                                 "lock file; refusing to use it")
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
                same = os.stat(LOCK_NAME, dir_fd=self.dir_fd,
                               follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return self

    def _open_directories(self):
        """The root's parent and ROOT.releases, created when missing."""
        layout = self.layout
        try:
            try:
                self.parent_fd = os.open(layout.root.parent, _DIRECTORY)
            except FileNotFoundError:
                layout.root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                self.parent_fd = os.open(layout.root.parent, _DIRECTORY)
            try:
                os.mkdir(layout.releases_name, 0o700, dir_fd=self.parent_fd)
            except FileExistsError:
                pass
        except OSError as error:
            raise DrootError(f"cannot create {layout.releases_dir}: "
                             f"{error.strerror}") from None
        self.dir_fd = layout.open_releases(self.parent_fd)
        if self.dir_fd is None:  # removed between the mkdir and the open: again
            self.dir_fd = -1
            self._open_directories()
        elif os.fstat(self.dir_fd).st_mode & 0o077:
            # Only root may reach the releases: a setuid-root program in an image (or one
            # an app made) would otherwise make any local user root. Older deploys made
            # it 0755; the next one tightens it.
            os.fchmod(self.dir_fd, 0o700)

    def _close(self):
        for name in ("fd", "dir_fd", "parent_fd"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)

    def __exit__(self, *exc):
        self._close()


def _record_leftover(name: str) -> bool:
    """The temporary file of a record whose writer was killed (AtomicFile)."""
    return name.startswith(tuple(f".{record}.droot-" for record in RECORDS))


def _load_record(dir_fd: int, name: str):
    """The JSON value of record `name` of ROOT.releases (OSError, ValueError)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    with open(fd, "rb") as record_file:
        return json.loads(record_file.read(RECORD_LIMIT))


def _replace_record(lock: Lock, name: str, record: dict | None):
    """The JSON record `name` of ROOT.releases replaced by `record` (None: removed):
    root's, mode 0600, atomic and durable (AtomicFile)."""
    if record is None:
        _remove(lock.dir_fd, name)
        return
    with AtomicFile(lock.dir_fd, name, 0o600, owner=0, group=0) as out:
        out.write(json.dumps(record).encode())


def _remove(dir_fd: int, name: str):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def remove_tree(dir_fd: int, name: str, shown: Path):
    """Remove the directory `name` of `dir_fd` and everything in it, through descriptors
    (droot.core.removetree: no symlink followed, even one swapped in while it runs);
    `shown` is its path for messages."""
    try:
        removetree.remove_tree(name, dir_fd)
    except OSError as error:
        raise DrootError(f"cannot remove {shown}: {error.strerror or error}") from None
