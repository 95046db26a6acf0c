"""push: export → compress → hash → upload, one stream, no temporary file.
pull: download → hash → decompress → extract into a new release → verify → switch."""

import hashlib

from droot.core.errors import DrootError
from droot.ship import delta, stores
from droot.core.compression import check_kind, compressing_writer
from droot.core.progress import Progress


class _HashingWriter:
    """Passes bytes to `upload`, hashing and counting them on the way."""

    def __init__(self, upload, progress):
        self.upload = upload
        self.progress = progress
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.upload.write(data)
        self.hash.update(data)
        self.size += len(data)
        self.progress.update(len(data))
        return len(data)


def push(source: str, dest: str, *, compression: str = "gzip", plain_http: bool = False) -> dict:
    from droot.image.export import export_image
    check_kind(compression)
    location = stores.parse(dest)
    upload = stores.open_upload(location)
    progress = Progress(f"push {dest}")
    try:
        hashing = _HashingWriter(upload, progress)
        compressor = compressing_writer(hashing, compression)
        info = export_image(source, compressor, plain_http=plain_http)
        compressor.close()
        upload.commit(hashing.hash.hexdigest())
    except BaseException:
        upload.abort()
        raise
    finally:
        progress.close()
    return {"sha256": hashing.hash.hexdigest(), "size": hashing.size,
            "compression": compression, "image": info}


def pull(src: str, root, *, expected_sha256: str | None = None, verify: bool = True,
         **deploy_options) -> dict:
    from droot.deploy.deploy import deploy
    location = stores.parse(src)
    shown = stores.redact(src)  # a presigned URL's signature stays out of messages
    download = stores.open_download(location)
    expected = expected_sha256 or download.sha256
    if verify and not expected:
        if location.kind == "stdio":
            message = "pull from stdin has no checksum to verify: pass --sha256 HEX"
        else:
            message = (f"no checksum found for {shown} (looked for {download.checksum_source}); "
                       "pass --sha256 HEX")
        raise DrootError(f"{message}, or --no-verify to deploy it unverified")
    if expected_sha256 and download.sha256 and download.sha256 != expected_sha256:
        raise DrootError(f"--sha256 {expected_sha256} differs from the store's checksum "
                         f"{download.sha256} ({download.checksum_source})")
    head = download.stream.read(len(delta.MAGIC))
    if delta.is_manifest(head):
        return _pull_delta(location, download, head, expected if verify else None,
                           root, deploy_options)
    stream = _Prefixed(head, download.stream)
    progress = Progress(f"pull {shown}", download.size)
    try:
        return deploy(stream, root, expected_sha256=expected if verify else None,
                      progress=progress, **deploy_options)
    finally:
        progress.close()
        close = getattr(download.stream, "close", None)
        if close and location.kind != "stdio":
            close()


class _Prefixed:
    """A stream whose first bytes were already read (to tell a manifest from an archive)."""

    def __init__(self, head: bytes, stream):
        self._head = head
        self._stream = stream

    def read(self, n=-1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._stream.read(n)


def _pull_delta(location, download, head: bytes, expected: str | None, root,
                deploy_options: dict) -> dict:
    try:
        if location.kind not in ("s3", "path"):
            raise DrootError(f"{stores.redact(location.text)} is a delta release: pull it "
                             "from its s3:// prefix or directory (its packs are there)")
        rest = download.stream.read(delta.deltastore.MAX_SMALL_OBJECT + 1)
        parts = [head, rest]
        while rest:
            rest = download.stream.read()
            parts.append(rest)
            if sum(map(len, parts)) > delta.deltastore.MAX_SMALL_OBJECT:
                raise DrootError(f"{location.text}: larger than any manifest droot writes")
        data = b"".join(parts)
    finally:
        close = getattr(download.stream, "close", None)
        if close:
            close()
    return delta.pull(location, data, expected, root, **deploy_options)
