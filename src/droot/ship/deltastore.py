"""Where a delta release's pieces live: an S3 prefix or a local directory.

For `droot push IMAGE s3://B/apps/web-42 --delta` the store is the prefix `s3://B/apps/`:

    apps/web-42                       the manifest (what `droot pull` is given)
    apps/web-42.sha256                its checksum sidecar, as for an archive
    apps/.droot-delta/packs/HEX.pack  packs of zstd frames (+ .sha256 sidecars)
    apps/.droot-delta/releases/SHA    one marker per delta release: SHA is the manifest's
                                      SHA-256, the body the manifest's name (web-42)
                                      and a line with the push's time in nanoseconds

Packs are named by random hex and never rewritten, so a reader never sees one change.
The markers are how a push finds the content the store already holds, and how gc finds
what is still referenced. A path store has the same layout under the directory.
"""

import os
import secrets
import time

from droot.core.errors import DrootError
from droot.ship import stores

DELTA_DIR = ".droot-delta"
PACKS = f"{DELTA_DIR}/packs"
RELEASES = f"{DELTA_DIR}/releases"
MAX_SMALL_OBJECT = 256 << 20  # a manifest or marker read whole: far above any real one


class Missing(DrootError):
    """The object is not in the store (as opposed to a store that cannot be read)."""


def marker_body(name: str, pushed: int) -> bytes:
    """The body of the marker of release `name`: its name, and when it was pushed (S3
    dates objects to the second only; two pushes in one second still have an order)."""
    return f"{name}\n{pushed}\n".encode()


def releases_newest_first(store, limit: int | None = None) -> list[tuple[str, str | None]]:
    """(marker, manifest name) of the `limit` newest release markers of `store` (None:
    all), newest first: by the store's time to the second, then by the push's own. Only
    the markers that can be among them are read (those of the `limit`-th one's second
    and later). The name is None when the marker names no manifest droot writes."""
    listed = sorted(((int(modified), marker) for marker, modified in store.listing(RELEASES)),
                    reverse=True)
    if limit is not None and len(listed) > limit:
        last_second = listed[limit - 1][0]
        listed = [item for item in listed if item[0] >= last_second]
    found = []
    for second, marker in listed:
        try:
            body = store.read(marker).decode(errors="replace")
        except Missing:  # removed since the listing (a gc)
            continue
        name, _, pushed = body.partition("\n")
        name = name.strip()
        if not name or "/" in name or name.startswith("."):
            name = None
        pushed = pushed.strip()
        found.append((second, int(pushed) if pushed.isdigit() else 0, marker, name))
    found.sort(key=lambda item: item[:3], reverse=True)
    return [(marker, name) for _, _, marker, name in found[:limit]]


def new_pack_name() -> str:
    return f"{secrets.token_hex(16)}.pack"


def check_pack_name(name: str) -> str:
    """A pack name from a manifest: refused unless it is one droot makes (no path)."""
    stem, dot, suffix = name.partition(".")
    if (suffix != "pack" or len(stem) != 32
            or any(c not in "0123456789abcdef" for c in stem)):
        raise DrootError(f"the manifest names a pack {name[:80]!r} that droot does not make "
                         "(corrupt or forged manifest)")
    return name


def open_store(location: stores.Location, whole: bool = False, client=None):
    """The store of the release at `location` (its prefix or directory), or with `whole`,
    the store that `location` itself names (for gc: s3://BUCKET/PREFIX or a directory).
    `client`: an S3 client of this process to use (each holds ~12 MB of AWS models)."""
    if location.kind == "s3":
        return S3Store(location, whole, client)
    if location.kind == "path":
        return PathStore(location, whole)
    raise DrootError(f"{stores.redact(location.text)}: delta releases live in an s3:// prefix "
                     "or a local directory")


class Store:
    """What both stores count: requests and bytes downloaded (for the pull's summary)."""

    requests = 0
    downloaded = 0

    def __init__(self, location: stores.Location):
        self.location = location


class _Counted:
    """A ranged download whose bytes are counted in the store's total."""

    def __init__(self, store: Store, read, close, left: int | None = None):
        self._store = store
        self._read = read
        self.close = close
        self._left = left

    def read(self, n: int) -> bytes:
        if self._left is not None:
            n = min(n, self._left)
            self._left -= n
        data = self._read(n)
        self._store.downloaded += len(data)
        return data


class S3Store(Store):
    def __init__(self, location: stores.Location, whole: bool = False, client=None):
        super().__init__(location)
        self.client = client or stores.s3_client()
        self.bucket = location.bucket
        key = location.key.rstrip("/") + "/" if whole else location.key
        self.prefix = key.rpartition("/")[0]
        self.prefix = self.prefix + "/" if self.prefix else ""
        self.release_name = key.rpartition("/")[2]

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _call(self, name, function, **arguments):
        self.requests += 1
        try:
            return function(Bucket=self.bucket, Key=self._key(name), **arguments)
        except Exception as error:
            if stores._code(error) in ("404", "NotFound", "NoSuchKey"):
                raise Missing(f"{self._where(name)}: no such object") from None
            raise stores.s3_error(error, self._where(name)) from None

    def read(self, name: str) -> bytes:
        body = self._call(name, self.client.get_object)["Body"]
        data = body.read(MAX_SMALL_OBJECT + 1)
        if len(data) > MAX_SMALL_OBJECT:
            raise DrootError(f"{self._where(name)}: larger than any manifest droot writes")
        self.downloaded += len(data)
        return data

    def read_range(self, name: str, start: int, end: int):
        """A stream of bytes [start, end) of `name`."""
        body = self._call(name, self.client.get_object, Range=f"bytes={start}-{end - 1}")["Body"]
        return _Counted(self, body.read, body.close)

    def upload(self, name: str):
        where = self._where(name)
        return stores.S3Upload(stores.Location("s3", where, bucket=self.bucket,
                                               key=self._key(name)), self.client)

    def put(self, name: str, data: bytes):
        self._call(name, self.client.put_object, Body=data)

    def listing(self, directory: str) -> list[tuple[str, float]]:
        """(name, modification time) of the objects under `directory`, oldest first."""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(directory) + "/"):
                self.requests += 1
                for item in page.get("Contents", []):
                    found.append((item["Key"][len(self.prefix):],
                                  item["LastModified"].timestamp()))
        except Exception as error:
            raise stores.s3_error(error, self._where(directory)) from None
        return sorted(found, key=lambda item: item[1])

    def age(self, name: str) -> float | None:
        """Seconds since `name` was last written, None if it is gone."""
        try:
            head = self._call(name, self.client.head_object)
        except Missing:
            return None
        return time.time() - head["LastModified"].timestamp()

    def touch(self, name: str):
        """Make `name` new again (gc spares what was written recently): a copy onto
        itself, done by the server."""
        self._call(name, self.client.copy_object, CopySource={"Bucket": self.bucket,
                                                               "Key": self._key(name)},
                   MetadataDirective="REPLACE")

    def delete(self, name: str):
        self._call(name, self.client.delete_object)


class PathStore(Store):
    def __init__(self, location: stores.Location, whole: bool = False):
        super().__init__(location)
        path = os.path.abspath(location.path)
        self.directory, self.release_name = (path, "") if whole else os.path.split(path)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def read(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as file:
                data = file.read(MAX_SMALL_OBJECT + 1)
        except FileNotFoundError:
            raise Missing(f"{self._path(name)}: no such file") from None
        except OSError as error:
            raise DrootError(f"{self._path(name)}: {error.strerror}") from None
        if len(data) > MAX_SMALL_OBJECT:
            raise DrootError(f"{self._path(name)}: larger than any manifest droot writes")
        self.requests += 1
        self.downloaded += len(data)
        return data

    def read_range(self, name: str, start: int, end: int):
        try:
            file = open(self._path(name), "rb")
        except OSError as error:
            raise DrootError(f"{self._path(name)}: {error.strerror}") from None
        file.seek(start)
        self.requests += 1
        return _Counted(self, file.read, file.close, end - start)

    def _make_parents(self, name: str):
        directory = os.path.dirname(self._path(name))
        os.makedirs(directory, mode=0o755, exist_ok=True)

    def upload(self, name: str):
        self._make_parents(name)
        return stores.PathUpload(stores.Location("path", self._path(name),
                                                 path=self._path(name)))

    def put(self, name: str, data: bytes):
        upload = self.upload(name)
        try:
            upload.write(data)
            upload.archive.commit()
        finally:
            upload.abort()

    def listing(self, directory: str) -> list[tuple[str, float]]:
        try:
            with os.scandir(self._path(directory)) as entries:
                found = [(f"{directory}/{entry.name}", entry.stat(follow_symlinks=False).st_mtime)
                         for entry in entries if entry.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        return sorted(found, key=lambda item: item[1])

    def age(self, name: str) -> float | None:
        try:
            return time.time() - os.lstat(self._path(name)).st_mtime
        except FileNotFoundError:
            return None

    def touch(self, name: str):
        try:
            os.utime(self._path(name))
        except FileNotFoundError:
            raise Missing(f"{self._path(name)}: no such file") from None
        except OSError as error:
            raise DrootError(f"{self._path(name)}: {error.strerror}") from None

    def delete(self, name: str):
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
