"""push: export → compress → hash → upload, one stream, no temporary file; with a key, the
release's checksum line is signed before anything is made visible.
pull: (signature checked) → download → hash → decompress → extract into a new release →
verify → switch. With --if-changed, first one small request: the store's checksum
against the one the current release was deployed from."""

import hashlib
import time

from droot.core import scratch, signatures
from droot.core.errors import DrootError, UsageError
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
        # Signed before the commit: a key that cannot sign leaves nothing published. Only
        # a signed sidecar names its push time: an unsigned one stays one line, which the
        # `--sha256 $(aws s3 cp DEST.sha256 - | cut -c1-64)` pipe form relies on.
        signature = pushed = None
        if sign_key:
            pushed = time.time_ns()
            signature = signatures.sign(sign_key, digest, stores.name_of(location), pushed)
        upload.commit(digest, signature, pushed)
    except BaseException:
        upload.abort()
        raise
    finally:
        progress.close()
    return {"sha256": hashing.hash.hexdigest(), "size": hashing.size,
            "compression": compression, "image": info, "signer": signer}


def pull(src: str, root, *, expected_sha256: str | None = None, verify: bool = True,
         trusted_keys: signatures.TrustedKeys | None = None, signature_file: str | None = None,
         pushed: int | None = None, allow_downgrade: bool = False, if_changed: bool = False,
         **deploy_options) -> dict:
    """Deploy SRC at `root`; returns deploy's summary, or {"unchanged": True, ...} when
    `if_changed` finds the store's archive is the one the current release came from, or
    {"rolled_back": True, ...} (the `.rolled-back` record) when it is one that a --check
    rolled back here. With `trusted_keys`, the release's push time (the sidecar's, or
    `pushed` given with `signature_file`) is signed too, and a release pushed before the
    one accepted last at `root` is refused unless `allow_downgrade`."""
    from droot.deploy.deploy import check_push_time, deploy
    from droot.deploy.releases import Layout
    location = stores.parse(src)
    shown = stores.redact(src)  # a presigned URL's signature stays out of messages
    if trusted_keys and not verify:
        raise UsageError("--no-verify and --trusted-keys contradict each other")
    deployed = rolled_back = None
    if if_changed:
        deployed = _deployed(root, location, trusted_keys)
        rolled_back = Layout(root).read_rolled_back()
        # One small request (none with --sha256): the sidecar droot writes.
        if deployed or rolled_back:
            skipped = _skipped(expected_sha256 or stores.read_checksum(location), deployed,
                               rolled_back)
            if skipped:
                return skipped
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
            pushed = download.pushed if pushed is None else pushed
            signer = _check_signature(trusted_keys, signature_file, location, download,
                                      expected, pushed)
            # Here already, before any download (deploy checks again under the lock).
            check_push_time(Layout(root).read_newest_push(), pushed, allow_downgrade, shown)
            deploy_options.update(pushed=pushed, allow_downgrade=allow_downgrade)
        skipped = _skipped(expected, deployed, rolled_back)  # a checksum in metadata only
        if skipped:
            return skipped
        # The first bytes tell a delta release's manifest from an archive; the signature,
        # if required, was checked first: a delta pull downloads nothing beyond the
        # manifest before its digest matches the signed one.
        head = download.stream.read(len(delta.MAGIC))
        if delta.is_manifest(head):
            return _pull_delta(location, download, head, expected if verify else None,
                               root, source=shown, signer=signer, **deploy_options)
        progress = Progress(f"pull {shown}", download.size)
        try:
            return deploy(_Prefixed(head, download.stream), root,
                          expected_sha256=expected if verify else None, progress=progress,
                          source=shown, signer=signer, **deploy_options)
        finally:
            progress.close()
    finally:
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
                **deploy_options) -> dict:
    """Read the rest of the manifest whose first bytes are `head`, then deploy it (its
    digest is checked against `expected` before anything else is read)."""
    if location.kind not in ("s3", "path"):
        raise DrootError(f"{stores.redact(location.text)} is a delta release: pull it "
                         "from its s3:// prefix or directory (its packs are there)")
    limit = delta.deltastore.MAX_SMALL_OBJECT
    with scratch.spool() as manifest:  # on the disk, not in memory (droot.core.scratch)
        def keep(data: bytes):
            rest = memoryview(data)
            try:
                while rest:  # a write may be short: the room ran out mid-way (ENOSPC next)
                    rest = rest[manifest.write(rest):]
            except OSError as error:
                raise DrootError(f"no room for the delta release's manifest in "
                                 f"{scratch.directory()} ({error.strerror}): set TMPDIR to "
                                 "a directory with room") from None
        keep(head)
        while chunk := download.stream.read(1 << 20):
            keep(chunk)
            if manifest.tell() > limit:
                raise DrootError(f"{location.text}: larger than any manifest droot writes")
        download.stream.close()  # its connection and threads: the packs come another way
        manifest.seek(0)
        return delta.pull(location, manifest, expected, root,
                          client=download.stream.client if location.kind == "s3" else None,
                          **deploy_options)


def _skipped(available: str | None, deployed: dict | None,
             rolled_back: dict | None) -> dict | None:
    """Why --if-changed does not deploy the store's release `available` (a SHA-256): it is
    the current one ({"unchanged": True, ...}), or one a --check rolled back here
    ({"rolled_back": True, ...}); None when it should be deployed."""
    if not available:
        return None
    if deployed and available == deployed["sha256"]:
        return {"unchanged": True, **deployed}
    if rolled_back and available == rolled_back["sha256"]:
        return {"rolled_back": True, **rolled_back}
    return None


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


def _check_signature(trusted_keys, signature_file, location, download, digest,
                     pushed: int | None) -> str:
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
    return trusted_keys.verify(signature, digest, stores.name_of(location), pushed, where)
