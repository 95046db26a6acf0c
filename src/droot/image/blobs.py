"""What the daemonless sources share: images as a config plus layers, blob digests
checked while streaming, compressed layers (gzip, zstd or plain, told by their bytes),
manifests and indexes resolved to this host's platform."""

import hashlib
import io
import json
import platform
import re
from dataclasses import dataclass, field

from droot.core.errors import DrootError
from droot.image.export import ImageConfig

READ_BUFFER = 1 << 20

# media types
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


class DigestMismatch(DrootError):
    pass


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


def checked_digest(digest, what: str) -> str:
    """`digest` if it is one droot checks blobs against (sha256 or sha512, lowercase hex):
    it also names a blob in a URL or a file name, so nothing else may pass."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise DrootError(f"{what}: bad digest {str(digest)[:80]!r} (expected sha256:HEX)")
    return digest


def descriptor(value, what: str) -> dict:
    """A content descriptor ({"digest": ..., ...}) of a manifest or index, checked."""
    if not isinstance(value, dict):
        raise DrootError(f"{what}: a descriptor that is not a JSON object")
    checked_digest(value.get("digest"), what)
    return value


class VerifyingReader:
    """Reads `stream` and, at its end, checks the bytes against `digest` ("sha256:…")."""

    def __init__(self, stream, digest: str, what: str):
        if not isinstance(digest, str):
            raise DrootError(f"{what}: bad digest {str(digest)[:80]!r}")
        algorithm, _, self._expected = digest.partition(":")
        if algorithm not in ("sha256", "sha512") or not self._expected:
            raise DrootError(f"{what}: unsupported digest {digest!r}")
        self._hash = hashlib.new(algorithm)
        self._stream = stream
        self._what = what
        self._digest = digest

    def read(self, n=-1):
        data = self._stream.read(n)
        if data:
            self._hash.update(data)
        elif n != 0:
            self.check()
        return data

    def check(self):
        if self._hash.hexdigest() != self._expected:
            raise DigestMismatch(f"{self._what}: digest mismatch (expected {self._digest}, got "
                                 f"{self._hash.name}:{self._hash.hexdigest()}): the image is "
                                 "corrupt or was tampered with")

    def seekable(self):
        return False

    def close(self):
        self._stream.close()


class VerifyingRaw(io.RawIOBase):
    """A VerifyingReader as a raw stream (so it can be buffered and decompressed)."""

    def __init__(self, reader):
        self._reader = reader

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._reader.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        self._reader.close()
        super().close()


def uncompressed(stream):
    """A reader of the uncompressed contents of buffered `stream` (gzip, zstd or plain)."""
    from droot.core.compression import decompressing_reader, kind_of
    if kind_of(stream.peek(4)[:4]) != "none":
        return ForwardOnly(decompressing_reader(stream)[1])
    return stream


class ForwardOnly:
    """A decompressing reader that does not claim to seek (some gzip readers claim to,
    then fail), so skipping an entry's data reads through it."""

    def __init__(self, stream):
        self.read = stream.read
        self.close = stream.close

    def seekable(self):
        return False


def verified_json(data: bytes, digest: str | None, what: str):
    """The JSON document in `data`, after checking `data` against `digest` if given."""
    if digest:
        reader = VerifyingReader(io.BytesIO(data), digest, what)
        reader.read()
        reader.check()
    try:
        return json.loads(data)
    except ValueError:
        raise DrootError(f"{what} is not valid JSON") from None


@dataclass
class Layer:
    """One layer: `opener(verify)` returns a binary stream of its uncompressed tar."""
    name: str
    opener: object
    streamed: bool = False  # fetched anew on every read (a registry): always verified

    def open(self, verify: bool):
        return self.opener(verify)


@dataclass
class Image:
    config: ImageConfig
    layers: list
    resources: list = field(default_factory=list)

    def close(self):
        for resource in self.resources:
            resource.close()


def config_from_document(document: dict, digest: str, what: str) -> ImageConfig:
    if not isinstance(document, dict):
        raise DrootError(f"{what} is not an image config")
    config = document.get("config") or document.get("Config")
    if config is not None and not isinstance(config, dict):
        raise DrootError(f"{what}: its config is not a JSON object")
    for key, kind in (("Env", "strings"), ("Entrypoint", "strings"), ("Cmd", "strings"),
                      ("WorkingDir", "string"), ("User", "string")):
        value = (config or {}).get(key)
        if value is None:
            continue
        if kind == "string" and not isinstance(value, str) or kind == "strings" and not (
                isinstance(value, list) and all(isinstance(item, str) for item in value)):
            expected = "a list of strings" if kind == "strings" else "a string"
            raise DrootError(f"{what}: {key} is not {expected}")
    return ImageConfig.from_docker(config, digest)


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this host in OCI terms."""
    machine = platform.machine().lower()
    architecture, variant = {
        "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
        "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
        "i386": ("386", ""), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return "linux", architecture, variant


def choose_manifest(index: dict, what: str) -> dict:
    """The descriptor of an index's manifest for this host's platform."""
    os_name, architecture, variant = host_platform()
    candidates = []
    manifests = index.get("manifests") or []
    if not isinstance(manifests, list) or not all(
            isinstance(d, dict) and isinstance(d.get("platform") or {}, dict) for d in manifests):
        raise DrootError(f"{what}: an image index whose manifests are not descriptors")
    for descriptor_ in manifests:
        platform_ = descriptor_.get("platform") or {}
        if platform_.get("os") == os_name and platform_.get("architecture") == architecture:
            exact = not variant or platform_.get("variant") in (None, "", variant)
            candidates.append((not exact, descriptor_))
    if not candidates:
        offered = sorted({f"{(d.get('platform') or {}).get('os')}/"
                          f"{(d.get('platform') or {}).get('architecture')}"
                          for d in index.get("manifests") or []})
        raise DrootError(f"{what} has no image for {os_name}/{architecture} "
                         f"(it has: {', '.join(offered) or 'nothing'})")
    return descriptor(min(candidates, key=lambda candidate: candidate[0])[1], what)


def manifest_layers(manifest: dict, what: str) -> tuple[dict, list]:
    """(config descriptor, layer descriptors) of an image manifest."""
    config = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list) or "digest" not in config:
        raise DrootError(f"{what} is not an image manifest")
    descriptor(config, f"{what}: config")
    for layer in layers:
        descriptor(layer, f"{what}: layer")
        if layer.get("urls") and "nondistributable" in (layer.get("mediaType") or ""):
            raise DrootError(f"{what} has a foreign layer ({layer.get('digest')}), which droot "
                             "does not fetch")
    return config, layers
