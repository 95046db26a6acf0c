"""Files of the image that droot itself reads or writes, by paths the image controls.

`/.drootenv`, `/.droot.json`, `/etc/passwd`, `/etc/group`, the `--cp` files and the bind
targets are all named by the image's own tree, which may lead anywhere through symbolic
links. Two layers keep every such path inside the root:

- droot does this work after chroot and *before* it mounts /proc, so no magic link
  (`/proc/<pid>/root`, `/proc/self/fd/N`) exists yet in the tree it walks;
- every path is opened with openat2(2) and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`
  (Linux 5.6+), so even a magic link present already (a host /proc an older run left
  mounted in the root) is refused, and absolute or `..` links stay beneath the root.

On a kernel without openat2 the first layer stands alone; droot says so once on stderr.
Directories droot creates get mode 0755, files it writes the mode asked for (owner-only
while they are written). What droot reads must be a regular file of a sane size.
"""

import errno
import os
import stat
import sys

from droot.core import kernel
from droot.core.atomicfile import AtomicFile

_RESOLVE = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS
MAX_FILE_SIZE = 16 << 20  # /etc/passwd, /.drootenv and the like: far below
_have_openat2 = True


def open_in_root(path: str, flags: int, mode: int = 0o600, root: str = "/") -> int:
    """A descriptor of `path`, resolved as if `root` (by default the process root) were
    the only root and through no magic link."""
    global _have_openat2
    if _have_openat2:
        root_path, root = root, os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return kernel.openat2(root, path, flags, mode, _RESOLVE)
        except OSError as error:
            if error.errno != errno.ENOSYS:
                if error.errno == errno.ELOOP:  # what RESOLVE_NO_MAGICLINKS says too
                    raise OSError(errno.ELOOP, "a /proc magic link (refused), or a loop of "
                                  "symbolic links", path) from None
                raise
            _have_openat2 = False
            if root_path != "/":
                raise
            print("droot: warning: this kernel has no openat2(2) (Linux < 5.6): the image's "
                  "files are read before /proc is mounted, but a magic link already mounted "
                  "in the root is not refused", file=sys.stderr)
        finally:
            os.close(root)
    if root != "/":
        raise OSError(errno.ENOSYS, "no openat2(2) to open it safely", path)
    return os.open(path, flags | os.O_CLOEXEC, mode)


def read_file(path: str, root: str = "/") -> bytes | None:
    """The contents of the image's regular file `path`, at most MAX_FILE_SIZE bytes; None
    when it does not exist. A FIFO or device there is refused, not read (it could block
    droot, or feed it a host disk)."""
    try:
        descriptor = open_in_root(path, os.O_RDONLY | os.O_NONBLOCK, root=root)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        return read_regular(file, path)


def read_regular(file, path: str) -> bytes:
    """The contents of the open `file`, which must be a regular file of a sane size."""
    require_regular(file.fileno(), path)
    data = file.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise OSError(errno.EFBIG, f"larger than {MAX_FILE_SIZE >> 20} MiB", path)
    return data


def read_text(path: str, root: str = "/") -> str | None:
    data = read_file(path, root)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def require_regular(descriptor: int, path: str) -> None:
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)


def make_directories(path: str) -> int:
    """An O_PATH descriptor of the directory `path`, creating each missing one (0755)."""
    parts = [part for part in path.split("/") if part]
    directory = open_in_root("/", os.O_PATH | os.O_DIRECTORY)
    for depth in range(len(parts)):
        sub = "/" + "/".join(parts[:depth + 1])
        try:
            following = open_in_root(sub, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            try:
                os.mkdir(parts[depth], 0o755, dir_fd=directory)
            except FileExistsError:
                pass  # made meanwhile (another run), or a dangling link: the open decides
            following = open_in_root(sub, os.O_PATH | os.O_DIRECTORY)
        os.close(directory)
        directory = following
    return directory


def make_file(path: str) -> int:
    """An O_PATH descriptor of the file `path` (its directories made as needed), created
    empty with mode 0644 when missing."""
    try:
        return open_in_root(path, os.O_PATH)
    except FileNotFoundError:
        pass
    parent = make_directories(os.path.dirname(path))
    try:
        os.close(os.open(os.path.basename(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent))
    except FileExistsError:
        pass
    finally:
        os.close(parent)
    return open_in_root(path, os.O_PATH)


def write_atomically(path: str, data: bytes, mode: int, owner: int = 0, group: int = 0) -> None:
    """Write `data` to a new file beside `path` and rename it over `path`: a reader sees
    the old file or the new one, never a mix, and a crash never loses the old one. A
    symbolic link at `path` is replaced, not followed; missing directories are made."""
    parent = make_directories(os.path.dirname(path))
    try:
        with AtomicFile(parent, os.path.basename(path), mode, owner=owner, group=group) as file:
            file.write(data)
    finally:
        os.close(parent)
