"""Helpers for the export tests: images on disk made by hand (OCI layouts and docker save
archives from tar layers built with tarfile), and a comparable listing of an export."""

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import zstandard

PREFIX = "droot-test-export"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def relative(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name.rstrip("/")


def listing(data: bytes) -> dict:
    """path -> (type, mode, uid, gid, link target, content digest, device, xattrs) of
    every member of a tar stream; droot's own config files are left out."""
    entries = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            path = relative(member.name)
            if path in (".drootenv", ".droot.json"):
                continue
            content = None
            if member.isreg():
                content = sha256(archive.extractfile(member).read())
            xattrs = {k: v for k, v in member.pax_headers.items() if "xattr" in k}
            entries[path] = (member.type, oct(member.mode & 0o7777), member.uid, member.gid,
                             relative(member.linkname) if member.islnk() else member.linkname,
                             content, (member.devmajor, member.devminor) if member.isdev() else None,
                             xattrs)
    return entries


def member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.extractfile(name).read()


# --- hand-made layers and images -----------------------------------------------------------

def layer(*items, format=tarfile.PAX_FORMAT) -> bytes:
    """A layer tar from (name, kind, extra) items: kind is "dir", "file" (extra: bytes or
    a dict of TarInfo fields with "data"), "symlink"/"hardlink" (extra: target), "chardev"
    (extra: (major, minor))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as archive:
        for name, kind, *extra in items:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            options = extra[0] if extra else None
            data = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                if isinstance(options, dict):
                    for key, value in options.items():
                        setattr(info, key, value)
            elif kind == "file":
                info.mode = 0o644
                if isinstance(options, dict):
                    options = dict(options)
                    data = options.pop("data", b"")
                    for key, value in options.items():
                        setattr(info, key, value)
                else:
                    data = options or b""
                info.size = len(data)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, options, 0o777
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, options, 0o644
            elif kind == "chardev":
                info.type, info.mode = tarfile.CHRTYPE, 0o666
                info.devmajor, info.devminor = options
            else:
                raise ValueError(kind)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def image_config(diff_ids: list[str], env=None, **config) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": env or ["PATH=/bin"], **config},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


COMPRESSORS = {
    "none": (lambda data: data, "application/vnd.oci.image.layer.v1.tar"),
    "gzip": (lambda data: gzip.compress(data, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"),
    "zstd": (lambda data: zstandard.ZstdCompressor().compress(data),
             "application/vnd.oci.image.layer.v1.tar+zstd"),
}


def write_oci_layout(directory: Path, layers: list[bytes], config: bytes | None = None,
                     compression: list[str] | None = None, tag: str = "latest") -> Path:
    """An OCI image layout with the given uncompressed layers (compressed as asked)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict:
        digest = sha256(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    config = config or image_config([sha256(data) for data in layers])
    compression = compression or ["none"] * len(layers)
    layer_descriptors = []
    for data, kind in zip(layers, compression):
        compress, media_type = COMPRESSORS[kind]
        layer_descriptors.append(blob(compress(data), media_type))
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(config, "application/vnd.oci.image.config.v1+json"),
        "layers": layer_descriptors}).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    return directory


def write_docker_archive(path: Path, layers: list[bytes], config: bytes | None = None,
                         tag: str = f"{PREFIX}/handmade:latest") -> Path:
    """A `docker save` style archive (what `docker load` reads) with the given layers."""
    config = config or image_config([sha256(data) for data in layers])
    config_name = sha256(config).split(":")[1] + ".json"
    names = [f"{sha256(data).split(':')[1]}/layer.tar" for data in layers]
    with tarfile.open(path, "w") as archive:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add(config_name, config)
        for name, data in zip(names, layers):
            add(name, data)
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag],
                                          "Layers": names}]).encode())
    return path


def oci_layout_from_docker_archive(archive_path: Path, directory: Path,
                                   compression: list[str]) -> Path:
    """Convert a `docker save` archive into an OCI layout (layers compressed as asked),
    keeping the config byte for byte so the image ID stays the same."""
    with tarfile.open(archive_path) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())[0]
        config = archive.extractfile(manifest["Config"]).read()
        layers = [archive.extractfile(name).read() for name in manifest["Layers"]]
    kinds = [compression[i % len(compression)] for i in range(len(layers))]
    return write_oci_layout(directory, layers, config, kinds)


def push_oci_layout(registry: str, repository: str, tag: str, directory: Path):
    """Upload an OCI layout's blobs and manifests to a registry (distribution API v2), and
    tag the layout's first image: what `skopeo copy oci:… docker://…` does."""
    import requests
    base = f"http://{registry}/v2/{repository}"
    manifests = []
    for blob in sorted((directory / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()
        digest = "sha256:" + blob.name
        started = requests.post(f"{base}/blobs/uploads/", timeout=30)
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        separator = "&" if "?" in location else "?"
        requests.put(f"{location}{separator}digest={digest}", data=data,
                     headers={"Content-Type": "application/octet-stream"}, timeout=30).raise_for_status()
        try:
            document = json.loads(data)
        except ValueError:
            continue
        if isinstance(document, dict) and ("layers" in document or "manifests" in document):
            manifests.append((digest, document, data))
    # image manifests before the indexes that refer to them
    for digest, document, data in sorted(manifests, key=lambda item: "manifests" in item[1]):
        requests.put(f"{base}/manifests/{digest}", data=data,
                     headers={"Content-Type": document["mediaType"]}, timeout=30).raise_for_status()
    top = json.loads((directory / "index.json").read_text())["manifests"][0]
    data = (directory / "blobs" / "sha256" / top["digest"].split(":")[1]).read_bytes()
    requests.put(f"{base}/manifests/{tag}", data=data,
                 headers={"Content-Type": top["mediaType"]}, timeout=30).raise_for_status()
