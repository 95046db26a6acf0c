"""The Docker engine as an image source: create a container (never started), stream
`docker export` through, remove the container whatever happens.

`docker export` shows the container's root filesystem, which includes the engine's
"init layer": /.dockerenv, empty placeholder files for /etc/hostname, /etc/hosts,
/etc/resolv.conf and /dev/console (bind-mount targets), /etc/mtab -> /proc/mounts, and
empty /dev/pts and /dev/shm directories. None of them belong to the image, so they are
left out when they are the engine's placeholders. (The init layer hides an image's own
copies of these files from the engine's export; the daemonless sources keep them.)
"""

import secrets

from droot.core.errors import DrootError
from droot.image.engine import NoSuchImage, connect
from droot.core.releasefiles import DROOT_FILES
from droot.image.export import ImageConfig
from droot.image.tarstream import TarFormatError, TarReader
from droot.core.tarformat import DIRECTORY, OLD_REGULAR, REGULAR, SYMLINK

EMPTY_PLACEHOLDERS = frozenset(("etc/hostname", "etc/hosts", "etc/resolv.conf", "dev/console"))
MOUNT_DIRS = frozenset(("dev/pts", "dev/shm"))
LAST_PLACEHOLDER_DIRECTORY = "etc"


def export_from_daemon(reference: str, output) -> ImageConfig:
    engine = connect()
    try:
        try:
            attrs = engine.image(reference)
        except NoSuchImage:
            raise DrootError(f"no image {reference!r} in the Docker engine (build or pull it "
                             "first, or name a docker-archive:, oci: or docker:// source)") from None
        config = ImageConfig.from_docker(attrs.get("Config"), attrs["Id"])
        name = f"droot-export-{secrets.token_hex(8)}"
        try:  # SIGTERM raises here too (droot.cli), so the container is removed
            engine.create(attrs["Id"], name)
            stream = engine.export(name)
            copy_filesystem(TarReader(stream, f"the engine's export of {reference}"), output)
        except TarFormatError as error:
            raise DrootError(str(error)) from None
        finally:
            engine.remove(name)
    finally:
        engine.close()
    return config


def is_placeholder(entry) -> bool:
    if entry.path == ".dockerenv":
        return True
    if entry.path in EMPTY_PLACEHOLDERS:
        return entry.type in (REGULAR, OLD_REGULAR) and entry.size == 0
    if entry.path == "etc/mtab":
        return entry.type == SYMLINK and entry.linkname == "/proc/mounts"
    return False


def copy_filesystem(reader: TarReader, output):
    """Copy the export through, entry headers and data verbatim, leaving out the engine's
    placeholders. An empty /dev/pts or /dev/shm is only known to be empty at the next
    entry, so it is held back until then.

    The engine walks the root filesystem in lexical order, so all its placeholders (and
    droot's own files) come before the first top-level name after "etc": from there on
    the rest of the stream is copied as raw bytes, without looking at entries."""
    write = output.write
    held = None
    for entry in reader:
        path = entry.path
        if held is not None:
            if path.startswith(held.path + "/"):
                write(held.header)
            held = None
        if path in DROOT_FILES or is_placeholder(entry):
            continue
        if path in MOUNT_DIRS and entry.type == DIRECTORY:
            held = entry
            continue
        write(entry.header)
        reader.copy_data(write)
        if path.partition("/")[0] > LAST_PLACEHOLDER_DIRECTORY:
            reader.copy_rest(write)
            return
