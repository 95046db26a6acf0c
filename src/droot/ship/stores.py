"""Where archives are stored: S3 (any S3-compatible endpoint), a local path or file://
URL, http(s):// for downloads (e.g. presigned URLs), and `-` for stdin/stdout.

Checksums: every upload stores the archive's SHA-256 next to it, as a sidecar
`DEST.sha256` in `sha256sum` format (`HEX  NAME`), written after the archive. Why a
sidecar and not S3 object metadata: the hash is known only when the stream ends, but a
multipart upload fixes its metadata when it starts; setting it afterwards would need a
server-side copy of the whole archive (and a multipart copy past 5 GB). A sidecar works
on every S3-compatible store and with `sha256sum -c`. A pull that races a push of the same
key may pair one push's archive with the other's sidecar: the checksums then differ and
the pull fails without switching anything — it never deploys an unverified archive (and
the archive's version is pinned by its ETag for the whole download).
A pull also honours an `x-amz-meta-sha256` object metadata / header set by other tools.

A signed release's sidecar has a second line, `# droot-pushed NS`: when the push happened
(nanoseconds since the epoch; `sha256sum -c` skips it as a comment), which the signature
covers, so that a host can tell an old release put back (droot.core.signatures). An
unsigned one stays one line (`cut -c1-64` of it is the checksum).

Signatures (`push --sign`): `DEST.sha256.sig`, an OpenSSH signature of the sidecar
(droot.core.signatures), written after the archive and before the sidecar; an unsigned
push removes an older release's signature, so that a pull that needs one says "not
signed" rather than "does not match". The sidecar goes last because it is what a poller
(`pull --if-changed`) looks at: once it has changed, the archive and signature are there.
"""

import contextlib
import http.client
import os
import queue
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from droot.core.atomicfile import AtomicFile, default_file_mode, open_directory
from droot.core.errors import DrootError, TransientError, UsageError
from droot.core.signatures import SIGNATURE_SUFFIX as _SIG, checksum_line, pushed_time

SIDECAR_SUFFIX = ".sha256"
SIGNATURE_SUFFIX = SIDECAR_SUFFIX + _SIG
# 5 MiB parts (S3's minimum): at most three in memory (filling, queued, uploading), up to
# 50 GiB per archive within S3's 10,000-part limit.
PART_SIZE = 5 << 20
MAX_PARTS = 10_000
# Seconds a request may wait for a byte from the store before it fails (pull --timeout,
# set by the command line before the first request).
TIMEOUT = 60.0


@dataclass
class Location:
    kind: str            # "s3", "path", "http" or "stdio"
    text: str            # as the user wrote it
    bucket: str = ""
    key: str = ""
    path: str = ""


def parse(text: str) -> Location:
    if text == "-":
        return Location("stdio", text)
    if text.startswith("s3://"):
        bucket, _, key = text[5:].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise UsageError(f"{text}: expected s3://BUCKET/KEY")
        return Location("s3", text, bucket=bucket, key=key)
    if text.startswith(("http://", "https://")):
        try:
            host = urllib.parse.urlsplit(text).hostname
        except ValueError as error:
            raise UsageError(f"{text}: malformed URL ({error})") from None
        if not host:
            raise UsageError(f"{text}: malformed URL (no host)")
        return Location("http", text)
    if text.startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"{text}: only local file:// URLs are supported")
        return Location("path", text, path=urllib.parse.unquote(parsed.path))
    scheme, separator, _ = text.partition("://")
    if separator and scheme.isalnum() and not os.path.exists(text):
        raise UsageError(f"{text}: unsupported store (use s3://, http(s)://, file://, a path or -)")
    return Location("path", text, path=text)


def parse_sidecar(text: str, where: str) -> str:
    digest = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DrootError(f"{where}: not a SHA-256 checksum file")
    return digest


def name_of(location: Location) -> str:
    """The release's name, which its signature covers: the last part of its key, path or
    URL path (decoded: `my%20app.tar.gz` was pushed as `my app.tar.gz`)."""
    if location.kind == "http":
        return urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(location.text).path))
    return os.path.basename(location.key or location.path)


# --- S3 ------------------------------------------------------------------------------------

def s3_client():
    """An S3 client from the standard AWS configuration (environment, profiles, config
    files, instance roles; AWS_ENDPOINT_URL for S3-compatible stores), with retries of
    transient errors (throttling, 5xx, connection resets): botocore's standard mode, 8
    attempts, unless AWS_MAX_ATTEMPTS or AWS_RETRY_MODE say otherwise. Made by botocore,
    boto3's core: boto3's own layer (resources, transfer managers) is not used, and
    importing it costs every pull ~0.1 s of CPU and 3 MB."""
    import botocore.session
    from botocore.config import Config
    retries = None
    if not {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & os.environ.keys():
        retries = {"mode": "standard", "max_attempts": 8}
    return botocore.session.Session().create_client(
        "s3", config=Config(retries=retries, connect_timeout=min(10.0, TIMEOUT),
                            read_timeout=TIMEOUT))


def s3_error(error: Exception, where: str) -> DrootError:
    """One clear line for the S3 failures an operator can fix; a TransientError for those
    that may not happen again (the network, the server's 5xx, throttling)."""
    from botocore import exceptions
    if isinstance(error, exceptions.NoCredentialsError):
        return DrootError(f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role)")
    if isinstance(error, exceptions.EndpointConnectionError):
        return TransientError(f"{where}: cannot reach the S3 endpoint ({error})")
    if isinstance(error, (exceptions.HTTPClientError, exceptions.ConnectionError,
                          exceptions.IncompleteReadError, OSError)) or type(
                              error).__module__.startswith("urllib3"):
        return TransientError(f"{where}: {error}")
    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout"):
            return TransientError(f"{where}: S3 error {code or status}: {message}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return DrootError(f"{where}: no such object")
        if code == "NoSuchBucket":
            return DrootError(f"{where}: no such bucket")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return DrootError(f"{where}: access denied ({code}): check the credentials "
                              "and the bucket policy")
        return DrootError(f"{where}: S3 error {code}: {message}")
    if isinstance(error, exceptions.BotoCoreError):
        return DrootError(f"{where}: {error}")
    return DrootError(f"{where}: {type(error).__name__}: {error}")


def _code(error: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (None for other errors)."""
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")


def _is_s3_error(error: Exception) -> bool:
    return type(error).__module__.startswith(("botocore", "boto3", "urllib3"))


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends (then they are handled as usual)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class S3Upload:
    """A write-only stream into s3://BUCKET/KEY: multipart, parts uploaded by a background
    thread while the next one fills. Small archives go up in one PUT. Nothing is visible at
    KEY until commit(); abort() (on any failure, Ctrl-C or SIGTERM) aborts the multipart
    upload, so an interrupted push never leaves a truncated archive."""

    def __init__(self, location: Location, client=None):
        self.location = location
        self.client = client or s3_client()  # one client per process where it can: ~20 MB
        self._buffer = bytearray()
        self._upload_id = None
        self._parts: list[dict] = []
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._worker = None
        self._error: BaseException | None = None

    def write(self, data) -> int:
        if self._error:
            raise self._failure()
        self._buffer += data
        while len(self._buffer) >= PART_SIZE:
            # The full buffer becomes the part; only its overflow is copied.
            part, self._buffer = self._buffer, self._buffer[PART_SIZE:]
            del part[PART_SIZE:]
            self._send(part)
        return len(data)

    def _send(self, part: bytes):
        if self._upload_id is None:
            try:
                with signals_deferred():  # an upload id lost to Ctrl-C could not be aborted
                    self._upload_id = self.client.create_multipart_upload(
                        Bucket=self.location.bucket, Key=self.location.key,
                        ContentType="application/octet-stream")["UploadId"]
            except Exception as error:
                raise s3_error(error, self.location.text) from None
            self._worker = threading.Thread(target=self._upload_parts, daemon=True)
            self._worker.start()
        if len(self._parts) + self._queue.qsize() + 1 > MAX_PARTS:
            raise DrootError(f"{self.location.text}: archive too large for {MAX_PARTS} parts")
        while True:  # wait for room, but notice if the uploader has failed meanwhile
            if self._error:
                raise self._failure()
            try:
                self._queue.put(part, timeout=0.2)
                return
            except queue.Full:
                continue

    def _upload_parts(self):
        number = 0
        while True:
            part = self._queue.get()
            if part is None:
                return
            number += 1
            try:
                if self._error is None:
                    response = self.client.upload_part(
                        Bucket=self.location.bucket, Key=self.location.key,
                        UploadId=self._upload_id, PartNumber=number, Body=part)
                    self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
            except BaseException as error:  # noqa: BLE001 - handed to the writing thread
                self._error = error

    def _failure(self) -> DrootError:
        error = self._error
        return error if isinstance(error, DrootError) else s3_error(error, self.location.text)

    def _finish_worker(self):
        if self._worker:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def commit(self, digest: str, signature: bytes | None = None, pushed: int | None = None):
        with signals_deferred():  # the archive and its sidecar, or nothing
            self._commit(digest, signature, pushed)

    def _commit(self, digest: str, signature: bytes | None, pushed: int | None):
        location = self.location
        try:
            if self._upload_id is None:
                self.client.put_object(Bucket=location.bucket, Key=location.key,
                                       Body=bytes(self._buffer),
                                       ContentType="application/octet-stream")
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                self._finish_worker()
                if self._error:
                    raise self._failure()
                self.client.complete_multipart_upload(
                    Bucket=location.bucket, Key=location.key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts})
                self._upload_id = None
            self._buffer = bytearray()
            if signature is None:  # deleting a missing key is no error in S3
                try:
                    self.client.delete_object(Bucket=location.bucket,
                                              Key=location.key + SIGNATURE_SUFFIX)
                except Exception as error:
                    # A push role may not delete: an old signature left there fails
                    # against the new sidecar anyway, so that is no reason to fail a push.
                    if _code(error) != "AccessDenied":
                        raise
            else:
                self.client.put_object(Bucket=location.bucket,
                                       Key=location.key + SIGNATURE_SUFFIX, Body=signature,
                                       ContentType="text/plain")
            self.client.put_object(Bucket=location.bucket, Key=location.key + SIDECAR_SUFFIX,
                                   Body=checksum_line(digest, os.path.basename(location.key),
                                                      pushed),
                                   ContentType="text/plain")
        except DrootError:
            raise
        except Exception as error:
            if _is_s3_error(error):
                raise s3_error(error, location.text) from None
            raise

    def abort(self):
        """Drop whatever was uploaded; safe to call more than once."""
        self._error = self._error or DrootError("aborted")
        if self._worker:
            # The uploader skips what is queued once _error is set; wake it and wait.
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._finish_worker()
        if self._upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.location.bucket,
                                                   Key=self.location.key,
                                                   UploadId=self._upload_id)
            except Exception:
                pass  # best effort: a bucket lifecycle rule removes what is left
            self._upload_id = None


class S3Download:
    """Reads s3://BUCKET/KEY as ranged GETs of 8 MiB, a few in flight at once and consumed
    in order (as the aws CLI downloads): faster than one stream, memory bounded by the
    ranges in flight, and a range whose connection breaks is fetched again. Every range
    is pinned to the same object version (If-Match on its ETag). The threads start on the
    first read, after the extraction child has been forked."""

    RANGE = 8 << 20
    IN_FLIGHT = 2
    ATTEMPTS = 5

    def __init__(self, location: Location, client=None):
        self.location = location
        self.client = client or s3_client()
        try:
            head = self.client.head_object(Bucket=location.bucket, Key=location.key)
        except Exception as error:
            if _code(error) in ("404", "NotFound") and not self._bucket_exists():
                raise DrootError(f"{location.text}: no such bucket") from None
            raise s3_error(error, location.text) from None
        self.size = head["ContentLength"]
        self.etag = head.get("ETag")
        self.metadata_sha256 = (head.get("Metadata") or {}).get("sha256")
        self._pool = None
        self._pending = []
        self._next_offset = 0
        self._current = memoryview(b"")

    def _bucket_exists(self) -> bool:
        """A HEAD's 404 has no body to tell a missing key from a missing bucket."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except Exception as error:
            return _code(error) not in ("404", "NoSuchBucket", "NotFound")
        return True

    def _fetch(self, start: int) -> memoryview:
        end = min(start + self.RANGE, self.size) - 1
        for attempt in range(self.ATTEMPTS):
            try:
                body = self.client.get_object(Bucket=self.location.bucket,
                                              Key=self.location.key, IfMatch=self.etag,
                                              Range=f"bytes={start}-{end}")["Body"]
                # Into a buffer of the range's size: body.read() would hold the range
                # twice (its chunks, then their join), and pull's memory is bounded.
                data = memoryview(bytearray(end - start + 1))
                received = 0
                for chunk in body.iter_chunks(1 << 20):
                    if received + len(chunk) > len(data):
                        received += len(chunk)
                        break
                    data[received:received + len(chunk)] = chunk
                    received += len(chunk)
                else:
                    if received == len(data):
                        return data
                error = ConnectionError(f"got {received} of {len(data)} bytes")
            except Exception as failure:
                if not (_is_s3_error(failure) or isinstance(failure, OSError)):
                    raise
                error = failure
                if _code(failure) in ("PreconditionFailed", "412"):
                    raise TransientError(f"{self.location.text} changed during the "
                                         "download; pull again") from None
        raise TransientError(f"{self.location.text}: download failed at byte {start} of "
                             f"{self.size}: {error}")

    def _fill(self):
        from concurrent.futures import ThreadPoolExecutor
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.IN_FLIGHT, thread_name_prefix="droot-s3")
        while len(self._pending) < self.IN_FLIGHT and self._next_offset < self.size:
            self._pending.append(self._pool.submit(self._fetch, self._next_offset))
            self._next_offset += self.RANGE

    def read(self, n=-1) -> bytes:
        if not self._current:
            self._fill()
            if not self._pending:
                return b""
            try:
                self._current = self._pending.pop(0).result()
            except DrootError:
                raise
            except Exception as error:
                raise s3_error(error, self.location.text) from None
            self._fill()
        n = len(self._current) if n is None or n < 0 else n
        data = bytes(self._current[:n])
        # An empty slice would still hold the whole range (the rest of a pull, for a
        # delta manifest: 5 MB at 100,000 files).
        self._current = self._current[n:] if n < len(self._current) else memoryview(b"")
        return data

    def close(self):
        for future in self._pending:
            future.cancel()
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending, self._current = [], memoryview(b"")


def read_s3_small(client, location: Location, suffix: str, limit: int = 4096) -> bytes | None:
    """The start of the small object KEY+suffix (a sidecar, a signature), None if absent."""
    from botocore import exceptions
    key = location.key + suffix
    try:
        return client.get_object(Bucket=location.bucket, Key=key)["Body"].read(limit)
    except exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise s3_error(error, f"s3://{location.bucket}/{key}") from None
    except Exception as error:
        raise s3_error(error, f"s3://{location.bucket}/{key}") from None


# --- local paths ----------------------------------------------------------------------------

class PathUpload:
    """Writes DEST through droot.core.atomicfile, then its sidecar the same way: a reader
    never sees a half-written archive, and a pushed one survives a crash."""

    def __init__(self, location: Location):
        self.location = location
        self.path = os.path.abspath(location.path)
        directory = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise UsageError(f"{location.text} is a directory: give a file name, e.g. "
                             f"{location.text.rstrip('/')}/app.tar.gz")
        if not os.path.isdir(directory):
            raise DrootError(f"{location.text}: directory {directory} does not exist")
        self.directory = None
        try:
            self.directory = open_directory(directory)
            self.archive = AtomicFile(self.directory, os.path.basename(self.path),
                                      default_file_mode())
        except OSError as error:
            self._close_directory()
            raise DrootError(f"{location.text}: cannot write in {directory}: "
                             f"{error.strerror}") from None

    def write(self, data) -> int:
        try:
            return self.archive.file.write(data)
        except OSError as error:
            raise self._failure(error) from None

    def commit(self, digest: str, signature: bytes | None = None, pushed: int | None = None):
        try:
            self.archive.commit()
        except OSError as error:
            raise self._failure(error) from None
        name = os.path.basename(self.path)
        try:
            if signature is None:  # an older push's signature would not match
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name + SIGNATURE_SUFFIX, dir_fd=self.directory)
            else:
                with AtomicFile(self.directory, name + SIGNATURE_SUFFIX,
                                default_file_mode()) as out:
                    out.write(signature)
            with AtomicFile(self.directory, name + SIDECAR_SUFFIX, default_file_mode()) as out:
                out.write(checksum_line(digest, name, pushed))
        except OSError as error:
            raise DrootError(f"{self.location.text}: the archive was written, but not its "
                             f"checksum sidecar or signature: {error.strerror} (pulls "
                             "refuse the archive until a push succeeds)") from None
        finally:
            self._close_directory()

    def _failure(self, error: OSError) -> DrootError:
        return DrootError(f"{self.location.text}: cannot write the archive: {error.strerror}")

    def abort(self):
        if self.directory is not None:
            self.archive.abort()  # nothing left to remove once committed
            self._close_directory()

    def _close_directory(self):
        if self.directory is not None:
            os.close(self.directory)
            self.directory = None


class StdoutUpload:
    def __init__(self, location: Location):
        if sys.stdout.isatty():
            raise UsageError("refusing to write a binary archive to a terminal: "
                             "redirect stdout or give a destination")
        self.out = sys.stdout.buffer

    def write(self, data) -> int:
        return self.out.write(data)

    def commit(self, digest: str, signature: bytes | None = None, pushed: int | None = None):
        self.out.flush()
        print(f"droot: sha256 {digest}", file=sys.stderr)

    def abort(self):
        pass


def open_upload(location: Location):
    if location.kind == "s3":
        return S3Upload(location)
    if location.kind == "path":
        return PathUpload(location)
    if location.kind == "stdio":
        return StdoutUpload(location)
    raise UsageError(f"{location.text}: cannot push to http(s):// (use s3:// or a path; "
                     "a presigned URL is for pulling)")


# --- downloads ------------------------------------------------------------------------------

@dataclass
class Download:
    stream: object
    size: int | None
    sha256: str | None       # the expected checksum, if the store has one
    checksum_source: str     # where it came from, for messages
    pushed: int | None = None  # the push time the sidecar names (signatures cover it)


def _http_failure(url: str, error: OSError) -> DrootError:
    """One line for a failed http(s) request: a TransientError for the network and for
    the answers that say "later" (5xx, 408, 429); a DrootError for the others (404...)."""
    if isinstance(error, urllib.error.HTTPError):
        kind = TransientError if error.code >= 500 or error.code in (408, 429) else DrootError
        return kind(f"{redact(url)}: HTTP {error.code} {error.reason}")
    return TransientError(f"{redact(url)}: cannot download: "
                          f"{getattr(error, 'reason', None) or error}")


def _http_open(url: str):
    request = urllib.request.Request(url, headers={"User-Agent": "droot"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except OSError as error:  # HTTPError and URLError are OSErrors
        raise _http_failure(url, error) from None


class _HttpBody:
    """An http(s) archive as it arrives: a connection that breaks, times out or ends
    before its Content-Length is a TransientError (pull tries again), not a corrupt
    archive."""

    def __init__(self, response, url: str, size: int | None):
        self.response, self.url, self.size = response, url, size
        self.received = 0

    def read(self, n=-1) -> bytes:
        try:
            data = self.response.read(n)
        except (OSError, http.client.HTTPException) as error:
            self._cut_off(str(error) or type(error).__name__)
        self.received += len(data)
        if not data and self.size is not None and self.received < self.size:
            self._cut_off("the connection closed")
        return data

    def _cut_off(self, reason: str):
        of = f" of {self.size}" if self.size is not None else ""
        raise TransientError(f"{redact(self.url)}: download cut off after {self.received} "
                             f"bytes{of}: {reason}") from None

    def close(self):
        self.response.close()


def redact(url: str) -> str:
    """A URL without its query (a presigned URL's signature does not belong in logs)."""
    parsed = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parsed._replace(query="...")) if parsed.query else url


def _read_path_small(path: str, limit: int = 4096) -> bytes | None:
    try:
        with open(path, "rb") as small:
            return small.read(limit)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DrootError(f"{path}: {error.strerror}") from None


def _read_http_small(url: str, limit: int = 4096) -> bytes | None:
    """The start of a small file beside an http(s) archive; None if the server says it is
    not there (404, or 403 as S3 answers for a missing key without list permission)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.read(limit)
    except OSError as error:
        if isinstance(error, urllib.error.HTTPError) and error.code in (403, 404):
            return None
        raise _http_failure(url, error) from None


def beside(location: Location, suffix: str) -> str | None:
    """Where the file KEY+suffix beside the archive is, for messages and reading; None
    where there is none to look at (stdin; a URL with a query, whose signature covers
    its own path only)."""
    if location.kind in ("s3", "path"):
        return location.text + suffix
    if location.kind == "http" and not urllib.parse.urlsplit(location.text).query:
        return location.text + suffix
    return None


def read_beside(location: Location, suffix: str, client=None,
                limit: int = 4096) -> bytes | None:
    """The small file KEY+suffix beside the archive (sidecar, signature): one request, or
    None when it is absent."""
    if location.kind == "s3":
        return read_s3_small(client or s3_client(), location, suffix, limit)
    if location.kind == "path":
        return _read_path_small(location.path + suffix, limit)
    url = beside(location, suffix)
    return _read_http_small(url, limit) if url else None


def read_sidecar(location: Location, client=None) -> tuple[str, int | None] | None:
    """The SHA-256 and the push time the store's sidecar names (one small request), None
    without a sidecar."""
    data = read_beside(location, SIDECAR_SUFFIX, client)
    if data is None:
        return None
    text = data.decode(errors="replace")
    return parse_sidecar(text, beside(location, SIDECAR_SUFFIX)), pushed_time(text)


def read_checksum(location: Location, client=None) -> str | None:
    """The SHA-256 the store's sidecar names, None without one."""
    sidecar = read_sidecar(location, client)
    return sidecar[0] if sidecar else None


def _with_sidecar(stream, size: int | None, sidecar, source: str) -> Download:
    digest, pushed = sidecar or (None, None)
    return Download(stream, size, digest, source, pushed)


def open_download(location: Location) -> Download:
    if location.kind == "stdio":
        return Download(sys.stdin.buffer, None, None, "")
    if location.kind == "path":
        try:
            stream = open(location.path, "rb")
        except OSError as error:
            raise DrootError(f"{location.text}: {error.strerror}") from None
        return _with_sidecar(stream, os.fstat(stream.fileno()).st_size, read_sidecar(location),
                             location.path + SIDECAR_SUFFIX)
    if location.kind == "s3":
        # The archive first: a failure (no credentials, no such object) is about it.
        download = S3Download(location)
        if download.metadata_sha256:
            return Download(download, download.size, download.metadata_sha256.lower(),
                            f"{location.text} metadata")
        return _with_sidecar(download, download.size, read_sidecar(location, download.client),
                             f"{location.text}{SIDECAR_SUFFIX}")
    # http(s): the x-amz-meta-sha256 header, else URL.sha256 when the URL has no query
    # (a presigned URL's signature covers its path: its sidecar needs its own URL).
    response = _http_open(location.text)
    size = response.headers.get("Content-Length")
    digest = response.headers.get("x-amz-meta-sha256")
    size = int(size) if size else None
    body = _HttpBody(response, location.text, size)
    if not digest and beside(location, SIDECAR_SUFFIX):
        return _with_sidecar(body, size, read_sidecar(location), beside(location, SIDECAR_SUFFIX))
    return Download(body, size, digest.lower() if digest else None,
                    f"{redact(location.text)} x-amz-meta-sha256")
