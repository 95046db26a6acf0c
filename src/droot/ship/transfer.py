"""push: export → compress → hash → upload, one stream, no temporary file; with a key, the
release's checksum line is signed before anything is made visible.
pull: (signature checked) → download → hash → decompress → extract into a new release →
verify → switch. With --if-changed, first one small request: the store's checksum
against the one the current release was deployed from."""

import hashlib

from droot.core import signatures
from droot.core.errors import DrootError, UsageError
from droot.ship import stores
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


def push(source: str, dest: str, *, compression: str = "gzip", plain_http: bool = False,
         sign_key: str | None = None) -> dict:
    from droot.image.export import export_image
    check_kind(compression)
    location = stores.parse(dest)
    signer = None
    if sign_key:
        if location.kind not in ("s3", "path"):
            raise UsageError("--sign needs a store to put the signature in beside the archive "
                             "(s3://BUCKET/KEY or a path)")
        signer = signatures.signing_key_fingerprint(sign_key)
    upload = stores.open_upload(location)
    progress = Progress(f"push {dest}")
    try:
        hashing = _HashingWriter(upload, progress)
        compressor = compressing_writer(hashing, compression)
        info = export_image(source, compressor, plain_http=plain_http)
        compressor.close()
        digest = hashing.hash.hexdigest()
        # Signed before the commit: a key that cannot sign leaves nothing published.
        signature = (signatures.sign(sign_key, digest, stores.name_of(location))
                     if sign_key else None)
        upload.commit(digest, signature)
    except BaseException:
        upload.abort()
        raise
    finally:
        progress.close()
    return {"sha256": hashing.hash.hexdigest(), "size": hashing.size,
            "compression": compression, "image": info, "signer": signer}


def pull(src: str, root, *, expected_sha256: str | None = None, verify: bool = True,
         trusted_keys: signatures.TrustedKeys | None = None, signature_file: str | None = None,
         if_changed: bool = False, **deploy_options) -> dict:
    """Deploy SRC at `root`; returns deploy's summary, or {"unchanged": True, ...} when
    `if_changed` finds the store's archive is the one the current release came from."""
    from droot.deploy.deploy import deploy
    location = stores.parse(src)
    shown = stores.redact(src)  # a presigned URL's signature stays out of messages
    if trusted_keys and not verify:
        raise UsageError("--no-verify and --trusted-keys contradict each other")
    deployed = None
    if if_changed:
        deployed = _deployed(root, location, trusted_keys)
        # One small request (none with --sha256): the sidecar droot writes.
        if deployed and (expected_sha256 or stores.read_checksum(location)) == deployed["sha256"]:
            return {"unchanged": True, **deployed}
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
    try:
        signer = None
        if trusted_keys:
            signer = _check_signature(trusted_keys, signature_file, location, download,
                                      expected)
        if deployed and expected == deployed["sha256"]:  # a checksum in metadata only
            return {"unchanged": True, **deployed}
        progress = Progress(f"pull {shown}", download.size)
        try:
            return deploy(download.stream, root, expected_sha256=expected if verify else None,
                          progress=progress, source=shown, signer=signer, **deploy_options)
        finally:
            progress.close()
    finally:
        close = getattr(download.stream, "close", None)
        if close and location.kind != "stdio":
            close()


def _deployed(root, location: stores.Location, trusted_keys) -> dict | None:
    """What the current release at `root` was deployed from, when --if-changed may
    compare with it: not a release deployed unsigned when a signature is now required."""
    from droot.deploy.releases import Layout
    if location.kind == "stdio":
        raise UsageError("--if-changed compares with a store's checksum: it needs "
                         "s3://, a path or http(s)://, not stdin")
    deployed = Layout(root).read_deployed()
    if deployed and trusted_keys and not deployed.get("signer"):
        return None
    return deployed


def _check_signature(trusted_keys, signature_file, location, download, digest) -> str:
    """The signer of the release about to be pulled, or one clear DrootError."""
    if signature_file:
        signature, where = signatures.read_signature_file(signature_file), signature_file
    else:
        where = stores.beside(location, stores.SIGNATURE_SUFFIX)
        if where is None:
            raise UsageError(f"{stores.redact(location.text)} has no signature file beside "
                             "it (a presigned URL, or stdin): pass --signature FILE")
        signature = stores.read_beside(location, stores.SIGNATURE_SUFFIX,
                                       getattr(download.stream, "client", None),
                                       signatures.MAX_SIGNATURE)
    return trusted_keys.verify(signature, digest, stores.name_of(location), where)
