"""The Docker engine as an image source: create a container (never started), stream
`docker export` through, remove the container whatever happens.

`docker export` shows the container's root filesystem, which includes the engine's
"init layer": /.dockerenv, empty placeholder files for /etc/hostname, /etc/hosts,
/etc/resolv.conf and /dev/console (bind-mount targets), /etc/mtab -> /proc/mounts, and
empty /dev/pts and /dev/shm directories. None of them belong to the image, so they are
left out when they are the engine's placeholders. (The init layer hides an image's own
copies of these files from the engine's export; the daemonless sources keep them.)

The init layer is made when the container is created, so the directories it writes in
(/dev, /etc, /proc, /sys and the two mount points) show that moment as their mtime: two
exports of one image would differ. Their mtime is clamped to the image's creation time
(as SOURCE_DATE_EPOCH clamps a build's), and their headers are always made anew (the
engine's carry the file-type bits in the mode field, a re-made one does not): the stream
is the same on every export, whichever second the container was created in.
"""

import secrets
from datetime import datetime

from droot.core.errors import DrootError
from droot.image.engine import NoSuchImage, connect
from droot.core.releasefiles import DROOT_FILES
from droot.image.export import ImageConfig
from droot.image.tarstream import TarFormatError, TarReader, header_for
from droot.core.tarformat import DIRECTORY, OLD_REGULAR, REGULAR, SYMLINK

EMPTY_PLACEHOLDERS = frozenset(("etc/hostname", "etc/hosts", "etc/resolv.conf", "dev/console"))
MOUNT_DIRS = frozenset(("dev/pts", "dev/shm"))
INIT_LAYER_DIRECTORIES = frozenset(("dev", "etc", "proc", "sys", *MOUNT_DIRS))
LAST_INIT_LAYER_NAME = "sys"  # the engine walks in lexical order: nothing of it comes later


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
            copy_filesystem(TarReader(stream, f"the engine's export of {reference}"), output,
                            created_seconds(attrs.get("Created")))
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


def created_seconds(created: str | None) -> int:
    """The image's creation time (RFC 3339 from the engine), in whole seconds; 0 when
    absent, unreadable or before 1970 (Go's zero time)."""
    try:
        return max(0, int(datetime.fromisoformat(created).timestamp()))
    except (TypeError, ValueError):
        return 0


def header_of(entry, created: int) -> bytes:
    """The entry's header blocks, verbatim unless it is one of the init layer's
    directories (then re-made, dated `created` at the latest)."""
    if entry.path in INIT_LAYER_DIRECTORIES and entry.type == DIRECTORY:
        info = entry.tarinfo()
        info.mtime = min(info.mtime, created)
        return header_for(info)
    return entry.header


def copy_filesystem(reader: TarReader, output, created: int):
    """Copy the export through, entry headers and data verbatim, leaving out the engine's
    placeholders and dating its init layer's directories `created` at the latest. An
    empty /dev/pts or /dev/shm is only known to be empty at the next entry, so it is
    held back until then.

    The engine walks the root filesystem in lexical order, so all its placeholders (and
    droot's own files) come before the first top-level name after "sys": from there on
    the rest of the stream is copied as raw bytes, without looking at entries."""
    write = output.write
    held = None
    for entry in reader:
        path = entry.path
        if held is not None:
            if path.startswith(held.path + "/"):
                write(header_of(held, created))
            held = None
        if path in DROOT_FILES or is_placeholder(entry):
            continue
        if path in MOUNT_DIRS and entry.type == DIRECTORY:
            held = entry
            continue
        write(header_of(entry, created))
        reader.copy_data(write)
        if path.partition("/")[0] > LAST_INIT_LAYER_NAME:
            reader.copy_rest(write)
            return
