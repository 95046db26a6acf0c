"""`droot export` itself: where the stream goes (stdout or -o FILE), compression, progress."""

import os
import sys
import tempfile

from droot.core.errors import UsageError


def run_export(args) -> int:
    from droot.image.export import export_image
    from droot.core.compression import compressing_writer
    from droot.core.progress import Progress

    to_stdout = args.output in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a tar archive to a terminal: redirect stdout "
                         "(droot export IMAGE > FILE) or use -o FILE")
    # SIGTERM raises (droot.cli), so that cleanup runs: the engine's container, the
    # partial -o file
    with Progress("export") as progress:
        if to_stdout:
            out = sys.stdout.buffer
            writer = compressing_writer(out, args.compress)
            export_image(args.image, writer, progress=progress, plain_http=args.plain_http)
            writer.close()
            out.flush()
            return 0
        with replaced_on_success(args.output) as out:
            writer = compressing_writer(out, args.compress)
            export_image(args.image, writer, progress=progress, plain_http=args.plain_http)
            writer.close()
    return 0


class replaced_on_success:
    """A file written under a temporary name beside `path`, renamed to `path` only when
    the block succeeds, and deleted otherwise: a failed export leaves no partial file."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self.temporary = tempfile.mkstemp(dir=directory,
                                                  prefix=f".{os.path.basename(self.path)}.",
                                                  suffix=".partial")
        except OSError as error:
            raise UsageError(f"cannot write {self.path}: {error.strerror}") from None
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        return self.file

    def __exit__(self, exc_type, exc, traceback):
        try:
            self.file.close()
            if exc_type is None:
                os.chmod(self.temporary, 0o666 & ~current_umask())
                os.replace(self.temporary, self.path)
                return False
        except BaseException:
            os.unlink(self.temporary)
            raise
        os.unlink(self.temporary)
        return False


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
