"""Writing a file of the image without ever leaving half of it behind."""

import os


def write_atomically(path: str, data: bytes, mode: int, owner: int = 0, group: int = 0) -> None:
    """Write `data` to a new file beside `path` and rename it over `path`: a reader sees
    the old file or the new one, never a mix, and a crash never loses the old one. A
    symbolic link at `path` is replaced, not followed."""
    temporary = f"{path}.droot-{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fchown(file.fileno(), owner, group)
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
