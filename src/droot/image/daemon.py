"""The Docker engine as an image source: create a container (never started), stream
`docker export` through, remove the container whatever happens.

`docker export` shows the container's root filesystem, which includes the engine's
"init layer": /.dockerenv, empty placeholder files for /etc/hostname, /etc/hosts,
/etc/resolv.conf and /dev/console (bind-mount targets), /etc/mtab -> /proc/mounts, and
empty /dev/pts and /dev/shm directories. None of them belong to the image, so they are
left out when they are the engine's placeholders. (The init layer hides an image's own
copies of these files from the engine's export; the daemonless sources keep them.)
"""

import io
import os
import secrets
import signal
import threading
from contextlib import contextmanager

from droot.errors import DrootError
from droot.image.export import DROOT_FILES, ImageConfig
from droot.image.tarstream import DIRECTORY, OLD_REGULAR, REGULAR, SYMLINK, TarFormatError, TarReader

CHUNK = 1 << 20
EMPTY_PLACEHOLDERS = frozenset(("etc/hostname", "etc/hosts", "etc/resolv.conf", "dev/console"))
MOUNT_DIRS = frozenset(("dev/pts", "dev/shm"))


class Terminated(DrootError):
    exit_status = 143


@contextmanager
def sigterm_raises():
    """Turn SIGTERM into an exception while exporting, so cleanup (`finally`) runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated("terminated")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ChunkReader(io.RawIOBase):
    """A raw reader over an iterator of byte chunks (the engine's HTTP response)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._chunk = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self._chunk:
            try:
                self._chunk = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n


def engine_client():
    import docker
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        reason = str(error).split("\n")[0]
        raise DrootError(f"cannot reach the Docker engine at {where} ({reason}); start it, "
                         "set DOCKER_HOST, or export from docker-archive:, oci: or docker://") from None
    return client


def export_from_daemon(reference: str, output) -> ImageConfig:
    import docker
    client = engine_client()
    try:
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise DrootError(f"no image {reference!r} in the Docker engine (build or pull it "
                             "first, or name a docker-archive:, oci: or docker:// source)") from None
        except docker.errors.APIError as error:
            raise DrootError(f"the Docker engine cannot look up {reference!r}: {error.explanation}") from None
        config = ImageConfig.from_docker(image.attrs.get("Config"), image.id)
        name = f"droot-export-{secrets.token_hex(8)}"
        with sigterm_raises():
            try:
                # A command is given for images that have none; the container never runs.
                client.api.create_container(image.id, command=["/droot-export"], name=name,
                                            network_disabled=True, labels={"droot.export": "1"})
                stream = io.BufferedReader(ChunkReader(client.api.export(name, chunk_size=CHUNK)),
                                           buffer_size=CHUNK)
                copy_filesystem(TarReader(stream, f"the engine's export of {reference}"), output)
            except docker.errors.APIError as error:
                raise DrootError(f"the Docker engine failed to export {reference!r}: "
                                 f"{error.explanation}") from None
            except TarFormatError as error:
                raise DrootError(str(error)) from None
            finally:
                remove_container(client, name)
    finally:
        client.close()
    return config


def remove_container(client, name: str):
    import docker
    try:
        client.api.remove_container(name, force=True, v=True)  # with its anonymous volumes
    except docker.errors.NotFound:
        pass  # never created (create failed or was interrupted before it answered)


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
    entry, so it is held back until then."""
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
