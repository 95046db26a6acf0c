"""Droot's one way to replace a file: write a temporary file beside it, fsync, rename.

A reader sees the old file or the new one, never a mix; a failure or a crash leaves the
old one whole and no temporary file (after a crash, at worst a `.NAME.droot-*` file). The
data and the rename are both made durable (fsync of the file, then of its directory)
before `commit` returns, so a reported success survives a power cut.

The directory is given as a descriptor, resolved once by the caller (inside a chroot, by
openat2): the temporary file is created in it with O_EXCL | O_NOFOLLOW, mode 0600 until
complete, so no one else can open it, and the rename never follows a symlink at the name.
Standard library only: `droot run` uses it.
"""

import os

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class AtomicFile:
    """A new file that replaces `name` in `directory` (a descriptor the caller keeps and
    closes) on `commit()`, with `mode` (and `owner`:`group` when given), and is deleted on
    `abort()`. As a context manager it gives the file object, commits when the block
    succeeds and aborts when it raises."""

    def __init__(self, directory: int, name: str, mode: int, *, owner: int | None = None,
                 group: int | None = None, buffering: int = -1):
        self.directory, self.name, self.mode = directory, name, mode
        self.owner = -1 if owner is None else owner
        self.group = -1 if group is None else group
        self.temporary = f".{name}.droot-{os.getpid()}-{os.urandom(4).hex()}"
        descriptor = os.open(self.temporary, _CREATE, 0o600, dir_fd=directory)
        self.file = os.fdopen(descriptor, "wb", buffering)

    def commit(self) -> None:
        try:
            self.file.flush()
            if (self.owner, self.group) != (-1, -1):
                os.fchown(self.file.fileno(), self.owner, self.group)
            os.fchmod(self.file.fileno(), self.mode)
            os.fsync(self.file.fileno())
            self.file.close()
            os.rename(self.temporary, self.name, src_dir_fd=self.directory,
                      dst_dir_fd=self.directory)
        except BaseException:
            self.abort()
            raise
        sync_directory(self.directory)

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # a failed flush of data that is discarded anyway
        try:
            os.unlink(self.temporary, dir_fd=self.directory)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def sync_directory(directory: int) -> None:
    """fsync a directory given by any descriptor, O_PATH ones included (which fsync
    refuses): through a readable descriptor of the same directory."""
    readable = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
    try:
        os.fsync(readable)
    finally:
        os.close(readable)


def open_directory(path: str) -> int:
    """A descriptor of the directory `path`, for AtomicFile."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def default_file_mode() -> int:
    """0666 less the process's umask: the mode open(2) would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
