"""Image files on disk: `docker save` archives (docker-archive:PATH[:REF]) and OCI image
layout directories (oci:PATH[:TAG]). Layers are read in place, never copied: a layer
inside a docker-archive is a byte range of the archive file."""

import hashlib
import io
import json
import os
import posixpath
import stat

from droot.core.errors import DrootError
from droot.image.blobs import (INDEX_TYPES, READ_BUFFER, Image, Layer, VerifyingRaw,
                               VerifyingReader, checked_digest, choose_manifest,
                               config_from_document, descriptor as checked_descriptor,
                               manifest_layers, uncompressed, verified_json)
from droot.image.tarstream import TarFormatError, TarReader, normalise
from droot.core.tarformat import CONTIGUOUS, HARDLINK, OLD_REGULAR, REGULAR, SYMLINK

OCI_REF_NAME = "org.opencontainers.image.ref.name"


class Section(io.RawIOBase):
    """The byte range [start, start + size) of a file, as a seekable raw stream."""

    def __init__(self, path: str, start: int, size: int, opener=None):
        self._file = open(path, "rb", buffering=0, opener=opener)
        self._start = start
        self._end = start + size
        self._position = start

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self._end - self._position)
        if n <= 0:
            return 0
        n = os.preadv(self._file.fileno(), [memoryview(buffer)[:n]], self._position)
        self._position += n
        return n

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: self._start, io.SEEK_CUR: self._position, io.SEEK_END: self._end}[whence]
        self._position = min(max(base + offset, self._start), self._end)
        return self._position - self._start

    def tell(self):
        return self._position - self._start

    def close(self):
        self._file.close()
        super().close()


def layer_stream(path: str, start: int, size: int, digest: str | None, compressed_digest: bool,
                 what: str, verify: bool, opener=None):
    """The uncompressed tar of a layer stored at [start, start + size) of `path`;
    `digest` covers the stored bytes (compressed_digest) or the uncompressed tar."""
    raw = io.BufferedReader(Section(path, start, size, opener), buffer_size=READ_BUFFER)
    if verify and digest and compressed_digest:
        raw = io.BufferedReader(VerifyingRaw(VerifyingReader(raw, digest, what)),
                                buffer_size=READ_BUFFER)
    stream = uncompressed(raw)
    if verify and digest and not compressed_digest:
        stream = VerifyingReader(stream, digest, what)
    return stream


# --- docker save archives ----------------------------------------------------------------

def split_reference(reference: str) -> tuple[str, str | None]:
    """PATH[:REF]: the whole string if it names a file, else split at the first colon
    whose left side does (a REF such as NAME:TAG holds colons too)."""
    if not os.path.exists(reference):
        for position, character in enumerate(reference):
            if character == ":" and os.path.exists(reference[:position]):
                return reference[:position], reference[position + 1:] or None
    return reference, None


def open_docker_archive(reference: str) -> Image:
    path, wanted = split_reference(reference)
    members = index_archive(path)
    what = f"docker-archive:{path}"
    if "manifest.json" not in members:
        raise DrootError(f"{path} is not a docker-archive (no manifest.json; make one with "
                         "docker save)")
    try:
        manifests = json.loads(read_member(path, members, "manifest.json") or b"null")
    except ValueError:
        raise DrootError(f"{path}: manifest.json is not valid JSON") from None
    if not isinstance(manifests, list) or not manifests:
        raise DrootError(f"{path}: manifest.json lists no image")
    if not all(isinstance(m, dict) and isinstance(m.get("RepoTags") or [], list)
               and all(isinstance(t, str) for t in m.get("RepoTags") or []) for m in manifests):
        raise DrootError(f"{path}: manifest.json is not a docker save manifest")
    if wanted is None:
        if len(manifests) > 1:
            tags = ", ".join(tag for m in manifests for tag in m.get("RepoTags") or [])
            raise DrootError(f"{path} holds {len(manifests)} images: name one as "
                             f"docker-archive:{path}:TAG ({tags})")
        manifest = manifests[0]
    else:
        matches = [m for m in manifests if wanted in (m.get("RepoTags") or [])
                   or wanted in [t.rpartition(":")[0] for t in m.get("RepoTags") or []]]
        if not matches:
            raise DrootError(f"{path} has no image tagged {wanted!r}")
        manifest = matches[0]
    config_name = manifest.get("Config")
    layer_names = manifest.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) or \
            not all(isinstance(name, str) for name in layer_names):
        raise DrootError(f"{path}: manifest.json is not a docker save manifest")
    config_bytes = read_member(path, members, config_name)
    digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    document = verified_json(config_bytes, None, f"{what}: {config_name}")
    config = config_from_document(document, digest, f"{what}: {config_name}")
    rootfs = document.get("rootfs") or {}
    diff_ids = (rootfs.get("diff_ids") if isinstance(rootfs, dict) else None) or []
    if not isinstance(diff_ids, list):
        raise DrootError(f"{what}: {config_name}: rootfs.diff_ids is not a list")
    for diff_id in diff_ids:
        checked_digest(diff_id, f"{what}: {config_name}: rootfs.diff_ids")
    if len(diff_ids) != len(layer_names):
        raise DrootError(f"{what}: the config lists {len(diff_ids)} layers, the manifest "
                         f"{len(layer_names)}")
    layers = []
    for number, (name, diff_id) in enumerate(zip(layer_names, diff_ids), 1):
        start, size = member_range(path, members, name)
        layer_what = f"{what}: layer {number}/{len(layer_names)} ({name})"
        layers.append(Layer(layer_what, lambda verify, start=start, size=size, diff_id=diff_id,
                            layer_what=layer_what: layer_stream(path, start, size, diff_id, False,
                                                                layer_what, verify)))
    return Image(config, layers)


def index_archive(path: str) -> dict:
    """member name -> (data offset, size) for files, or ("link", target) for links."""
    if os.path.isdir(path):
        raise DrootError(f"{path} is a directory, not a docker-archive (for an OCI layout "
                         f"use oci:{path})")
    try:
        file = open(path, "rb", buffering=READ_BUFFER)
    except OSError as error:
        raise DrootError(f"cannot read {path}: {error.strerror}") from None
    members = {}
    with file:
        reader = TarReader(file, path)
        try:
            for entry in reader:
                if entry.type in (REGULAR, OLD_REGULAR, CONTIGUOUS):
                    members[entry.path] = (file.tell(), entry.size)
                elif entry.type == SYMLINK:
                    # docker save links repeated layers as `../ID/layer.tar`
                    members[entry.path] = ("link", normalise(posixpath.normpath(
                        posixpath.join(posixpath.dirname(entry.path), entry.linkname))))
                elif entry.type == HARDLINK:
                    members[entry.path] = ("link", normalise(entry.linkname))
        except TarFormatError as error:
            raise DrootError(f"{path} is not a docker-archive ({error})") from None
    return members


def member_range(path: str, members: dict, name: str) -> tuple[int, int]:
    try:
        name = normalise(name)
    except TarFormatError:
        raise DrootError(f"{path}: manifest.json names a member {name!r} with a '..' "
                         "component") from None
    for _ in range(16):  # links between members (docker save links repeated layers)
        found = members.get(name)
        if found is None:
            raise DrootError(f"{path} is not a complete docker-archive ({name} is missing)")
        if found[0] != "link":
            return found
        name = found[1]
    raise DrootError(f"{path}: too many links for member {name}")


def read_member(path: str, members: dict, name: str) -> bytes:
    start, size = member_range(path, members, name)
    if size > 64 << 20:
        raise DrootError(f"{path}: {name} is too large for a manifest or config")
    with open(path, "rb") as file:
        data = os.pread(file.fileno(), size, start)
    if len(data) != size:
        raise DrootError(f"{path} is truncated")
    return data


# --- OCI image layouts -------------------------------------------------------------------

def open_oci_layout(reference: str) -> Image:
    path, tag = split_reference(reference)
    what = f"oci:{path}"
    if not os.path.isdir(path):
        raise DrootError(f"{path} is not an OCI image layout directory"
                         + (" (for a docker save archive use docker-archive:)" if os.path.isfile(path) else ""))
    try:
        with open(os.path.join(path, "index.json"), "rb", opener=open_regular) as file:
            index = verified_json(file.read(64 << 20), None, f"{what}: index.json")
    except FileNotFoundError:
        raise DrootError(f"{path} is not an OCI image layout (no index.json)") from None
    except OSError as error:
        raise DrootError(f"{what}: cannot read index.json ({error.strerror})") from None
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list) or not descriptors:
        raise DrootError(f"{what}: index.json lists no image")
    if not all(isinstance(d, dict) and isinstance(d.get("annotations") or {}, dict)
               for d in descriptors):
        raise DrootError(f"{what}: index.json lists something that is not a descriptor")
    if tag is not None:
        matches = [d for d in descriptors if (d.get("annotations") or {}).get(OCI_REF_NAME) == tag]
        if not matches:
            raise DrootError(f"{what} has no image tagged {tag!r}")
        descriptor = matches[0]
    elif len(descriptors) == 1:
        descriptor = descriptors[0]
    else:
        names = ", ".join(str((d.get("annotations") or {}).get(OCI_REF_NAME)) for d in descriptors)
        raise DrootError(f"{what} holds {len(descriptors)} images: name one as oci:{path}:TAG ({names})")
    for _ in range(8):  # nested indexes
        checked_descriptor(descriptor, f"{what}: index.json")
        document = verified_json(read_blob(path, descriptor), descriptor.get("digest"),
                                 f"{what}: manifest {descriptor.get('digest')}")
        if not isinstance(document, dict):
            raise DrootError(f"{what}: manifest {descriptor.get('digest')} is not a JSON object")
        media_type = descriptor.get("mediaType") or document.get("mediaType")
        if media_type in INDEX_TYPES or ("manifests" in document and "layers" not in document):
            descriptor = choose_manifest(document, what)
            continue
        break
    else:
        raise DrootError(f"{what}: indexes nested too deeply")
    config_descriptor, layer_descriptors = manifest_layers(document, what)
    config = config_from_document(verified_json(read_blob(path, config_descriptor),
                                        config_descriptor["digest"], f"{what}: config"),
                          config_descriptor["digest"], f"{what}: config")
    layers = []
    for number, descriptor in enumerate(layer_descriptors, 1):
        blob = blob_path(path, descriptor)
        try:
            with open(blob, "rb", opener=open_regular) as file:
                size = os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            raise DrootError(f"{what}: layer blob {descriptor.get('digest')} is missing") from None
        except OSError as error:
            raise DrootError(f"{what}: cannot read layer blob {descriptor.get('digest')} "
                             f"({error.strerror})") from None
        layer_what = f"{what}: layer {number}/{len(layer_descriptors)} ({descriptor['digest']})"
        layers.append(Layer(layer_what, lambda verify, blob=blob, size=size, digest=descriptor["digest"],
                            layer_what=layer_what: layer_stream(blob, 0, size, digest, True,
                                                                layer_what, verify, open_regular)))
    return Image(config, layers)


def open_regular(path: str, flags: int, dir_fd=None) -> int:
    """os.open for a file of an OCI layout: a regular file of the layout's own, not a
    symlink (which could name any file of this host: its bytes would reach the output
    before the digest check fails), nor a FIFO or device (which could block forever).
    The layout's directories are the user's to have made: their own symlinks are taken."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def blob_path(path: str, descriptor: dict) -> str:
    digest = descriptor.get("digest") or ""
    algorithm, _, encoded = digest.partition(":")
    if not algorithm.isalnum() or not encoded.isalnum():
        raise DrootError(f"oci:{path}: bad digest {digest!r}")
    return os.path.join(path, "blobs", algorithm, encoded)


def read_blob(path: str, descriptor: dict) -> bytes:
    try:
        with open(blob_path(path, descriptor), "rb", opener=open_regular) as file:
            return file.read(64 << 20)
    except FileNotFoundError:
        raise DrootError(f"oci:{path}: blob {descriptor.get('digest')} is missing") from None
    except OSError as error:
        raise DrootError(f"oci:{path}: cannot read blob {descriptor.get('digest')} "
                         f"({error.strerror})") from None
