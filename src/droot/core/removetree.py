"""Remove a directory tree through descriptors, in a loop: shutil.rmtree recurses a frame
a level, so an image's tree of 2,048 levels (what PATH_MAX allows) was a RecursionError
that no deploy, prune or clean-up got past.

No symlink is followed, even one swapped in while it runs: each level is opened
O_NOFOLLOW in the one above, and going back up, `..` must be the directory it came
from. Only two descriptors are open at a time."""

import os

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeMoved(OSError):
    """A directory being removed was moved elsewhere meanwhile."""


def remove_tree(name, dir_fd: int | None = None):
    """Remove the directory `name` (of `dir_fd`, else of the working directory) and all
    it holds. What is gone already is not an error; anything else is an OSError."""
    try:
        fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    levels = []  # above fd: (its name there, that directory's identity, its subdirectories left)
    try:
        subdirectories = _clear(fd)
        while True:
            if subdirectories:
                below = subdirectories.pop()
                try:
                    child = os.open(below, DIRECTORY_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                levels.append((below, _identity(fd), subdirectories))
                os.close(fd)
                fd = child
                subdirectories = _clear(fd)
                continue
            if not levels:
                break
            below, identity, subdirectories = levels.pop()
            parent = os.open("..", DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if _identity(fd) != identity:
                raise TreeMoved(0, "it was moved while being removed")
            _rmdir(below, fd)
    finally:
        os.close(fd)
    _rmdir(name, dir_fd)


def _clear(fd: int) -> list[str]:
    """Unlink all but the directories in directory `fd`; return the directories' names."""
    subdirectories = []
    for name in os.listdir(fd):
        try:
            os.unlink(name, dir_fd=fd)
        except IsADirectoryError:
            subdirectories.append(name)
        except FileNotFoundError:
            pass
    return subdirectories


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _rmdir(name, dir_fd: int | None):
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
