"""`droot export` itself: where the stream goes (stdout or -o FILE), compression, progress."""

import contextlib
import os
import sys

from droot.core.atomicfile import AtomicFile, default_file_mode, open_directory
from droot.core.errors import DrootError, UsageError


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


@contextlib.contextmanager
def replaced_on_success(path: str):
    """-o FILE, written under a temporary name beside FILE and renamed over it only when
    the block succeeds (droot.core.atomicfile), deleted otherwise: a failed export leaves
    no partial file."""
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path}: it is a directory")
    try:
        directory = open_directory(os.path.dirname(os.path.abspath(path)))
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None
    try:
        try:
            output = AtomicFile(directory, os.path.basename(path), default_file_mode(),
                                buffering=1 << 20)
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror}") from None
        try:
            yield output.file
        except BaseException:
            output.abort()
            raise
        try:
            output.commit()
        except OSError as error:
            raise DrootError(f"cannot write {path}: {error.strerror}") from None
    finally:
        os.close(directory)
